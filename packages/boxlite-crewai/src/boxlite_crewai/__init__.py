"""BoxLite tools for CrewAI: run model-written code in a local VM.

``BoxLitePythonTool()`` runs Python; :func:`boxlite_tools` gives Python, shell and file tools
that share one box across a crew (or lease boxes from a pool). :func:`browser_tools` drives a
web browser in a VM and ``BoxLiteComputerTool`` a desktop (model providers' computer-use actions).
"""

from __future__ import annotations

from .browser import BoxLiteActionTool, BoxLiteBrowserTool, BoxLiteComputerTool, browser_tools
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
    "BoxLiteActionTool",
    "BoxLiteBaseTool",
    "BoxLiteBrowserTool",
    "BoxLiteComputerTool",
    "BoxLiteListFilesTool",
    "BoxLitePythonTool",
    "BoxLiteReadFileTool",
    "BoxLiteSandboxFailure",
    "BoxLiteShellTool",
    "BoxLiteWriteFileTool",
    "boxlite_tools",
    "browser_tools",
    "default_images_dir",
]
