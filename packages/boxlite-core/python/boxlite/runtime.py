"""The runtime and the low-level box API (``Boxlite``, ``Box``, ``Execution``, ``ExecResult``).

The code lives in the private package ``_runtime/``, one concern a module: ``runtime.py``
(``Boxlite``: the home and its boxes, the stop at interpreter exit), ``box.py`` (``Box``),
``files.py`` (its file operations and ``FileInfo``), ``execution.py`` (``Execution``),
``streams.py`` (``ExecStdin``, ``ExecOutputStream``), ``result.py`` (``ExecResult``) and
``info.py`` (``BoxInfo``, ``BoxMetrics``, ``RuntimeMetrics``). This module re-exports their
names, the import path callers have always used; the constants are read where they are
defined: patch them there.
"""

from __future__ import annotations

import logging

from ._runtime.box import DEFAULT_TTY_SIZE as DEFAULT_TTY_SIZE
from ._runtime.box import Box as Box
from ._runtime.execution import Execution as Execution
from ._runtime.files import FileInfo as FileInfo
from ._runtime.info import BoxInfo as BoxInfo
from ._runtime.info import BoxMetrics as BoxMetrics
from ._runtime.info import RuntimeMetrics as RuntimeMetrics
from ._runtime.progress import StartProgress as StartProgress
from ._runtime.result import ExecResult as ExecResult
from ._runtime.runtime import EXIT_STOP_TIMEOUT as EXIT_STOP_TIMEOUT
from ._runtime.runtime import GUEST_DIR as GUEST_DIR
from ._runtime.runtime import Boxlite as Boxlite
from ._runtime.runtime import _live_runtimes as _live_runtimes
from ._runtime.runtime import _stop_boxes_at_exit as _stop_boxes_at_exit
from ._runtime.streams import DEFAULT_LINE_LIMIT as DEFAULT_LINE_LIMIT
from ._runtime.streams import DEFAULT_READ_LIMIT as DEFAULT_READ_LIMIT
from ._runtime.streams import ExecOutputStream as ExecOutputStream
from ._runtime.streams import ExecStdin as ExecStdin

logger = logging.getLogger("boxlite")
