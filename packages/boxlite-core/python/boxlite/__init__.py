"""BoxLite: local sandboxes for AI agents. Every box is a real VM with its own kernel."""

from __future__ import annotations

from . import contract, errors, pool, sync_api
from ._runtime.files import FileInfo

# BrowserBox (issue 11)
from .browserbox import BrowserBox, BrowserBoxOptions, BrowserStartError
from .codebox import CodeBox
from .computerbox import ComputerBox, Screenshot
from .contract import TIMEOUT_EXIT_CODE
from .errors import (
    BoxDiedError,
    BoxliteConflictError,
    BoxliteError,
    BoxNotFoundError,
    BoxStartError,
    BoxStoppedError,
    ImageError,
    InvalidImageError,
    InvalidOptionError,
    PackageInstallError,
    PasstNotFoundError,
    PoolClosedError,
    PoolExhaustedError,
    QemuNotFoundError,
    SnapshotError,
    SnapshotNotFoundError,
)
from .images import GcReport, ImageInfo, ImageRegistry, Images, PullProgress
from .interactivebox import InteractiveBox
from .options import BoxOptions, NetworkSpec, Options, SecurityOptions
from .pool import BoxPool, Lease, PoolStats
from .runtime import Box, BoxInfo, Boxlite, BoxMetrics, ExecResult, Execution, RuntimeMetrics, StartProgress
from .simplebox import SimpleBox
from .snapshots import SnapshotInfo, Snapshots
from .sync_api import (
    SyncBox,
    SyncBoxlite,
    SyncBrowserBox,
    SyncCodeBox,
    SyncComputerBox,
    SyncExecution,
    SyncInteractiveBox,
    SyncSimpleBox,
    run_sync,
)

__version__ = "0.1.0"

__all__ = [
    "TIMEOUT_EXIT_CODE",
    "Box",
    "BoxDiedError",
    "BoxInfo",
    "BoxMetrics",
    "BoxNotFoundError",
    "BoxOptions",
    "BoxPool",
    "BoxStartError",
    "BoxStoppedError",
    "Boxlite",
    "BoxliteConflictError",
    "BoxliteError",
    "BrowserBox",
    "BrowserBoxOptions",
    "BrowserStartError",
    "CodeBox",
    "ComputerBox",
    "ExecResult",
    "Execution",
    "FileInfo",
    "GcReport",
    "ImageError",
    "ImageInfo",
    "ImageRegistry",
    "Images",
    "InteractiveBox",
    "InvalidImageError",
    "InvalidOptionError",
    "Lease",
    "NetworkSpec",
    "Options",
    "PackageInstallError",
    "PasstNotFoundError",
    "PoolClosedError",
    "PoolExhaustedError",
    "PoolStats",
    "PullProgress",
    "QemuNotFoundError",
    "RuntimeMetrics",
    "Screenshot",
    "SecurityOptions",
    "SimpleBox",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotNotFoundError",
    "Snapshots",
    "StartProgress",
    "SyncBox",
    "SyncBoxlite",
    "SyncBrowserBox",
    "SyncCodeBox",
    "SyncComputerBox",
    "SyncExecution",
    "SyncInteractiveBox",
    "SyncSimpleBox",
    "contract",
    "errors",
    "pool",
    "run_sync",
    "sync_api",
]
