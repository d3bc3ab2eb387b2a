"""BoxLite: local sandboxes for AI agents. Every box is a real VM with its own kernel."""

from __future__ import annotations

from . import errors
from .errors import (
    BoxDiedError,
    BoxliteError,
    BoxNotFoundError,
    BoxStartError,
    BoxStoppedError,
    ImageError,
    InvalidImageError,
    InvalidOptionError,
    QemuNotFoundError,
)
from .options import BoxOptions, Options, SecurityOptions
from .runtime import Box, BoxInfo, Boxlite, BoxMetrics, ExecResult, Execution, RuntimeMetrics
from .simplebox import SimpleBox

__version__ = "0.1.0"

__all__ = [
    "Box",
    "BoxDiedError",
    "BoxInfo",
    "BoxMetrics",
    "BoxNotFoundError",
    "BoxOptions",
    "BoxStartError",
    "BoxStoppedError",
    "Boxlite",
    "BoxliteError",
    "ExecResult",
    "Execution",
    "ImageError",
    "InvalidImageError",
    "InvalidOptionError",
    "Options",
    "QemuNotFoundError",
    "RuntimeMetrics",
    "SecurityOptions",
    "SimpleBox",
    "errors",
]
