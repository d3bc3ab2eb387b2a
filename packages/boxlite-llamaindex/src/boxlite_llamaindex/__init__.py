"""BoxLite tools for LlamaIndex: run model-written code in a local VM.

``BoxLiteToolSpec().to_tool_list()`` gives Python, shell and file tools, sync and async, that
share one box (or lease boxes from a pool). ``BoxLiteBrowserToolSpec`` drives a web browser in a
VM and ``BoxLiteComputerToolSpec`` a desktop (model providers' computer-use actions), screenshots
as image blocks.
"""

from __future__ import annotations

from .browser import BoxLiteBrowserToolSpec, BoxLiteComputerToolSpec
from .tool_spec import BoxLiteToolSpec, to_blocks

__all__ = ["BoxLiteBrowserToolSpec", "BoxLiteComputerToolSpec", "BoxLiteToolSpec", "to_blocks"]
