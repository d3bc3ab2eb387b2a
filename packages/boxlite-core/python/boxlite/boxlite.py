"""The low-level API under the module path upstream BoxLite uses (``boxlite.boxlite``)."""

from __future__ import annotations

from .options import BoxOptions, Options
from .runtime import Box, BoxInfo, Boxlite, ExecResult, Execution

__all__ = ["Box", "BoxInfo", "BoxOptions", "Boxlite", "ExecResult", "Execution", "Options"]
