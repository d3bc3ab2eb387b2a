"""BoxLite tools for CrewAI: run model-written code in a local VM.

``BoxLitePythonTool()`` runs Python; :func:`boxlite_tools` gives Python, shell and file tools
that share one box across a crew (or lease boxes from a pool).
"""

from __future__ import annotations

from .tools import (
    BoxLiteBaseTool,
    BoxLiteListFilesTool,
    BoxLitePythonTool,
    BoxLiteReadFileTool,
    BoxLiteSandboxFailure,
    BoxLiteShellTool,
    BoxLiteWriteFileTool,
    boxlite_tools,
    default_images_dir,
)

__all__ = [
    "BoxLiteBaseTool",
    "BoxLiteListFilesTool",
    "BoxLitePythonTool",
    "BoxLiteReadFileTool",
    "BoxLiteSandboxFailure",
    "BoxLiteShellTool",
    "BoxLiteWriteFileTool",
    "boxlite_tools",
    "default_images_dir",
]
