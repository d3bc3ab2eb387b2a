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
from .images import GcReport, ImageInfo, ImageRegistry, Images, PullProgress
from .options import BoxOptions, Options
from .runtime import Box, BoxInfo, Boxlite, ExecResult, Execution
from .simplebox import SimpleBox

__version__ = "0.1.0"

__all__ = [
    "Box",
    "BoxDiedError",
    "BoxInfo",
    "BoxNotFoundError",
    "BoxOptions",
    "BoxStartError",
    "BoxStoppedError",
    "Boxlite",
    "BoxliteError",
    "ExecResult",
    "Execution",
    "GcReport",
    "ImageError",
    "ImageInfo",
    "ImageRegistry",
    "Images",
    "InvalidImageError",
    "InvalidOptionError",
    "Options",
    "PullProgress",
    "QemuNotFoundError",
    "SimpleBox",
    "errors",
]
