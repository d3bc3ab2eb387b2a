"""The tool core every framework adapter is built on.

:class:`BoxSandbox` runs Python, shell commands and file operations in one box, with a warm
interpreter (see ``_interpreter.py``), per-call timeouts that kill every process the call
started, capped output and image collection. :class:`ToolSandbox` is what a set of tools
shares: one box started on first use, or a :class:`~boxlite.pool.BoxPool` lease per call.

The code lives in private modules, one concern each: ``_session.py`` (the warm interpreter
session: the framed request/answer exchange with the server in the box, its limits and
restarts), ``_sandbox.py`` (:class:`BoxSandbox` and :class:`ToolSandbox`: one box, a given box,
or a pool lease per call) and ``_tool_pool.py`` (:func:`create_tool_pool`). This module
re-exports their names, the import path adapters, tests and users have always used.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from . import _sandbox, _session, _tool_pool
from ._sandbox import BoxSandbox as BoxSandbox
from ._sandbox import ToolSandbox as ToolSandbox
from ._sandbox import resolve_image as resolve_image
from ._session import DEFAULT_OUTPUT_DIR as DEFAULT_OUTPUT_DIR
from ._session import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._session import INTERPRETER_START_TIMEOUT as INTERPRETER_START_TIMEOUT
from ._session import MAX_HEADER_BYTES as MAX_HEADER_BYTES
from ._session import MAX_IMAGE_BYTES as MAX_IMAGE_BYTES
from ._session import MAX_IMAGES as MAX_IMAGES
from ._session import MAX_TOTAL_IMAGE_BYTES as MAX_TOTAL_IMAGE_BYTES
from ._session import PING_TIMEOUT as PING_TIMEOUT
from ._session import SESSION_ROOT as SESSION_ROOT
from ._session import ToolSandboxError as ToolSandboxError
from ._session import interpreter_source as interpreter_source
from ._tool_pool import create_tool_pool as create_tool_pool

_PARTS = (_session, _sandbox, _tool_pool)


class _ReexportingModule(types.ModuleType):
    """This module, made to set (or delete) a name also in every private module that holds it:
    the code reads its settings there, so ``monkeypatch.setattr(boxlite.tools.sandbox,
    "PING_TIMEOUT", 3.0)`` keeps working as when everything lived in this file."""

    def __setattr__(self, name: str, value: Any) -> None:
        for part in _PARTS:
            if name in vars(part):
                setattr(part, name, value)
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        for part in _PARTS:
            if name in vars(part):
                delattr(part, name)
        super().__delattr__(name)


sys.modules[__name__].__class__ = _ReexportingModule
