"""BoxLite tools for LangChain: run model-written code in a local VM.

``BoxLitePythonTool()`` runs Python; ``BoxLiteToolkit`` gives Python, shell and file tools that
share one box (or lease boxes from a pool).
"""

from __future__ import annotations

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
    "BoxLiteBaseTool",
    "BoxLiteListFilesTool",
    "BoxLitePythonTool",
    "BoxLiteReadFileTool",
    "BoxLiteShellTool",
    "BoxLiteToolkit",
    "BoxLiteWriteFileTool",
    "to_content",
]
