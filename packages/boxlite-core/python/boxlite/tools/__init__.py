"""The tool core the agent-framework adapters share (LangChain, CrewAI, LlamaIndex).

Run Python (fresh per call or a persistent session), shell commands and file operations in a
box, with per-call timeouts that kill every process a call started, output capped with an
explicit truncation marker, images the code writes collected as PNG bytes, and one text format
for results. The tools' arguments (``schemas.py``: the input schemas a model sees, and the one
check of a call's timeout), the guard that turns a sandbox failure into a framework's error
(``guard.py``) and the base every adapter's tool mixes in (``adapter.py``: the constructor
keywords, close) are here too: adapters only translate between this and their framework.

The browser tool set (``browser.py``: navigate, click, type, read the page's text, screenshot on
a ``BrowserBox`` through Playwright over CDP) and the computer-use tool (``computer.py``: the
actions of model providers' computer tools on a ``ComputerBox``) are cores of the same kind:
one session per tool set, holding one box, returning :class:`ActionResult` (text and images).
``create_browser_pool`` and ``create_computer_pool`` (``_box_tool_pool.py``) keep such boxes
ready for their ``pool=``, so an agent's first call does not wait for a cold start.
"""

from __future__ import annotations

from . import descriptions
from ._box_tool_pool import create_browser_pool, create_computer_pool
from .adapter import ActionBoundTool, SandboxBoundTool
from .browser import BrowserEndpoint, BrowserToolSession
from .computer import ComputerToolSession, Desktop
from .guard import guard_sandbox
from .result import (
    DEFAULT_MAX_OUTPUT_CHARS,
    ActionResult,
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
from .schemas import (
    BROWSER_TOOLS,
    COMPUTER_TOOL,
    ActionTool,
    BrowserClickInput,
    BrowserNavigateInput,
    BrowserReadTextInput,
    BrowserScreenshotInput,
    BrowserTypeInput,
    ComputerInput,
    ListFilesInput,
    PythonInput,
    ReadFileInput,
    ShellInput,
    WriteFileInput,
    call_timeout,
)

__all__ = [
    "BROWSER_TOOLS",
    "COMPUTER_TOOL",
    "DEFAULT_MAX_OUTPUT_CHARS",
    "DEFAULT_OUTPUT_DIR",
    "DEFAULT_TIMEOUT",
    "ActionBoundTool",
    "ActionResult",
    "ActionTool",
    "BoxSandbox",
    "BrowserClickInput",
    "BrowserEndpoint",
    "BrowserNavigateInput",
    "BrowserReadTextInput",
    "BrowserScreenshotInput",
    "BrowserToolSession",
    "BrowserTypeInput",
    "ComputerInput",
    "ComputerToolSession",
    "Desktop",
    "FileEntry",
    "ImageOutput",
    "ListFilesInput",
    "PythonInput",
    "ReadFileInput",
    "SandboxBoundTool",
    "ShellInput",
    "ToolResult",
    "ToolSandbox",
    "ToolSandboxError",
    "WriteFileInput",
    "call_timeout",
    "create_browser_pool",
    "create_computer_pool",
    "create_tool_pool",
    "descriptions",
    "format_listing",
    "guard_sandbox",
    "resolve_image",
    "truncate_output",
]
