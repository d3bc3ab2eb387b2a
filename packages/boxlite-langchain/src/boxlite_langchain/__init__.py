"""BoxLite tools for LangChain: run model-written code in a local VM.

``BoxLitePythonTool()`` runs Python; ``BoxLiteToolkit`` gives Python, shell and file tools that
share one box (or lease boxes from a pool). ``BoxLiteBrowserToolkit`` drives a web browser in a
VM (navigate, click, type, read text, screenshot) and ``BoxLiteComputerTool`` a desktop (the
computer-use actions of model providers' computer tools), screenshots as image content blocks.
"""

from __future__ import annotations

from .browser import BoxLiteActionTool, BoxLiteBrowserTool, BoxLiteBrowserToolkit, BoxLiteComputerTool
from .tools import (
    BoxLiteBaseTool,
    BoxLiteListFilesTool,
    BoxLitePythonTool,
    BoxLiteReadFileTool,
    BoxLiteShellTool,
    BoxLiteToolkit,
    BoxLiteWriteFileTool,
    to_content,
)

__all__ = [
    "BoxLiteActionTool",
    "BoxLiteBaseTool",
    "BoxLiteBrowserTool",
    "BoxLiteBrowserToolkit",
    "BoxLiteComputerTool",
    "BoxLiteListFilesTool",
    "BoxLitePythonTool",
    "BoxLiteReadFileTool",
    "BoxLiteShellTool",
    "BoxLiteToolkit",
    "BoxLiteWriteFileTool",
    "to_content",
]
