"""The tool core the agent-framework adapters share (LangChain, CrewAI, LlamaIndex).

Run Python (fresh per call or a persistent session), shell commands and file operations in a
box, with per-call timeouts that kill every process a call started, output capped with an
explicit truncation marker, images the code writes collected as PNG bytes, and one text format
for results. Adapters only translate between this and their framework.
"""

from __future__ import annotations

from . import descriptions
from .result import (
    DEFAULT_MAX_OUTPUT_CHARS,
    FileEntry,
    ImageOutput,
    ToolResult,
    format_listing,
    truncate_output,
)
from .sandbox import (
    DEFAULT_OUTPUT_DIR,
    DEFAULT_TIMEOUT,
    BoxSandbox,
    ToolSandbox,
    ToolSandboxError,
    create_tool_pool,
    resolve_image,
)

__all__ = [
    "DEFAULT_MAX_OUTPUT_CHARS",
    "DEFAULT_OUTPUT_DIR",
    "DEFAULT_TIMEOUT",
    "BoxSandbox",
    "FileEntry",
    "ImageOutput",
    "ToolResult",
    "ToolSandbox",
    "ToolSandboxError",
    "create_tool_pool",
    "descriptions",
    "format_listing",
    "resolve_image",
    "truncate_output",
]
