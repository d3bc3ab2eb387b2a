"""``ComputerBox``: a box with a Linux desktop, driven with the mouse, the keyboard and screenshots.

    async with boxlite.ComputerBox() as desktop:
        await desktop.wait_until_ready()
        await desktop.mouse_move(100, 100)
        await desktop.left_click()
        await desktop.type("Hello World!")
        shot = await desktop.screenshot()   # shot["data"] is a base64 PNG; bytes(shot) the PNG

The image defaults to upstream BoxLite's, :data:`DEFAULT_IMAGE` (linuxserver's webtop with
XFCE); ``image=`` or ``BOXLITE_COMPUTER_IMAGE`` picks another. The engine does not run an
image's entrypoint, so the box starts the desktop itself, in a command that keeps running:

- an image with ``/usr/local/bin/boxlite-desktop`` (the start script of the test image
  ``desktop`` in ``tests/images/recipes/desktop.py``, and the convention for images made for
  ComputerBox) runs that script, as root; it starts the X server, the window manager and the
  web desktop on ports 3000/3001 as its own user;
- otherwise an image with ``/init`` (linuxserver's s6-overlay images, webtop among them) runs
  ``/init`` as PID 1 of a PID namespace of its own, as its container entrypoint would.

Every method runs a command in the box (``xdotool``, ``scrot``) on display ``:1``; a command
that fails raises :class:`~boxlite.errors.ExecError` with its exit code and stderr.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct
import time
from collections.abc import Mapping
from typing import Any, Literal, SupportsIndex, overload

from typing_extensions import Unpack

from ._ports import claim_port, release_ports, reserve_port
from .errors import BoxStartError, ExecError, InvalidOptionError
from .runtime import Box, Boxlite, ExecResult, Execution
from .simplebox import BoxArgs, SimpleBox

logger = logging.getLogger(__name__)

#: Upstream BoxLite's desktop image: the one users get when neither ``image=`` nor
#: ``BOXLITE_COMPUTER_IMAGE`` says otherwise.
DEFAULT_IMAGE = "lscr.io/linuxserver/webtop:ubuntu-xfce"
#: The X display the desktop runs on (webtop's; the test image uses the same).
DISPLAY = ":1"
#: The screen size the desktop is started at.
SCREEN_WIDTH, SCREEN_HEIGHT = 1024, 768
#: The ports in the box of the web desktop (HTTP, HTTPS), forwarded to ``gui_http_port`` and
#: ``gui_https_port`` on the host's 127.0.0.1.
GUEST_HTTP_PORT, GUEST_HTTPS_PORT = 3000, 3001
#: The host ports of the web desktop when the caller names none and they are free (upstream's);
#: when one is taken (another desktop, another program), a free port is chosen instead.
DEFAULT_GUI_HTTP_PORT, DEFAULT_GUI_HTTPS_PORT = 3000, 3001
#: How often :meth:`ComputerBox.wait_until_ready` looks again.
READY_POLL_SECONDS = 0.5
#: The start script of an image made for ComputerBox.
START_SCRIPT = "/usr/local/bin/boxlite-desktop"
#: Exit code of the start command when the image has no way to start a desktop.
EXIT_NO_DESKTOP = 3
#: How many moves a drag is made of.
DRAG_STEPS = 10
#: How much of the desktop command's output is kept (the rest is read and dropped).
DESKTOP_OUTPUT_BYTES = 64 * 1024

_START_DESKTOP = f"""
if [ -x {START_SCRIPT} ]; then exec {START_SCRIPT}; fi
if [ -x /init ]; then exec unshare --pid --fork --mount-proc /init; fi
echo "the image has neither {START_SCRIPT} nor /init, so ComputerBox cannot start its desktop:" \
     "use an image made for ComputerBox (see boxlite.computerbox)" >&2
exit {EXIT_NO_DESKTOP}
"""

# Ready: the display answers, a window manager has claimed it and shows a window (a panel).
_READY_CHECK = """
xdpyinfo >/dev/null 2>&1 || { echo "the X server on $DISPLAY does not answer yet"; exit 1; }
xprop -root _NET_SUPPORTING_WM_CHECK 2>/dev/null | grep -q 'window id' \
    || { echo "no window manager has started yet"; exit 1; }
xdotool search --onlyvisible --name . >/dev/null 2>&1 || { echo "nothing is on the screen yet"; exit 1; }
"""

# A screenshot of the whole screen as a base64 PNG on stdout: scrot, else Pillow (webtop's
# python3), else ImageMagick's import.
_SCREENSHOT = """
set -e
f=$(mktemp /tmp/boxlite-screenshot.XXXXXX)
trap 'rm -f "$f" "$f.png"' EXIT
if command -v scrot >/dev/null 2>&1; then
    scrot --overwrite --silent "$f.png"
elif python3 -c 'import PIL.ImageGrab' >/dev/null 2>&1; then
    python3 -c 'import sys; from PIL import ImageGrab; ImageGrab.grab().save(sys.argv[1], "PNG")' "$f.png"
elif command -v import >/dev/null 2>&1; then
    import -window root "$f.png"
else
    echo "no screenshot tool in the image: install scrot (or python3-pil, or imagemagick)" >&2
    exit 127
fi
base64 -w0 "$f.png"
"""

_SCROLL_BUTTONS = {"up": "4", "down": "5", "left": "6", "right": "7"}

ScreenshotKey = Literal["data", "width", "height", "format"]


def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's signature and IHDR chunk; ``ValueError`` if it is no PNG."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError(f"not a PNG image (starts with {png[:16]!r})")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


class Screenshot(bytes):
    """A screenshot: the PNG file's bytes, also readable as upstream BoxLite's dict.

    ``shot["data"]`` is the PNG in base64, ``shot["width"]`` and ``shot["height"]`` its size
    in pixels (read from the PNG), ``shot["format"]`` is ``"png"``; ``dict(shot)`` is that
    dict, and ``shot.keys()``, ``shot.get()`` and ``"data" in shot`` work as on it. As bytes it
    is the PNG itself: ``open("screen.png", "wb").write(shot)``. Iterating it gives bytes, as
    for any ``bytes``: iterate ``shot.keys()`` for the dict's keys.
    """

    width: int
    height: int

    def __new__(cls, png: bytes) -> Screenshot:
        width, height = png_size(png)
        shot = super().__new__(cls, png)
        shot.width, shot.height = width, height
        return shot

    @property
    def format(self) -> str:
        return "png"

    @property
    def data(self) -> str:
        """The PNG in base64 (``shot["data"]``)."""
        return base64.b64encode(self).decode("ascii")

    @property
    def png(self) -> bytes:
        """The PNG file's bytes as plain ``bytes``."""
        return bytes(self)

    @overload
    def __getitem__(self, key: SupportsIndex) -> int: ...
    @overload
    def __getitem__(self, key: slice) -> bytes: ...
    @overload
    def __getitem__(self, key: Literal["data", "format"]) -> str: ...
    @overload
    def __getitem__(self, key: Literal["width", "height"]) -> int: ...
    def __getitem__(self, key: SupportsIndex | slice | str) -> int | bytes | str:
        if isinstance(key, str):
            if key not in ("data", "width", "height", "format"):
                raise KeyError(key)
            value: int | str = getattr(self, key)
            return value
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            return key in ("data", "width", "height", "format")
        return super().__contains__(key)  # type: ignore[operator]  # bytes: int or bytes-like

    def keys(self) -> tuple[ScreenshotKey, ...]:
        return ("data", "width", "height", "format")

    def values(self) -> tuple[str | int, ...]:
        return tuple(self[key] for key in self.keys())

    def items(self) -> tuple[tuple[ScreenshotKey, str | int], ...]:
        return tuple((key, self[key]) for key in self.keys())

    def get(self, key: str, default: object = None) -> object:
        return getattr(self, key) if key in self.keys() else default

    def to_dict(self) -> dict[str, str | int]:
        """Upstream's dict: ``{"data": base64 PNG, "width", "height", "format": "png"}``."""
        return dict(self.items())

    def __repr__(self) -> str:
        return f"Screenshot({self.width}x{self.height} png, {len(self)} bytes)"


class ComputerBoxArgs(BoxArgs, total=False):
    """The keyword arguments :class:`ComputerBox` passes on to :class:`~boxlite.SimpleBox`
    (its own ``cpu``, ``memory`` and ``runtime`` are parameters; see :class:`~boxlite.simplebox.BoxArgs`).
    At run time every keyword of :class:`~boxlite.simplebox.SimpleBoxArgs` is accepted."""


def default_image() -> str:
    """``BOXLITE_COMPUTER_IMAGE`` (a reference or an OCI layout path), else :data:`DEFAULT_IMAGE`."""
    return os.environ.get("BOXLITE_COMPUTER_IMAGE") or DEFAULT_IMAGE


def desktop_env() -> list[tuple[str, str]]:
    """The environment a ComputerBox's box is created with: the display and its size, for the
    desktop's start script and for every desktop method's command."""
    return [
        ("DISPLAY", DISPLAY),
        ("DISPLAY_SIZEW", str(SCREEN_WIDTH)),
        ("DISPLAY_SIZEH", str(SCREEN_HEIGHT)),
        ("SELKIES_MANUAL_WIDTH", str(SCREEN_WIDTH)),
        ("SELKIES_MANUAL_HEIGHT", str(SCREEN_HEIGHT)),
        ("SELKIES_UI_SHOW_SIDEBAR", "false"),
        ("BOXLITE_SCREEN_WIDTH", str(SCREEN_WIDTH)),
        ("BOXLITE_SCREEN_HEIGHT", str(SCREEN_HEIGHT)),
    ]


def _coordinate(name: str, value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidOptionError(f"{name} must be a pixel coordinate, an int >= 0, got {value!r}")
    return str(value)


def _env_pairs(env: Mapping[str, str] | list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if env is None:
        return []
    return list(env.items()) if isinstance(env, Mapping) else list(env)


def _retrieve(done: asyncio.Future[ExecResult]) -> None:
    """Marks the desktop command's outcome seen (it is reported by ``wait_until_ready``), so
    that an end when the box stops is not logged as an unretrieved exception."""
    if not done.cancelled():
        done.exception()


class ComputerBox(SimpleBox):
    """A box running a desktop: mouse, keyboard and screenshots, and the live desktop in a
    browser at ``http://127.0.0.1:{gui_http_port}``.

    ``cpu`` and ``memory`` (MiB) size the VM; ``gui_http_port`` and ``gui_https_port`` are the
    host ports (on 127.0.0.1) of the web desktop. Left unset, they are upstream's 3000 and 3001
    when those are free and free ports chosen at start when not, so several desktops run at
    once without sharing a port; the attributes say which were chosen. A port named explicitly
    is used as is, and one already in use is an :class:`~boxlite.errors.InvalidOptionError` at
    start (passt would otherwise start the box without that forward). Every other keyword argument is
    :class:`~boxlite.SimpleBox`'s (``image``, ``volumes``, ``env``, ``ports``, ``name``, ...);
    ``env`` and ``ports`` add to the desktop's own. See the module's documentation for the
    images it can start.
    """

    def __init__(
        self,
        cpu: int = 2,
        memory: int = 2048,
        gui_http_port: int | None = None,
        gui_https_port: int | None = None,
        runtime: Boxlite | None = None,
        *,
        image: str | None = None,
        **kw: Unpack[ComputerBoxArgs],
    ) -> None:
        for option, value in (("gui_http_port", gui_http_port), ("gui_https_port", gui_https_port)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536):
                raise InvalidOptionError(f"ComputerBox({option}={value!r}): a TCP port 1-65535, or None for a free one")
        if gui_http_port is not None and gui_http_port == gui_https_port:
            raise InvalidOptionError(f"ComputerBox: gui_http_port and gui_https_port are both {gui_http_port}")
        if image is None and kw.get("rootfs_path") is None:
            image = default_image()
        # cpus= and memory_mib= (SimpleBox's names) win over cpu= and memory=, as in SimpleBox.
        cpus, memory_mib = kw.pop("cpus", None), kw.pop("memory_mib", None)
        env = [*desktop_env(), *_env_pairs(kw.pop("env", None))]
        options: dict[str, Any] = dict(kw)
        # The web desktop's forwards are added when the box starts, on the ports chosen then.
        super().__init__(
            image,
            cpus=cpu if cpus is None else cpus,
            memory_mib=memory if memory_mib is None else memory_mib,
            runtime=runtime,
            env=env,
            **options,
        )
        self._requested_ports = (gui_http_port, gui_https_port)
        self._user_ports = list(self._options.ports)
        #: The host port (127.0.0.1) of the web desktop over HTTP: the one in use once the box has
        #: started; before, the one asked for (or :data:`DEFAULT_GUI_HTTP_PORT`, taken if free).
        self.gui_http_port = DEFAULT_GUI_HTTP_PORT if gui_http_port is None else gui_http_port
        #: As :attr:`gui_http_port`, for HTTPS.
        self.gui_https_port = DEFAULT_GUI_HTTPS_PORT if gui_https_port is None else gui_https_port
        self._held_ports: tuple[int, ...] = ()
        self._desktop: Execution | None = None
        self._desktop_result: asyncio.Future[ExecResult] | None = None

    @classmethod
    def adopt(cls, box: Box, *, gui_http_port: int, gui_https_port: int) -> ComputerBox:
        """A ComputerBox on ``box``, a box that is already running (e.g. one a
        :class:`~boxlite.pool.BoxPool` booted), without booting another VM: :meth:`start` then
        starts the desktop in it, and :meth:`wait_until_ready` waits for it.

        ``box`` must have been created with a ComputerBox's options (its image and
        :func:`desktop_env`: ``ComputerBox(...).options`` is such a template) plus forwards of the
        host ports ``gui_http_port`` and ``gui_https_port`` to guest ports 3000 and 3001, which
        this object then reports. :meth:`shutdown` stops ``box``; a pool stops its own boxes
        (see :func:`boxlite.tools.create_computer_pool`, which does all of this)."""
        image = box.info().image or None
        desktop = cls(gui_http_port=gui_http_port, gui_https_port=gui_https_port, runtime=box._runtime, image=image)
        desktop._box = box
        return desktop

    def _choose_ports(self) -> None:
        """The web desktop's host ports for this start: those asked for (an error if taken),
        else upstream's 3000/3001 when free, else free ones; added to the box's forwards."""
        chosen: list[int] = []
        try:
            for requested, default, option in (
                (self._requested_ports[0], DEFAULT_GUI_HTTP_PORT, "gui_http_port"),
                (self._requested_ports[1], DEFAULT_GUI_HTTPS_PORT, "gui_https_port"),
            ):
                if requested is not None:
                    chosen.append(claim_port(requested, owner="ComputerBox", option=option))
                else:
                    chosen.append(reserve_port(default))
        except BaseException:
            release_ports(chosen)
            raise
        self.gui_http_port, self.gui_https_port = chosen
        self._held_ports = tuple(chosen)
        forwards = [(self.gui_http_port, GUEST_HTTP_PORT, "tcp"), (self.gui_https_port, GUEST_HTTPS_PORT, "tcp")]
        self._options = self._options.model_copy(update={"ports": [*forwards, *self._user_ports]})

    @property
    def gui_url(self) -> str:
        """Where a person's browser shows the live desktop."""
        return f"http://127.0.0.1:{self.gui_http_port}/"

    @property
    def desktop_running(self) -> bool:
        """Whether the desktop's start command is running (started and not ended)."""
        result = self._desktop_result
        return result is not None and not result.done()

    async def start(self) -> ComputerBox:
        """Boots the box and starts its desktop (no-op when already started); see
        :meth:`wait_until_ready` for when the desktop can be used."""
        if self._box is None:
            self._choose_ports()
            try:
                await super().start()
            except BaseException:
                self._release_ports()
                raise
        if self._desktop is None:
            started = time.monotonic()
            self._desktop = await self.box.exec("sh", ["-c", _START_DESKTOP], max_output_bytes=DESKTOP_OUTPUT_BYTES)
            # Waiting drains its output (so it never blocks on a full pipe) and tells if it ended.
            self._desktop_result = asyncio.ensure_future(self._desktop.wait())
            self._desktop_result.add_done_callback(_retrieve)
            logger.debug("box %s: desktop start command launched in %.2f s", self.id, time.monotonic() - started)
        return self

    async def shutdown(self) -> None:
        """Stops the box (and the desktop in it)."""
        try:
            await super().shutdown()
        finally:
            if self._desktop_result is not None and not self._desktop_result.done():
                self._desktop_result.cancel()
            self._desktop, self._desktop_result = None, None
            self._release_ports()

    def _release_ports(self) -> None:
        release_ports(self._held_ports)
        self._held_ports = ()

    async def __aenter__(self) -> ComputerBox:
        return await self.start()

    def _check_desktop_alive(self) -> None:
        result = self._desktop_result
        if result is None or not result.done() or result.cancelled():
            return
        error = result.exception()
        if error is not None:
            raise BoxStartError(f"the desktop of box {self.id} could not be started: {error}") from error
        ended = result.result()
        raise BoxStartError(
            f"the desktop of box {self.id} ended (exit code {ended.exit_code}): "
            f"{(ended.stderr or ended.stdout).strip() or '(no output)'}"
        )

    async def wait_until_ready(self, timeout: float = 60) -> None:
        """Waits until the desktop can be used: its X server answers and a window manager runs
        and shows a window (its panel). The web desktop at :attr:`gui_url` may follow a few
        seconds later under emulation (the test image starts it once the window manager runs,
        so as not to slow it down). Raises :class:`TimeoutError` after ``timeout`` seconds (saying
        what was still missing) and :class:`~boxlite.errors.BoxStartError` if the desktop's
        start command ended."""
        await self.start()
        started = time.monotonic()
        waiting_for = "the first check"
        while True:
            self._check_desktop_alive()
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                raise TimeoutError(
                    f"the desktop of box {self.id} was not ready after {timeout} s: {waiting_for}"
                    f" (the test image logs to /tmp/boxlite-desktop/ in the box)"
                )
            check = await self.exec("sh", "-c", _READY_CHECK, timeout=max(left, 1.0))
            if check.exit_code == 0:
                logger.info("box %s: desktop ready after %.1f s", self.id, time.monotonic() - started)
                return
            waiting_for = (check.stdout or check.stderr).strip() or f"check exit code {check.exit_code}"
            logger.debug("box %s: desktop not ready: %s", self.id, waiting_for)
            await asyncio.sleep(READY_POLL_SECONDS)

    async def _run(self, action: str, *argv: str) -> ExecResult:
        result = await self.exec(*argv)
        if result.exit_code != 0:
            stderr = result.stderr
            if result.exit_code == 127 and not stderr.strip():
                stderr = f"{argv[0]} is not in the image"
            raise ExecError(action, result.exit_code, stderr)
        return result

    async def screenshot(self) -> Screenshot:
        """The whole screen as a PNG: a :class:`Screenshot`, upstream's dict
        ``{"data": base64 PNG, "width", "height", "format": "png"}`` that is also the PNG's bytes."""
        result = await self._run("screenshot()", "sh", "-c", _SCREENSHOT)
        try:
            return Screenshot(base64.b64decode(result.stdout.strip(), validate=True))
        except ValueError as e:
            raise ExecError("screenshot()", 0, f"the screenshot command gave no PNG: {e}") from None

    async def mouse_move(self, x: int, y: int) -> None:
        """Moves the pointer to ``(x, y)``, in pixels from the screen's top left corner."""
        await self._run(f"mouse_move({x}, {y})", "xdotool", "mousemove", _coordinate("x", x), _coordinate("y", y))

    async def left_click(self) -> None:
        """Clicks the left button where the pointer is."""
        await self._run("left_click()", "xdotool", "click", "1")

    async def right_click(self) -> None:
        """Clicks the right button where the pointer is."""
        await self._run("right_click()", "xdotool", "click", "3")

    async def middle_click(self) -> None:
        """Clicks the middle button where the pointer is."""
        await self._run("middle_click()", "xdotool", "click", "2")

    async def double_click(self) -> None:
        """Double-clicks the left button where the pointer is."""
        await self._run("double_click()", "xdotool", "click", "--repeat", "2", "--delay", "100", "1")

    async def triple_click(self) -> None:
        """Triple-clicks the left button where the pointer is."""
        await self._run("triple_click()", "xdotool", "click", "--repeat", "3", "--delay", "100", "1")

    async def left_click_drag(self, start_x: int, start_y: int, end_x: int, end_y: int) -> None:
        """Presses the left button at ``(start_x, start_y)``, moves to ``(end_x, end_y)`` and
        releases it there. The pointer moves in :data:`DRAG_STEPS` steps, as a hand does: a
        window manager or a drag-and-drop target that waits for motion past a threshold (icewm
        moving a window does) does not see a single jump."""
        start = (_coordinate("start_x", start_x), _coordinate("start_y", start_y))
        end = (_coordinate("end_x", end_x), _coordinate("end_y", end_y))
        argv = ["xdotool", "mousemove", *start, "mousedown", "1", "sleep", "0.2"]
        for step in range(1, DRAG_STEPS + 1):
            x = start_x + (end_x - start_x) * step // DRAG_STEPS
            y = start_y + (end_y - start_y) * step // DRAG_STEPS
            argv += ["mousemove", str(x), str(y), "sleep", "0.05"]
        argv += ["mousemove", *end, "sleep", "0.2", "mouseup", "1"]
        await self._run(f"left_click_drag({start_x}, {start_y}, {end_x}, {end_y})", *argv)

    async def cursor_position(self) -> tuple[int, int]:
        """Where the pointer is: ``(x, y)``."""
        result = await self._run("cursor_position()", "xdotool", "getmouselocation", "--shell")
        fields = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        try:
            return int(fields["X"]), int(fields["Y"])
        except (KeyError, ValueError):
            raise ExecError("cursor_position()", 0, f"unexpected xdotool output: {result.stdout!r}") from None

    async def type(self, text: str) -> None:
        """Types ``text`` on the keyboard into the focused window (``\\n`` presses Return)."""
        if not isinstance(text, str):
            raise InvalidOptionError(f"type() takes a str, got {type(text).__name__}")
        await self._run("type()", "xdotool", "type", "--", text)

    async def key(self, text: str) -> None:
        """Presses a key or a key combination by xdotool's names: ``"Return"``, ``"ctrl+s"``,
        ``"alt+F4"``; several separated by spaces are pressed one after the other. An unknown
        name raises :class:`~boxlite.errors.ExecError` with xdotool's message."""
        keys = text.split() if isinstance(text, str) else []
        if not keys:
            raise InvalidOptionError(f"key() needs a key name such as 'Return' or 'ctrl+s', got {text!r}")
        result = await self._run(f"key({text!r})", "xdotool", "key", "--", *keys)
        if "No such key name" in result.stderr:  # xdotool skips an unknown name and exits 0
            raise ExecError(f"key({text!r})", result.exit_code, result.stderr)

    async def scroll(self, x: int, y: int, direction: str, amount: int = 3) -> None:
        """Moves the pointer to ``(x, y)`` and scrolls ``amount`` steps ``direction``
        (``"up"``, ``"down"``, ``"left"`` or ``"right"``)."""
        button = _SCROLL_BUTTONS.get(direction.lower()) if isinstance(direction, str) else None
        if button is None:
            raise InvalidOptionError(f"scroll direction must be one of up, down, left, right; got {direction!r}")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise InvalidOptionError(f"scroll amount must be an int >= 1, got {amount!r}")
        await self._run(
            f"scroll({x}, {y}, {direction!r}, {amount})",
            "xdotool",
            "mousemove",
            _coordinate("x", x),
            _coordinate("y", y),
            "click",
            "--repeat",
            str(amount),
            button,
        )

    async def get_screen_size(self) -> tuple[int, int]:
        """The screen's size in pixels: ``(width, height)``."""
        result = await self._run("get_screen_size()", "xdotool", "getdisplaygeometry")
        parts = result.stdout.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ExecError("get_screen_size()", 0, f"unexpected xdotool output: {result.stdout!r}")
        return int(parts[0]), int(parts[1])


__all__ = [
    "DEFAULT_GUI_HTTPS_PORT",
    "DEFAULT_GUI_HTTP_PORT",
    "DEFAULT_IMAGE",
    "ComputerBox",
    "ComputerBoxArgs",
    "Screenshot",
    "default_image",
    "desktop_env",
    "png_size",
]
