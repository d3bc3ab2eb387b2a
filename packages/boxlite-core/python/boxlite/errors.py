"""The BoxLite exception hierarchy.

The engine raises these classes by name, looked up once per process (see
``crates/bindings/src/lib.rs``); every message names the problem and, where there is one, the fix.
"""

from __future__ import annotations


class BoxliteError(Exception):
    """Base class of every BoxLite error."""


class QemuNotFoundError(BoxliteError):
    """QEMU is not installed; the message carries the install command, for this host's
    distribution too (read from ``/etc/os-release``)."""

    def __init__(self, message: str = "QEMU is not installed") -> None:
        from ._install import install_hint

        super().__init__(f"{message}. On this host: {install_hint('qemu')}")


class AcceleratorError(BoxliteError):
    """The requested accelerator cannot run guests on this host."""


class GuestAssetsError(BoxliteError):
    """The guest kernel or initramfs is missing from the installation."""


class ImageError(BoxliteError):
    """An image could not be resolved, read or prepared."""


class InvalidImageError(ImageError):
    """The given path is not an OCI image layout."""


class InvalidOptionError(BoxliteError, ValueError):
    """An option is malformed or out of range."""


class BoxliteConflictError(InvalidOptionError):
    """A name or a box is already taken: a box with that name exists, or another process owns
    the box. A subclass of :class:`InvalidOptionError`, which these cases raised before."""


class PasstNotFoundError(InvalidOptionError):
    """passt, which gives a box its network, is not installed (or ``BOXLITE_PASST`` names no
    file); the message carries the install command for this host's distribution (read from
    ``/etc/os-release``) and the other ways out: ``BOXLITE_PASST``, or a box without a network.
    A subclass of :class:`InvalidOptionError`, which this case raised before."""

    def __init__(self, message: str = "networking needs passt, which is not installed") -> None:
        from ._install import install_hint

        super().__init__(f"{message}. On this host: {install_hint('passt')}")


class BoxNotFoundError(BoxliteError, LookupError):
    """No box has the given id or name."""


class BoxStoppedError(BoxliteError):
    """The box is not running (stopped, paused, removed, or not started yet)."""


class BoxStartError(BoxliteError):
    """The box's VM did not boot; the message carries the VMM and console logs."""


class BoxDiedError(BoxliteError):
    """The box's VM ended unexpectedly."""


class ChannelError(BoxliteError):
    """The channel to the guest agent failed."""


class DiskError(BoxliteError):
    """A disk image could not be created or prepared."""


class SnapshotError(BoxliteError):
    """A snapshot could not be taken (e.g. a box with volumes), or must not be restored: taken
    with another guest kernel, agent or QEMU, its state file damaged, or still in use."""


class SnapshotNotFoundError(BoxliteError, LookupError):
    """No snapshot has the given name or id (see ``runtime.snapshots.list()``)."""


class PackageInstallError(BoxliteError):
    """Installing a package in a box failed (``CodeBox.install_package``); the message has pip's output."""


class PoolError(BoxliteError):
    """Base class of the errors of :class:`boxlite.pool.BoxPool`."""


class PoolExhaustedError(PoolError):
    """Every box of the pool is leased and none came free in time (or the strategy is ``fail``)."""


class PoolClosedError(PoolError):
    """The pool was closed: it hands out no more boxes."""


class CopyError(BoxliteError):
    """``copy_in`` / ``copy_out`` failed (a missing path, a file where a directory is needed)."""


class BoxFileError(BoxliteError, OSError):
    """A file operation in a box (``read_file``, ``write_file``, ``list_dir``, ``stat``)
    failed; the subclasses below are also the matching built-in :class:`OSError` subclass, so
    ``except FileNotFoundError`` works as it does for local files."""


class BoxFileNotFoundError(BoxFileError, FileNotFoundError):
    """No such file or directory in the box."""


class BoxIsADirectoryError(BoxFileError, IsADirectoryError):
    """A file operation met a directory in the box."""


class BoxNotADirectoryError(BoxFileError, NotADirectoryError):
    """A directory operation met something else in the box (or a path goes through a file)."""


class BoxPermissionError(BoxFileError, PermissionError):
    """The image's user may not do this in the box."""


class BoxFileExistsError(BoxFileError, FileExistsError):
    """``write_file(..., exclusive=True)`` met an existing file."""


class BoxFileTooLargeError(BoxFileError):
    """The file is larger than the read's ``max_bytes`` (or the directory has more entries
    than a listing returns); nothing of it was returned."""


class StdinClosedError(BoxliteError):
    """Input was sent to an execution whose stdin is closed or which has ended."""


class HangupError(BoxliteError):
    """The terminal an interactive session was attached to hung up (``SIGHUP``: its window was
    closed, its SSH connection dropped): the session ended and the processes it ran were
    killed; the box is stopped by its owner as on any other error."""


class OutputLimitError(BoxliteError, ValueError):
    """A read of an execution's output stream would hold more than its ``limit`` (the box
    decides how much it writes, so every read is bounded); the message names the limit."""


class ExecError(BoxliteError):
    """A command a box type runs for one of its methods (ComputerBox's ``xdotool``, ``scrot``)
    failed; ``command`` names the method, ``exit_code`` and ``stderr`` are the command's."""

    def __init__(self, command: str, exit_code: int, stderr: str) -> None:
        self.command = command
        self.exit_code = exit_code
        self.stderr = stderr
        detail = stderr.strip() or "(no output on stderr)"
        super().__init__(f"{command} failed with exit code {exit_code}: {detail}")


__all__ = [
    "AcceleratorError",
    "BoxDiedError",
    "BoxFileError",
    "BoxFileExistsError",
    "BoxFileNotFoundError",
    "BoxFileTooLargeError",
    "BoxIsADirectoryError",
    "BoxNotADirectoryError",
    "BoxNotFoundError",
    "BoxPermissionError",
    "BoxStartError",
    "BoxStoppedError",
    "BoxliteConflictError",
    "BoxliteError",
    "ChannelError",
    "CopyError",
    "DiskError",
    "ExecError",
    "GuestAssetsError",
    "HangupError",
    "ImageError",
    "InvalidImageError",
    "InvalidOptionError",
    "OutputLimitError",
    "PackageInstallError",
    "PasstNotFoundError",
    "PoolClosedError",
    "PoolError",
    "PoolExhaustedError",
    "QemuNotFoundError",
    "StdinClosedError",
]
