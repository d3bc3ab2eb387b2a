"""The low-level API under the module path upstream BoxLite uses (``boxlite.boxlite``)."""

from __future__ import annotations

from .options import BoxOptions, Options, SecurityOptions
from .runtime import (
    Box,
    BoxInfo,
    Boxlite,
    BoxMetrics,
    ExecOutputStream,
    ExecResult,
    ExecStdin,
    Execution,
    RuntimeMetrics,
)

__all__ = [
    "Box",
    "BoxInfo",
    "BoxMetrics",
    "BoxOptions",
    "Boxlite",
    "ExecOutputStream",
    "ExecResult",
    "ExecStdin",
    "Execution",
    "Options",
    "RuntimeMetrics",
    "SecurityOptions",
]
