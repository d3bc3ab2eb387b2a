"""BrowserBox end to end: headless Chromium in a real VM (the ``browser`` test image), driven from
the host by Playwright over CDP through a forwarded port. One box is shared by most tests (module
scope); a second one, through the sync API, runs beside it and is stopped to check the teardown."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import boxlite
import pytest
from boxlite.browserbox import DEFAULT_BROWSER_IMAGE, BrowserBox, BrowserBoxOptions, BrowserStartError
from build_images import build_images
from conftest import pid_alive

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

#: Chromium's cold start under TCG on a busy 2-core machine; the readiness wait is generous.
READY = 300
#: Playwright's wait for one page action (ms): a new renderer under TCG takes tens of seconds.
PAGE_TIMEOUT = 240_000

PAGE = """<!doctype html><html><head><title>{title}</title></head>
<body><h1 id="greeting">hello from {where}</h1><p id="n">{n}</p></body></html>"""


@pytest.fixture(scope="module")
def browser_image() -> str:
    """The ``browser`` test image (Debian's Chromium), built on first use."""
    return str(build_images(["browser"])["browser"])


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host directory of pages, mounted read-only in the shared box at /srv/pages."""
    root = tmp_path_factory.mktemp("pages")
    (root / "index.html").write_text(PAGE.format(title="Volume page", where="the host", n=41))
    (root / "second.html").write_text(PAGE.format(title="Second page", where="the host", n=2))
    root.chmod(0o755)
    return root


@pytest.fixture(scope="module")
async def bbox(runtime: boxlite.Boxlite, browser_image: str, pages: Path) -> AsyncIterator[BrowserBox]:
    box = BrowserBox(
        BrowserBoxOptions(memory=2048, cpu=2),
        runtime=runtime,
        image=browser_image,
        volumes=[(str(pages), "/srv/pages", "ro")],
    )
    async with box:
        yield box


@pytest.fixture(scope="module")
async def browser(bbox: BrowserBox) -> Browser:
    return await bbox.connect(timeout=READY)


@pytest.fixture(scope="module")
async def page(browser: Browser) -> Page:
    """One page shared by the tests (each new page starts a renderer: tens of seconds under TCG)."""
    page = await browser.new_page()
    page.set_default_timeout(PAGE_TIMEOUT)
    return page


def version_of(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=10) as response:
        value: dict[str, str] = json.loads(response.read())
        return value


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_endpoint_is_the_cdp_websocket_on_a_loopback_host_port(bbox: BrowserBox, browser: Browser) -> None:
    url = await bbox.endpoint()
    assert url.startswith(f"ws://127.0.0.1:{bbox.cdp_port}/devtools/browser/"), url
    version = await asyncio.to_thread(version_of, bbox.cdp_port)
    assert "Chrome" in version["Browser"], version
    assert browser.is_connected()
    assert bbox.browser == "chromium"


async def test_the_browser_runs_unprivileged_with_its_profile_in_the_box(bbox: BrowserBox, browser: Browser) -> None:
    uids = await bbox.exec(
        "sh",
        "-c",
        'for p in /proc/[0-9]*; do case "$(readlink $p/exe)" in '
        "*/chromium*) awk '/^Uid:/ {print $2}' $p/status;; esac; done",
    )
    assert uids.stdout.split(), f"no Chromium process found: {uids}"
    assert set(uids.stdout.split()) == {"1000"}, uids.stdout
    profile = await bbox.stat("/tmp/boxlite-browser/profile")
    assert profile.is_dir


async def test_a_page_from_a_volume_title_and_javascript(page: Page) -> None:
    await page.goto("file:///srv/pages/index.html")
    assert await page.title() == "Volume page"
    assert await page.evaluate("Number(document.querySelector('#n').textContent) + 1") == 42
    assert await page.evaluate("navigator.userAgent.includes('Chrome')")


async def test_a_page_written_inside_the_box(bbox: BrowserBox, page: Page) -> None:
    await bbox.write_file("/tmp/inside.html", PAGE.format(title="Inside page", where="the box", n=7))
    await page.goto("file:///tmp/inside.html")
    assert await page.title() == "Inside page"
    assert await page.text_content("#greeting") == "hello from the box"


async def test_a_screenshot_is_a_png_of_the_viewport(page: Page) -> None:
    await page.set_viewport_size({"width": 640, "height": 480})
    await page.goto("file:///srv/pages/index.html")
    data = await page.screenshot()
    assert png_size(data) == (640, 480)
    assert len(data) > 1000, "a blank page compresses to less: the text was not rendered"


async def test_two_pages_at_once(browser: Browser, page: Page) -> None:
    second = await browser.new_page()
    second.set_default_timeout(PAGE_TIMEOUT)
    try:
        await asyncio.gather(page.goto("file:///srv/pages/index.html"), second.goto("file:///srv/pages/second.html"))
        assert (await page.title(), await second.title()) == ("Volume page", "Second page")
        assert await second.evaluate("document.querySelector('#n').textContent") == "2"
        assert len(browser.contexts) >= 2
    finally:
        await second.close()


async def test_no_playwright_server_in_the_image_is_a_clear_error(bbox: BrowserBox, browser: Browser) -> None:
    with pytest.raises(BrowserStartError, match="no Playwright server"):
        await bbox.playwright_endpoint(timeout=5)


def _second_box_through_the_sync_api(runtime: boxlite.Boxlite, image: str, first_port: int) -> dict[str, object]:
    """A SyncBrowserBox beside the shared box (Playwright's sync API needs a thread without an
    event loop, hence a worker thread); returns what the test checks after the box is stopped."""
    seen: dict[str, object] = {}
    box = boxlite.SyncBrowserBox(BrowserBoxOptions(memory=1024, cpu=1), runtime=runtime, image=image)
    with box:
        with pytest.raises(TimeoutError, match="did not answer"):
            box.endpoint(timeout=0.1)
        browser = box.connect(timeout=READY)
        page = browser.new_page()
        page.set_default_timeout(PAGE_TIMEOUT)
        page.set_content("<title>Sync page</title>")
        seen["title"] = page.title()
        seen["ports"] = (box.cdp_port, first_port)
        seen["versions"] = (version_of(box.cdp_port)["Browser"], version_of(first_port)["Browser"])
        seen["vmm_pid"] = box.box.info().vmm_pid
        seen["cdp_port"] = box.cdp_port
    return seen


async def test_a_second_box_at_once_then_a_clean_stop(
    runtime: boxlite.Boxlite, browser_image: str, bbox: BrowserBox, browser: Browser
) -> None:
    seen = await asyncio.to_thread(_second_box_through_the_sync_api, runtime, browser_image, bbox.cdp_port)
    assert seen["title"] == "Sync page"
    first, second = seen["ports"]  # type: ignore[misc]
    assert first != second
    assert all("Chrome" in v for v in seen["versions"]), seen  # type: ignore[attr-defined]
    pid = seen["vmm_pid"]
    assert isinstance(pid, int)
    for _ in range(50):
        if not pid_alive(pid):
            break
        await asyncio.sleep(0.1)
    assert not pid_alive(pid), "the stopped box's QEMU is still running"
    # The host port is free again: a listener can take it (SO_REUSEADDR: the forwarder's closed
    # connections may linger in TIME_WAIT, which only a live listener would make fail).
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", seen["cdp_port"]))  # type: ignore[arg-type]
        s.listen()
    # The shared box still answers.
    assert "Chrome" in (await asyncio.to_thread(version_of, bbox.cdp_port))["Browser"]


async def test_an_image_without_chromium_is_a_clear_error(runtime: boxlite.Boxlite, python_image: str) -> None:
    async with BrowserBox(BrowserBoxOptions(memory=256, cpu=1), runtime=runtime, image=python_image) as box:
        with pytest.raises(BrowserStartError, match="no Chromium in this image"):
            await box.endpoint(timeout=60)


def test_an_unknown_browser_is_a_clear_error() -> None:
    with pytest.raises(boxlite.InvalidOptionError, match="unknown browser; use one of chromium, firefox, webkit"):
        BrowserBoxOptions(browser="netscape")
    with pytest.raises(boxlite.InvalidOptionError, match="cdp_port"):
        BrowserBoxOptions(cdp_port=70000)


async def test_endpoint_is_chromium_only() -> None:
    box = BrowserBox(BrowserBoxOptions(browser="firefox"), image="unused")
    with pytest.raises(boxlite.InvalidOptionError, match="playwright_endpoint"):
        await box.endpoint()


def test_image_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXLITE_BROWSER_IMAGE", raising=False)
    assert BrowserBox().options.image == DEFAULT_BROWSER_IMAGE == "mcr.microsoft.com/playwright:v1.58.0-jammy"
    monkeypatch.setenv("BOXLITE_BROWSER_IMAGE", "/images/browser")
    assert BrowserBox().options.image == "/images/browser"
    assert BrowserBox(BrowserBoxOptions(image="/a")).options.image == "/a"
    assert BrowserBox(image="/b").options.image == "/b"


def test_box_options_apply() -> None:
    box = BrowserBox(BrowserBoxOptions(memory=1536, cpu=1, cdp_port=19222, port=19300), network=["example.com"])
    options = box.options
    assert (options.memory_mib, options.cpus) == (1536, 1)
    assert options.network.allow_net == ["example.com"]
    assert (19222, 9222, "tcp") in options.ports and (19300, 3000, "tcp") in options.ports
    free = BrowserBox()
    assert free.cdp_port != free.port and free.cdp_port > 0


async def test_connect_without_playwright_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "playwright.async_api", None)
    with pytest.raises(ImportError, match=r"pip install 'boxlite-core\[browser\]'"):
        await BrowserBox(image="unused").connect()
