"""The computer-use tool's core: one action on a :class:`~boxlite.ComputerBox` (an X desktop
driven with xdotool) per call, in the shape model providers' computer tools use.

The arguments are those of Anthropic's ``computer`` tool (:class:`~boxlite.tools.ComputerInput`:
``action`` in screenshot, left_click, right_click, middle_click, double_click, triple_click,
mouse_move, left_click_drag, type, key, scroll, cursor_position, with ``coordinate``,
``start_coordinate``, ``text``, ``scroll_direction``, ``scroll_amount``), and so are the
results: a screenshot comes back as a PNG image (for actions that change the screen, one taken
after them), ``cursor_position`` as ``X=…,Y=…`` text.

:class:`ComputerToolSession` holds one box for its whole life (see ``_held_box.py``), so the
windows an agent opened are still there on its next call. An action the model got wrong (a
missing argument, a coordinate off the screen, a key name xdotool does not know) is an
:class:`~boxlite.tools.ActionResult` with ``error=True`` saying why; a failure of the box itself
raises a :class:`~boxlite.errors.BoxliteError`, which the adapters turn into their framework's error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from .._blocking import blocking
from .._loop import run_in_library_loop
from ..errors import BoxDiedError, BoxStartError, BoxStoppedError, ChannelError, PoolError
from ..pool import BoxPool
from ..runtime import Boxlite
from ._held_box import _HeldBox
from ._session import ToolSandboxError
from .browser import png_size
from .result import ActionResult, ImageOutput
from .schemas import ComputerActionName, ComputerInput, call_timeout

logger = logging.getLogger("boxlite.tools")

#: Seconds an action (and the screenshot after it) may take when the call gives no timeout.
DEFAULT_COMPUTER_TIMEOUT = 60.0
#: Seconds the session waits for the desktop of a box it starts to be ready.
DESKTOP_READY_TIMEOUT = 300.0
#: Seconds between an action and the screenshot after it, for the screen to settle.
SETTLE_DELAY = 0.5

#: Failures of the box itself, raised (the adapters make them their framework's error), not shown as text.
_BOX_FAILURES: tuple[type[BaseException], ...] = (
    BoxStoppedError,
    BoxDiedError,
    BoxStartError,
    ChannelError,
    PoolError,
    ToolSandboxError,
)

_CLICKS = ("left_click", "right_click", "middle_click", "double_click", "triple_click")
#: Actions that change the screen, so a screenshot follows them.
_CHANGES_SCREEN = frozenset({*_CLICKS, "mouse_move", "left_click_drag", "type", "key", "scroll"})


@runtime_checkable
class Desktop(Protocol):
    """What the computer-use tool needs of a box (:class:`boxlite.ComputerBox`'s methods)."""

    async def screenshot(self) -> Any: ...
    async def mouse_move(self, x: int, y: int) -> Any: ...
    async def left_click(self) -> Any: ...
    async def right_click(self) -> Any: ...
    async def middle_click(self) -> Any: ...
    async def double_click(self) -> Any: ...
    async def triple_click(self) -> Any: ...
    async def left_click_drag(self, start_x: int, start_y: int, end_x: int, end_y: int) -> Any: ...
    async def cursor_position(self) -> tuple[int, int]: ...
    async def type(self, text: str) -> Any: ...
    async def key(self, text: str) -> Any: ...
    async def scroll(self, x: int, y: int, direction: str, amount: int = 3) -> Any: ...
    async def get_screen_size(self) -> tuple[int, int]: ...


class _ModelError(Exception):
    """A call the model got wrong: shown to it as an error result."""


def _screenshot_image(shot: Any, number: int) -> tuple[ImageOutput, int, int]:
    """The PNG of a screenshot: ComputerBox's (PNG bytes that also read as the dict
    ``{"data": base64, "width", "height", "format"}``), or just that dict."""
    try:
        data = bytes(shot) if isinstance(shot, bytes) else base64.b64decode(shot["data"], validate=True)
        width, height = png_size(data)
    except (KeyError, TypeError, ValueError, binascii.Error) as e:
        raise ToolSandboxError(f"the desktop's screenshot is not a base64 PNG ({e})") from None
    return ImageOutput(path=f"screenshot-{number}.png", data=data), width, height


class ComputerToolSession:
    """The desktop a computer-use tool drives.

    Args:
        box: A started :class:`~boxlite.ComputerBox` (or anything with its methods, see
            :class:`Desktop`); its owner stops it. Without ``box`` and ``pool``, the session
            starts a ``ComputerBox(**box_options, runtime=runtime)`` on its first call, waits
            until its desktop is ready, and stops it on :meth:`close`.
        pool: A :class:`~boxlite.pool.BoxPool` whose ``prepare`` returns, for each of its boxes,
            the desktop to drive (the lease's ``resource``): the session leases one on its first
            call and holds it until :meth:`close`.
        runtime: The runtime of the box the session starts.
        screenshot_after_action: Return a screenshot after every action that changes the screen
            (as model providers' reference tools do); ``False`` returns text only.
        default_timeout: Seconds an action may take when the call gives none.
        box_options: Keyword arguments of the ``ComputerBox`` the session starts (``cpu``,
            ``memory``, ``image``, …).
    """

    def __init__(
        self,
        box: Desktop | None = None,
        *,
        pool: BoxPool | None = None,
        runtime: Boxlite | None = None,
        screenshot_after_action: bool = True,
        default_timeout: float = DEFAULT_COMPUTER_TIMEOUT,
        **box_options: Any,
    ) -> None:
        try:
            call_timeout(default_timeout, 0.0)
        except ValueError:
            raise ValueError(f"default_timeout={default_timeout} must be a positive number of seconds") from None
        if box is not None and box_options:
            raise ValueError(
                f"pass either box= (a started ComputerBox) or options for one the tool starts "
                f"({', '.join(sorted(box_options))}), not both"
            )

        def create() -> AbstractAsyncContextManager[Desktop]:
            from ..computerbox import ComputerBox

            return ComputerBox(runtime=runtime, **box_options)

        self._held: _HeldBox[Desktop] = _HeldBox(
            kind="ComputerBox", box=box, pool=pool, create=create, accepts=lambda obj: isinstance(obj, Desktop)
        )
        self.screenshot_after_action = screenshot_after_action
        self.default_timeout = default_timeout
        self._screen_size: tuple[int, int] | None = None
        self._shots = 0
        self._lock: asyncio.Lock | None = None

    @property
    def box_started(self) -> bool:
        """Whether the session has its box yet (it starts or leases one on its first action)."""
        return self._held.started

    @property
    def box(self) -> Desktop | None:
        """The ComputerBox the session drives (given, started, or leased from its pool), once it has
        one; ``None`` before its first action, and after :meth:`close` unless it was given."""
        return self._held.box

    async def screen_size(self) -> tuple[int, int]:
        """The desktop's ``(width, height)`` in pixels (starting the box if needed)."""
        return await run_in_library_loop(self._screen_size_here())

    async def _screen_size_here(self) -> tuple[int, int]:
        if self._screen_size is None:
            desktop = await self._desktop()
            width, height = await desktop.get_screen_size()
            self._screen_size = (int(width), int(height))
        return self._screen_size

    async def _desktop(self) -> Desktop:
        return await self._held.get(started=_wait_until_ready)

    async def act(
        self,
        action: ComputerActionName | str,
        coordinate: list[int] | tuple[int, int] | None = None,
        text: str | None = None,
        scroll_direction: str | None = None,
        scroll_amount: int | None = None,
        start_coordinate: list[int] | tuple[int, int] | None = None,
        timeout: float | None = None,
    ) -> ActionResult:
        """Performs one computer-use action (see the module docs); never raises for a call the
        model got wrong, only for a failure of the box."""
        try:
            seconds = call_timeout(timeout, self.default_timeout)
            call = ComputerInput.model_validate(
                {
                    "action": action,
                    "coordinate": coordinate,
                    "text": text,
                    "scroll_direction": scroll_direction,
                    "scroll_amount": scroll_amount,
                    "start_coordinate": start_coordinate,
                }
            )
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'input'}: {err['msg']}" for err in e.errors())
            return ActionResult(text=f"error: {problems}", error=True)
        except ValueError as e:
            return ActionResult(text=f"error: {e}", error=True)
        return await run_in_library_loop(self._act_here(call, seconds))

    async def _act_here(self, call: ComputerInput, seconds: float) -> ActionResult:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                self._check_arguments(call)  # before the box starts: a wrong call costs no box
                desktop = await self._desktop()  # a box's start is not the action's time
                return await asyncio.wait_for(self._perform(desktop, call), seconds)
            except TimeoutError:
                return ActionResult(text=f"error: the {call.action} action took longer than {seconds:g} s", error=True)
            except _ModelError as e:
                return ActionResult(text=f"error: {e}", error=True)
            except _BOX_FAILURES:
                raise
            except Exception as e:  # a helper's command failed (e.g. an unknown key name)
                return ActionResult(text=f"error: the {call.action} action failed: {e}", error=True)

    async def _perform(self, desktop: Desktop, call: ComputerInput) -> ActionResult:
        action = call.action
        if action == "screenshot":
            return await self._screenshot(desktop, None)
        if action == "cursor_position":
            x, y = await desktop.cursor_position()
            return ActionResult(text=f"X={x},Y={y}")
        done = await self._do(desktop, call)
        if action in _CHANGES_SCREEN and self.screenshot_after_action:
            await asyncio.sleep(SETTLE_DELAY)
            return await self._screenshot(desktop, done)
        return ActionResult(text=done)

    def _check_arguments(self, call: ComputerInput) -> None:
        """The argument rules of the computer tool's actions (what each needs, what it takes)."""
        action = call.action
        needs = {
            "mouse_move": {"coordinate"},
            "left_click_drag": {"coordinate"},
            "type": {"text"},
            "key": {"text"},
            "scroll": {"scroll_direction"},
        }.get(action, set())
        takes = {
            "mouse_move": {"coordinate"},
            "left_click_drag": {"coordinate", "start_coordinate"},
            "type": {"text"},
            "key": {"text"},
            "scroll": {"coordinate", "scroll_direction", "scroll_amount"},
            **{click: {"coordinate"} for click in _CLICKS},
        }.get(action, set())
        given = {name for name in ComputerInput.model_fields if name != "action" and getattr(call, name) is not None}
        missing = sorted(needs - given)
        if missing:
            raise _ModelError(f"the {action} action needs {' and '.join(missing)}")
        extra = sorted(given - takes)
        if extra:
            raise _ModelError(f"the {action} action takes no {' or '.join(extra)}")
        if call.text is not None and not call.text:
            raise _ModelError(f"the {action} action needs a non-empty text")

    async def _point(self, coordinate: list[int] | None) -> tuple[int, int] | None:
        if coordinate is None:
            return None
        width, height = await self._screen_size_here()
        x, y = coordinate
        if not (0 <= x < width and 0 <= y < height):
            raise _ModelError(f"coordinate [{x}, {y}] is off the screen, which is {width}x{height} pixels")
        return x, y

    async def _do(self, desktop: Desktop, call: ComputerInput) -> str:
        """Performs an action that changes the screen; returns what was done."""
        action = call.action
        point = await self._point(call.coordinate)
        where = f" at ({point[0]}, {point[1]})" if point is not None else ""
        if action in _CLICKS:
            if point is not None:
                await desktop.mouse_move(*point)
            clicks: dict[str, Callable[[], Awaitable[Any]]] = {
                "left_click": desktop.left_click,
                "right_click": desktop.right_click,
                "middle_click": desktop.middle_click,
                "double_click": desktop.double_click,
                "triple_click": desktop.triple_click,
            }
            await clicks[action]()
            return f"{action.replace('_', ' ')}{where}"
        if action == "mouse_move":
            assert point is not None
            await desktop.mouse_move(*point)
            return f"moved the mouse to ({point[0]}, {point[1]})"
        if action == "left_click_drag":
            assert point is not None
            start = await self._point(call.start_coordinate) or tuple(await desktop.cursor_position())
            await desktop.left_click_drag(start[0], start[1], point[0], point[1])
            return f"dragged from ({start[0]}, {start[1]}) to ({point[0]}, {point[1]})"
        if action == "type":
            assert call.text is not None
            await desktop.type(call.text)
            return f"typed {len(call.text)} characters"
        if action == "key":
            assert call.text is not None
            await desktop.key(call.text)
            return f"pressed {call.text}"
        if action == "scroll":
            assert call.scroll_direction is not None
            x, y = point if point is not None else tuple(await desktop.cursor_position())
            amount = call.scroll_amount or 3
            await desktop.scroll(x, y, call.scroll_direction, amount)
            return f"scrolled {call.scroll_direction} by {amount} at ({x}, {y})"
        raise _ModelError(f"unknown action {action!r}")  # pragma: no cover - the schema admits no other

    async def _screenshot(self, desktop: Desktop, done: str | None) -> ActionResult:
        """A screenshot, after what was ``done`` (if anything)."""
        self._shots += 1
        image, width, height = _screenshot_image(await desktop.screenshot(), self._shots)
        self._screen_size = (width, height)
        shot = f"screenshot: {width}x{height} PNG"
        return ActionResult(text=f"{done}\n{shot}" if done else shot, images=(image,))

    # -- life -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Ends the session's box (see :class:`ComputerToolSession`)."""
        await self._held.close()

    async def __aenter__(self) -> ComputerToolSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    act_sync = blocking(act)
    screen_size_sync = blocking(screen_size)
    close_sync = blocking(close)


async def _wait_until_ready(desktop: Desktop) -> None:
    """Waits for the desktop of a box the session started (the box is stopped if it never is)."""
    wait = getattr(desktop, "wait_until_ready", None)
    if wait is None:
        return
    try:
        await wait(timeout=DESKTOP_READY_TIMEOUT)
    except TimeoutError as e:
        raise ToolSandboxError(f"the desktop did not become ready within {DESKTOP_READY_TIMEOUT:g} s: {e}") from e


__all__ = ["DEFAULT_COMPUTER_TIMEOUT", "DESKTOP_READY_TIMEOUT", "ComputerToolSession", "Desktop"]
