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
