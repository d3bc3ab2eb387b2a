"""BoxLite tools for LlamaIndex: run model-written code in a local VM.

``BoxLiteToolSpec().to_tool_list()`` gives Python, shell and file tools, sync and async, that
share one box (or lease boxes from a pool).
"""

from __future__ import annotations

from .tool_spec import BoxLiteToolSpec, to_blocks

__all__ = ["BoxLiteToolSpec", "to_blocks"]
