"""What a tool call returns, and the one text format every framework adapter shows the model."""

from __future__ import annotations

import base64
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

#: Characters of stdout (and, separately, of stderr) a tool result keeps by default.
DEFAULT_MAX_OUTPUT_CHARS = 10_000


def truncate_output(text: str, max_chars: int, *, total_chars: int | None = None) -> tuple[str, int]:
    """Caps ``text`` at about ``max_chars`` characters, keeping its head and its tail.

    Returns the capped text and how many characters were dropped. ``total_chars`` is the
    length of the full output when ``text`` is already only part of it (the rest never left
    the box). The dropped middle is replaced by an explicit marker, so the model knows output
    is missing and how much.
    """
    total = max(total_chars or 0, len(text))
    if total <= max_chars:
        return text, 0
    head_len = max_chars * 2 // 3
    tail_len = max_chars - head_len
    head = text[:head_len]
    tail = text[len(text) - tail_len :] if tail_len and len(text) > head_len else ""
    dropped = total - len(head) - len(tail)
    marker = f"\n[... {dropped} characters truncated (output limit {max_chars} characters) ...]\n"
    return head + marker + tail, dropped


@dataclass(frozen=True)
class ImageOutput:
    """An image the code wrote (a matplotlib figure or a PNG file in the output folder)."""

    #: Where the image is in the box.
    path: str
    data: bytes = field(repr=False)
    mime_type: str = "image/png"

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    def base64(self) -> str:
        """The image as base64 text (what image content blocks carry)."""
        return base64.b64encode(self.data).decode("ascii")


@dataclass(frozen=True)
class ToolResult:
    """The outcome of running code or a command in a box, as every adapter reports it.

    ``stdout`` and ``stderr`` are already capped (see :func:`truncate_output`); ``*_truncated``
    say how many characters were dropped.
    """

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    #: The timeout (seconds) the call ran under.
    timeout: float | None = None
    images: tuple[ImageOutput, ...] = ()
    stdout_truncated: int = 0
    stderr_truncated: int = 0
    #: Something the model should know besides the output (e.g. the session was restarted).
    note: str | None = None

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def to_text(self) -> str:
        """The result as the model sees it: the same layout for every framework."""
        lines: list[str] = []
        if self.timed_out:
            lines.append(
                f"timed out: true (the call ran longer than {self.timeout:g} s; every process it started was killed)"
                if self.timeout is not None
                else "timed out: true (every process it started was killed)"
            )
        lines.append(f"exit code: {self.exit_code}")
        lines.append("stdout:" + (f"\n{self.stdout.rstrip(chr(10))}" if self.stdout else " (empty)"))
        lines.append("stderr:" + (f"\n{self.stderr.rstrip(chr(10))}" if self.stderr else " (empty)"))
        if self.images:
            described = ", ".join(f"{img.path} ({len(img.data)} bytes)" for img in self.images)
            lines.append(f"images: {len(self.images)} ({described})")
        if self.note:
            lines.append(f"note: {self.note}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def save_images(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Writes the images into ``directory`` (created if missing); returns their paths.

        Names are made unique (a random prefix), so results never overwrite each other.
        """
        return _save_images(self.images, directory)


def _save_images(images: tuple[ImageOutput, ...], directory: str | os.PathLike[str]) -> list[Path]:
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    saved = []
    for image in images:
        path = target / f"{uuid.uuid4().hex[:8]}-{image.name}"
        path.write_bytes(image.data)
        saved.append(path)
    return saved


@dataclass(frozen=True)
class FileEntry:
    """One entry of a directory listing."""

    name: str
    #: ``file``, ``directory``, ``symlink`` or ``other``.
    kind: str
    size: int

    def to_text(self) -> str:
        suffix = "/" if self.kind == "directory" else ("@" if self.kind == "symlink" else "")
        return f"{self.name}{suffix}" + (f"  ({self.size} bytes)" if self.kind == "file" else "")


def format_listing(path: str, entries: list[FileEntry]) -> str:
    """A directory listing as the model sees it."""
    if not entries:
        return f"{path}: empty directory"
    return f"{path}:\n" + "\n".join(entry.to_text() for entry in entries)


@dataclass(frozen=True)
class ActionResult:
    """What a browser or computer-use action returns: text for the model and the screenshots
    it took (PNG). ``error`` is set when the action failed; the text then says why (the model
    reads it and can try again: a failed action is an answer, not an exception)."""

    text: str
    images: tuple[ImageOutput, ...] = ()
    error: bool = False

    @property
    def success(self) -> bool:
        return not self.error

    def to_text(self) -> str:
        """The result as the model sees it (the images go beside it as image blocks)."""
        if not self.images:
            return self.text
        described = ", ".join(f"{img.name} ({len(img.data)} bytes)" for img in self.images)
        return f"{self.text}\nimages: {len(self.images)} ({described})"

    def __str__(self) -> str:
        return self.to_text()

    def save_images(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Writes the images into ``directory`` (see :meth:`ToolResult.save_images`)."""
        return _save_images(self.images, directory)
