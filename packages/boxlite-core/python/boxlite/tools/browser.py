"""The browser tool set's core: navigate, click, type, read the page's text and take a
screenshot in a :class:`~boxlite.BrowserBox`, driven through Playwright over CDP.

One :class:`BrowserToolSession` is what a framework's browser tools share: it holds one box for
its whole life (see ``_held_box.py``: a given box, one it starts on first use, or a pool lease)
and one Playwright connection to the browser in it, so the pages an agent opened are still there
on its next call. Everything runs on the library loop (Playwright's objects belong to the loop
that made them), so the tools work from sync and async callers alike.

A failed action (a selector that matches nothing, a page that does not load in time) is an
:class:`~boxlite.tools.ActionResult` with ``error=True`` whose text says why: the model reads it
and can try again. A failure of the box itself raises :class:`~boxlite.tools.ToolSandboxError`
(a :class:`~boxlite.errors.BoxliteError`), which the adapters turn into their framework's error.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import struct
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from .._blocking import blocking
from .._loop import run_in_library_loop
from ..pool import BoxPool
from ..runtime import Boxlite
from ._held_box import _HeldBox
from ._session import ToolSandboxError
from .result import DEFAULT_MAX_OUTPUT_CHARS, ActionResult, ImageOutput, truncate_output
from .schemas import call_timeout

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page, Playwright

    from ..browserbox import BrowserBoxOptions

logger = logging.getLogger("boxlite.tools")

T = TypeVar("T")

#: Seconds a browser action may take when the call gives no timeout.
DEFAULT_BROWSER_TIMEOUT = 30.0
#: Seconds the session waits for the browser in a box it starts (a cold Chromium under emulation is slow).
BROWSER_START_TIMEOUT = 180.0
#: Characters of a Playwright error message the model is shown.
MAX_ERROR_CHARS = 1_000


#: In the page: an element's visible text cut to ``cap`` characters as ``truncate_output`` cuts
#: it (two thirds head, one third tail), and the full length.
_CAPPED_INNER_TEXT = """(element, cap) => {
  const text = element.innerText;
  if (text.length <= cap) return [text.length, text];
  const head = Math.floor(cap * 2 / 3);
  return [text.length, text.slice(0, head) + text.slice(text.length - (cap - head))];
}"""


@runtime_checkable
class BrowserEndpoint(Protocol):
    """What the browser tools need of a box: the CDP websocket URL of its browser
    (:meth:`boxlite.BrowserBox.endpoint`, a coroutine or a plain method)."""

    def endpoint(self, timeout: float = ...) -> Any: ...


def png_size(data: bytes) -> tuple[int, int]:
    """The width and height of a PNG image (from its IHDR chunk)."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _error_text(error: BaseException) -> str:
    message = str(error).strip() or type(error).__name__
    # Playwright appends its call log ("Call log: ...") after the first lines; the head says what failed.
    message = message.split("\nCall log:")[0].strip()
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + " [...]"
    return f"error: {message}"


def _playwright_error() -> type[Exception]:
    try:
        from playwright.async_api import Error
    except ImportError:
        return _NoPlaywrightError
    return Error


class _NoPlaywrightError(Exception):
    """Stands in for Playwright's error class where Playwright is not installed."""


class BrowserToolSession:
    """The browser and the page a set of browser tools drives.

    Args:
        box: A started :class:`~boxlite.BrowserBox` (or anything with its ``endpoint()``) to
            drive; its owner stops it. Without ``box`` and ``pool``, the session starts a
            ``BrowserBox(options=options, runtime=runtime)`` on its first call and stops it on
            :meth:`close`.
        pool: A :class:`~boxlite.pool.BoxPool` whose ``prepare`` returns, for each of its boxes,
            the browser box to drive (the lease's ``resource``): the session leases one on its
            first call and holds it until :meth:`close`.
        options: The ``BrowserBoxOptions`` of the box the session starts.
        runtime: The runtime of the box the session starts (default :meth:`Boxlite.default`).
        max_output_chars: Characters of page text :meth:`read_text` returns at most.
        default_timeout: Seconds an action may take when the call gives none.
    """

    def __init__(
        self,
        box: BrowserEndpoint | None = None,
        *,
        pool: BoxPool | None = None,
        options: BrowserBoxOptions | None = None,
        runtime: Boxlite | None = None,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        default_timeout: float = DEFAULT_BROWSER_TIMEOUT,
    ) -> None:
        if max_output_chars < 100:
            raise ValueError(f"max_output_chars={max_output_chars} is too small to be useful: use at least 100")
        try:
            call_timeout(default_timeout, 0.0)
        except ValueError:
            raise ValueError(f"default_timeout={default_timeout} must be a positive number of seconds") from None
        if box is not None and options is not None:
            raise ValueError("pass either box= (a started BrowserBox) or options= (for one the tools start), not both")

        def create() -> AbstractAsyncContextManager[BrowserEndpoint]:
            from ..browserbox import BrowserBox

            return BrowserBox(options=options, runtime=runtime)

        self._held: _HeldBox[BrowserEndpoint] = _HeldBox(
            kind="BrowserBox",
            box=box,
            pool=pool,
            create=create,
            accepts=lambda obj: isinstance(obj, BrowserEndpoint),
        )
        self.max_output_chars = max_output_chars
        self.default_timeout = default_timeout
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._page: Page | None = None
        self._pages: list[Page] = []
        self._lock: asyncio.Lock | None = None

    @property
    def box_started(self) -> bool:
        """Whether the session has its box yet (it starts or leases one on its first action)."""
        return self._held.started

    @property
    def box(self) -> BrowserEndpoint | None:
        """The BrowserBox the session drives (given, started, or leased from its pool), once it has
        one; ``None`` before its first action, and after :meth:`close` unless it was given."""
        return self._held.box

    # -- the connection ---------------------------------------------------------------------

    async def _connect(self) -> Page:
        """The page actions go to, connecting to the box's browser first if needed."""
        if self._browser is not None and not self._browser.is_connected():
            logger.info("the browser connection was lost; connecting again")
            await self._disconnect()
        if self._browser is None:
            try:
                from playwright.async_api import async_playwright
            except ImportError:
                raise ToolSandboxError(
                    "the browser tools need Playwright for Python: install boxlite-core[browser]"
                ) from None
            box = await self._held.get()
            url = box.endpoint(timeout=BROWSER_START_TIMEOUT)
            if inspect.isawaitable(url):
                url = await url
            self._playwright = await async_playwright().start()
            try:
                self._browser = await self._playwright.chromium.connect_over_cdp(
                    url, timeout=BROWSER_START_TIMEOUT * 1000
                )
            except BaseException:
                await self._disconnect()
                raise
            context = self._browser.contexts[0] if self._browser.contexts else await self._browser.new_context()
            # A page of its own: sessions sharing one browser (several agents) do not share a tab.
            # In a box of its own (started or leased), the tab Chromium opened at its start is
            # this session's: its renderer is already running (a new one takes seconds under TCG).
            blank = [p for p in context.pages if p.url == "about:blank"] if self._held.owned else []
            self._watch(blank[0] if blank else await context.new_page())
        return await self._current_page()

    def _watch(self, page: Page) -> None:
        """Makes ``page`` the open page; a page it opens (a link with target=_blank,
        window.open) becomes the open page in turn."""
        self._page = page
        self._pages.append(page)
        page.on("popup", self._watch)

    async def _current_page(self) -> Page:
        """The open page, or the last of this session's pages still open when it was closed."""
        assert self._browser is not None
        if self._page is not None and not self._page.is_closed():
            return self._page
        self._pages = [p for p in self._pages if not p.is_closed()]
        if self._pages:
            self._page = self._pages[-1]
        else:
            contexts: list[BrowserContext] = self._browser.contexts
            context = contexts[0] if contexts else await self._browser.new_context()
            self._watch(await context.new_page())
        assert self._page is not None
        return self._page

    async def _disconnect(self) -> None:
        browser, self._browser, self._page = self._browser, None, None
        pages, self._pages = self._pages, []
        playwright, self._playwright = self._playwright, None
        for page in pages:
            if browser is not None and browser.is_connected() and not page.is_closed():
                try:
                    await page.close()
                except Exception as e:  # closed meanwhile
                    logger.debug("closing a page: %s", e)
        if browser is not None:
            try:
                await browser.close()  # over CDP: drops the connection, the browser keeps running
            except Exception as e:  # already gone
                logger.debug("closing the browser connection: %s", e)
        if playwright is not None:
            await playwright.stop()

    async def _act(
        self, timeout: float | None, action: Callable[[Page, float], Awaitable[ActionResult]]
    ) -> ActionResult:
        """Runs ``action(page, timeout_ms)`` on the library loop; a failed action becomes an error result."""
        try:
            seconds = call_timeout(timeout, self.default_timeout)
        except ValueError as e:
            return ActionResult(text=f"error: {e}", error=True)
        return await run_in_library_loop(self._act_here(seconds * 1000, action))

    async def _act_here(self, ms: float, action: Callable[[Page, float], Awaitable[ActionResult]]) -> ActionResult:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                page = await self._connect()
                return await action(page, ms)
            except _playwright_error() as e:
                return ActionResult(text=_error_text(e), error=True)

    @staticmethod
    async def _describe(page: Page) -> str:
        try:
            title = await page.title()
        except Exception:
            title = ""
        return f"url: {page.url}\ntitle: {title}"

    # -- the actions ------------------------------------------------------------------------

    async def navigate(self, url: str, timeout: float | None = None) -> ActionResult:
        """Opens ``url`` in the open page and waits for it to load."""

        async def go(page: Page, ms: float) -> ActionResult:
            response = await page.goto(url, timeout=ms, wait_until="load")
            status = f"status: {response.status}\n" if response is not None else ""
            return ActionResult(text=f"{status}{await self._describe(page)}")

        return await self._act(timeout, go)

    async def click(
        self, selector: str | None = None, text: str | None = None, timeout: float | None = None
    ) -> ActionResult:
        """Clicks the element ``selector`` finds, or the first one showing ``text``."""
        if (selector is None) == (text is None):
            return ActionResult(
                text="error: give the element's selector or its text to click (one of the two)", error=True
            )

        async def press(page: Page, ms: float) -> ActionResult:
            target = page.locator(selector) if selector is not None else page.get_by_text(text or "")
            await target.first.click(timeout=ms)
            current = await self._current_page()  # the click may have opened a page
            try:
                await current.wait_for_load_state("load", timeout=ms)
            except _playwright_error():
                pass  # still loading: the model sees the URL and can look again
            what = f"selector {selector!r}" if selector is not None else f"text {text!r}"
            return ActionResult(text=f"clicked the element with {what}\n{await self._describe(current)}")

        return await self._act(timeout, press)

    async def type(self, selector: str, text: str, submit: bool = False, timeout: float | None = None) -> ActionResult:
        """Replaces the value of the input ``selector`` finds with ``text``; ``submit`` presses Enter."""

        async def fill(page: Page, ms: float) -> ActionResult:
            field = page.locator(selector).first
            await field.fill(text, timeout=ms)
            note = ""
            if submit:
                await field.press("Enter", timeout=ms)
                current = await self._current_page()
                try:
                    await current.wait_for_load_state("load", timeout=ms)
                except _playwright_error():
                    pass
                note = " and pressed Enter"
            current = await self._current_page()
            return ActionResult(
                text=f"typed {len(text)} characters into {selector!r}{note}\n{await self._describe(current)}"
            )

        return await self._act(timeout, fill)

    async def read_text(self, selector: str | None = None, timeout: float | None = None) -> ActionResult:
        """The visible text of the page (or of the element ``selector`` finds), capped."""

        async def read(page: Page, ms: float) -> ActionResult:
            # The cut is made in the page: only the head and tail the cap keeps cross into this
            # process, whatever the page's size (the host re-checks what arrives).
            total, kept = await page.locator(selector or "body").first.evaluate(
                _CAPPED_INNER_TEXT, self.max_output_chars, timeout=ms
            )
            capped, _ = truncate_output(str(kept), self.max_output_chars, total_chars=int(total))
            return ActionResult(text=f"{await self._describe(page)}\n\n{capped}")

        return await self._act(timeout, read)

    async def screenshot(self, full_page: bool = False, timeout: float | None = None) -> ActionResult:
        """A PNG screenshot of the page (its visible part, or all of it with ``full_page``)."""

        async def shoot(page: Page, ms: float) -> ActionResult:
            data = await page.screenshot(type="png", full_page=full_page, timeout=ms)
            width, height = png_size(data)
            image = ImageOutput(path="screenshot.png", data=data)
            return ActionResult(
                text=f"screenshot ({width}x{height} PNG)\n{await self._describe(page)}", images=(image,)
            )

        return await self._act(timeout, shoot)

    # -- life -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Drops the browser connection and ends the session's box (see :class:`BrowserToolSession`)."""
        await run_in_library_loop(self._close_here())

    async def _close_here(self) -> None:
        await self._disconnect()
        await self._held.close()

    async def __aenter__(self) -> BrowserToolSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    navigate_sync = blocking(navigate)
    click_sync = blocking(click)
    type_sync = blocking(type)
    read_text_sync = blocking(read_text)
    screenshot_sync = blocking(screenshot)
    close_sync = blocking(close)


__all__ = ["BROWSER_START_TIMEOUT", "DEFAULT_BROWSER_TIMEOUT", "BrowserEndpoint", "BrowserToolSession", "png_size"]
