"""``ComputerBox`` on the test image ``desktop`` (Xvfb, icewm, xdotool, scrot, xterm, x11vnc +
noVNC; ``tests/images/recipes/desktop.py``): one desktop shared by the module's tests, driven
through the real X server in a real VM, and read back through ``exec`` and screenshots."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import boxlite
import pytest
from boxlite._ports import free_port
from boxlite.errors import BoxStartError, ExecError, InvalidOptionError
from build_images import build_images

pytestmark = pytest.mark.timeout(900)

#: The reference documentation's ComputerBox example, as written (its image comes from
#: BOXLITE_COMPUTER_IMAGE, set to the test image).
SEED_EXAMPLE = """
import asyncio
import boxlite

async def main():
    async with boxlite.ComputerBox(cpu=2, memory=2048) as desktop:
        await desktop.wait_until_ready()

        # GUI automation
        await desktop.mouse_move(100, 100)
        await desktop.left_click()
        await desktop.type("Hello World!")

        # Take screenshot
        screenshot = await desktop.screenshot()
        with open("screen.png", "wb") as f:
            f.write(screenshot)

asyncio.run(main())
"""

#: Under TCG on a busy 2-core machine the desktop takes far longer than the 60 s default.
READY_TIMEOUT = 300
DESKTOP_USER = "1000:1000"


def parse_png(png: bytes) -> tuple[int, int, bytes]:
    """(width, height, raw scanlines) of a PNG, checking its chunks' CRCs, independently of boxlite."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:16]
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + data) == crc, f"bad CRC in chunk {kind!r}"
        if kind == b"IHDR":
            width, height = struct.unpack(">II", data[:8])
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
        if kind == b"IEND":
            break
    return width, height, zlib.decompress(idat)


@pytest.fixture(scope="module")
def desktop_image() -> str:
    return str(build_images(["desktop"])["desktop"])


@pytest.fixture(scope="module")
async def desktop(runtime: boxlite.Boxlite, desktop_image: str) -> AsyncIterator[boxlite.ComputerBox]:
    box = boxlite.ComputerBox(
        cpu=2, memory=1024, gui_http_port=free_port(), gui_https_port=free_port(), runtime=runtime, image=desktop_image
    )
    async with box:
        await box.wait_until_ready(timeout=READY_TIMEOUT)
        yield box


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


async def open_xterm(desktop: boxlite.ComputerBox, title: str, geometry: str) -> str:
    """Starts an xterm as the desktop's user, running sh; returns its window id once mapped."""
    await desktop.box.exec(
        "xterm", ["-T", title, "-geometry", geometry, "-e", "sh"], user=DESKTOP_USER, working_dir="/home/user"
    )
    return await find_window(desktop, title)


async def find_window(desktop: boxlite.ComputerBox, title: str) -> str:
    """The id of the visible window named ``title``, once there is one."""
    deadline = time.monotonic() + 120
    while True:
        # A window that goes away while xdotool walks the tree ends it with BadWindow: look again.
        found = await desktop.exec("xdotool", "search", "--onlyvisible", "--name", f"^{title}$")
        if found.exit_code == 0 and found.stdout.split():
            return found.stdout.split()[0]
        assert time.monotonic() < deadline, f"no window {title!r} within 120 s: {found.stderr}"
        await asyncio.sleep(0.5)


async def window_origin(desktop: boxlite.ComputerBox, window: str) -> tuple[int, int]:
    geometry = await desktop.exec("xdotool", "getwindowgeometry", "--shell", window)
    fields = dict(line.split("=", 1) for line in geometry.stdout.split())
    return int(fields["X"]), int(fields["Y"])


async def read_text(desktop: boxlite.ComputerBox, path: str) -> str:
    result = await desktop.exec("cat", path)
    return result.stdout if result.exit_code == 0 else ""


async def test_screenshot_is_a_png_of_the_reported_size(desktop: boxlite.ComputerBox) -> None:
    assert await desktop.get_screen_size() == (1024, 768)
    shot = await desktop.screenshot()
    assert shot["format"] == "png"
    assert (shot["width"], shot["height"]) == (1024, 768)
    png = base64.b64decode(shot["data"], validate=True)
    assert png == bytes(shot)
    width, height, pixels = parse_png(png)
    assert (width, height) == (1024, 768)
    assert len(pixels) >= height * (1 + width * 3), "the scanlines do not cover the screen"
    assert dict(shot) == {"data": shot["data"], "width": 1024, "height": 768, "format": "png"}
    assert set(shot.keys()) == {"data", "width", "height", "format"} and "data" in shot


async def test_typing_into_a_terminal(desktop: boxlite.ComputerBox) -> None:
    window = await open_xterm(desktop, "typing", "80x10+40+40")
    x, y = await window_origin(desktop, window)
    await desktop.mouse_move(x + 100, y + 60)
    await desktop.left_click()
    # ctrl+u erases the line typed so far: only the second command runs.
    await desktop.type("echo wrong")
    await desktop.key("ctrl+u")
    await desktop.type("echo typed by xdotool > /tmp/typed")
    await desktop.key("Return")
    await eventually(lambda: _has(desktop, "/tmp/typed", "typed by xdotool\n"), "the typed command's file")
    await desktop.type("exit")
    await desktop.key("Return")


async def _has(desktop: boxlite.ComputerBox, path: str, text: str) -> bool:
    return await read_text(desktop, path) == text


#: The screen rows above icewm's taskbar (its bottom 26 rows here). The taskbar shows which of
#: its parts has the keyboard focus: on a desktop nobody used yet, closing the root menu with
#: Escape leaves the focus on the taskbar's start button, which is then drawn differently.
ABOVE_TASKBAR = 736


async def test_a_click_changes_the_screen(desktop: boxlite.ComputerBox) -> None:
    # A right click on the empty desktop opens icewm's root menu; Escape closes it again.
    await desktop.mouse_move(900, 200)
    before = await desktop.screenshot()
    await desktop.right_click()
    await eventually(lambda: _differs(desktop, before, ABOVE_TASKBAR), "the menu the click opens", timeout=30)
    await desktop.key("Escape")
    await eventually(lambda: _same(desktop, before, ABOVE_TASKBAR), "the menu to close", timeout=30)


async def _differs(desktop: boxlite.ComputerBox, before: bytes, rows: int | None = None) -> bool:
    """Whether the screen now differs from ``before`` (in its top ``rows`` rows, if given)."""
    width, _, now = parse_png(bytes(await desktop.screenshot()))
    then = parse_png(before)[2]
    if rows is not None:
        # A PNG row's filtered bytes depend on that row and the one above only.
        row_bytes = 1 + width * 3
        now, then = now[: rows * row_bytes], then[: rows * row_bytes]
    return now != then


async def _same(desktop: boxlite.ComputerBox, before: bytes, rows: int | None = None) -> bool:
    return not await _differs(desktop, before, rows)


async def settled_screenshot(desktop: boxlite.ComputerBox, timeout: float = 30) -> bytes:
    """A screenshot once the screen stopped changing (two taken half a second apart agree): the
    file a command writes can exist before the terminal has drawn its output and next prompt."""
    shot = bytes(await desktop.screenshot())
    pixels = parse_png(shot)[2]

    async def unchanged() -> bool:
        nonlocal shot, pixels
        await asyncio.sleep(0.5)
        shot = bytes(await desktop.screenshot())
        previous, pixels = pixels, parse_png(shot)[2]
        return pixels == previous

    await eventually(unchanged, "the screen to settle", timeout=timeout)
    return shot


async def test_cursor_position_follows_the_mouse(desktop: boxlite.ComputerBox) -> None:
    await desktop.mouse_move(123, 456)
    assert await desktop.cursor_position() == (123, 456)
    await desktop.mouse_move(5000, 5000)  # the X server keeps the pointer on the screen
    assert await desktop.cursor_position() == (1023, 767)
    with pytest.raises(InvalidOptionError, match="pixel coordinate"):
        await desktop.mouse_move(-1, 10)


async def test_drag_moves_a_window(desktop: boxlite.ComputerBox) -> None:
    window = await open_xterm(desktop, "dragged", "40x5+100+300")
    x, y = await window_origin(desktop, window)
    # The title bar is above the client area icewm reports: grab it 10 px above.
    await desktop.left_click_drag(x + 60, y - 10, x + 260, y + 90)
    assert await desktop.cursor_position() == (x + 260, y + 90)
    await eventually(
        lambda: _at(desktop, window, (x + 200, y + 100)), f"the window to move from {(x, y)} by (200, 100)", timeout=30
    )
    await desktop.exec("xdotool", "windowclose", window)


async def _at(desktop: boxlite.ComputerBox, window: str, origin: tuple[int, int]) -> bool:
    return await window_origin(desktop, window) == origin


async def test_scroll_scrolls_a_terminal_back(desktop: boxlite.ComputerBox) -> None:
    window = await open_xterm(desktop, "scrolling", "60x12+500+60")
    x, y = await window_origin(desktop, window)
    await desktop.mouse_move(x + 50, y + 50)
    await desktop.left_click()
    await desktop.type("seq 1 300; echo done > /tmp/scrolled")
    await desktop.key("Return")
    await eventually(lambda: _has(desktop, "/tmp/scrolled", "done\n"), "seq to finish")
    bottom = await settled_screenshot(desktop)
    await desktop.scroll(x + 60, y + 60, "up", amount=5)
    assert await desktop.cursor_position() == (x + 60, y + 60)
    await eventually(lambda: _differs(desktop, bottom), "the terminal to scroll back", timeout=30)
    await desktop.scroll(x + 60, y + 60, "down", amount=10)
    await eventually(lambda: _same(desktop, bottom), "the terminal to scroll to the bottom again", timeout=30)
    with pytest.raises(InvalidOptionError, match="up, down, left, right"):
        await desktop.scroll(10, 10, "sideways")
    await desktop.exec("xdotool", "windowclose", window)


async def test_clicks_reach_the_x_server(desktop: boxlite.ComputerBox) -> None:
    # xev prints the events it gets: every kind of click arrives, with the right button and count.
    await desktop.box.exec(
        "sh", ["-c", "stdbuf -oL xev -geometry 300x200+600+400 -event button > /tmp/xev.log"], user=DESKTOP_USER
    )
    window = await find_window(desktop, "Event Tester")
    x, y = await window_origin(desktop, window)
    await desktop.mouse_move(x + 150, y + 100)
    for click in (desktop.left_click, desktop.middle_click, desktop.right_click, desktop.double_click):
        await click()
    await desktop.triple_click()

    async def presses() -> bool:
        log = await read_text(desktop, "/tmp/xev.log")
        return log.count("ButtonRelease") >= 8

    await eventually(presses, "xev to log the 8 button releases", timeout=60)
    log = await read_text(desktop, "/tmp/xev.log")
    buttons = [line.split("button ")[1].split(",")[0] for line in log.splitlines() if "button " in line]
    releases = buttons[1::2]
    assert releases == ["1", "2", "3", "1", "1", "1", "1", "1"], log
    await desktop.exec("xdotool", "windowclose", window)


async def test_an_unknown_key_name_raises_with_xdotools_message(desktop: boxlite.ComputerBox) -> None:
    with pytest.raises(ExecError) as failed:
        await desktop.key("ctrl+NoSuchKey")
    assert "No such key name" in failed.value.stderr and "NoSuchKey" in str(failed.value)


async def test_the_web_desktop_answers_on_its_port(desktop: boxlite.ComputerBox) -> None:
    def get(url: str) -> tuple[int, str]:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the image's self-signed cert
        with urllib.request.urlopen(url, timeout=30, context=context) as response:
            return response.status, response.read().decode()

    async def get_eventually(url: str) -> tuple[int, str]:
        # The web desktop starts after the window manager: it may still be starting.
        deadline = time.monotonic() + 120
        while True:
            try:
                return await asyncio.to_thread(get, url)
            except OSError:
                assert time.monotonic() < deadline, f"{url} did not answer within 120 s"
                await asyncio.sleep(1)

    status, page = await get_eventually(desktop.gui_url)
    assert status == 200 and "vnc.html" in page
    status, page = await get_eventually(f"{desktop.gui_url}vnc.html")
    assert status == 200 and "noVNC" in page
    status, page = await get_eventually(f"https://127.0.0.1:{desktop.gui_https_port}/vnc.html")
    assert status == 200 and "noVNC" in page
    # The page's websocket reaches the desktop's VNC server: it greets with its protocol version.
    greeting = await asyncio.to_thread(vnc_greeting_over_websocket, desktop.gui_http_port)
    assert greeting.startswith(b"RFB 003."), greeting


def vnc_greeting_over_websocket(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            (
                f"GET /websockify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: binary\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
            chunk = s.recv(4096)
            assert chunk, rest
            rest += chunk
        return rest[2 : 2 + (rest[1] & 0x7F)]


def test_the_seed_example_runs_unchanged(desktop_image: str, tmp_path: Path) -> None:
    # The example runs in tmp_path: it imports the boxlite this test imported, however that was found.
    path = os.pathsep.join([str(Path(boxlite.__file__).parent.parent), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, BOXLITE_HOME=str(tmp_path / "home"), BOXLITE_COMPUTER_IMAGE=desktop_image, PYTHONPATH=path)
    done = subprocess.run(
        [sys.executable, "-c", SEED_EXAMPLE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    width, height, _ = parse_png((tmp_path / "screen.png").read_bytes())
    assert (width, height) == (1024, 768)


async def test_an_image_without_a_desktop_fails_with_stderr(runtime: boxlite.Boxlite, busybox: str) -> None:
    box = boxlite.ComputerBox(
        memory=256, gui_http_port=free_port(), gui_https_port=free_port(), runtime=runtime, image=busybox
    )
    async with box:
        with pytest.raises(BoxStartError, match="neither /usr/local/bin/boxlite-desktop nor /init"):
            await box.wait_until_ready(timeout=60)
        with pytest.raises(ExecError) as failed:
            await box.mouse_move(1, 1)
        assert failed.value.exit_code == 127 and "xdotool" in failed.value.stderr, failed.value
        assert "mouse_move(1, 1)" in str(failed.value)


def test_sync_computer_box(runtime: boxlite.Boxlite, desktop_image: str) -> None:
    with boxlite.SyncComputerBox(
        memory=1024, gui_http_port=free_port(), gui_https_port=free_port(), runtime=runtime, image=desktop_image
    ) as box:
        box.wait_until_ready(timeout=READY_TIMEOUT)
        assert box.get_screen_size() == (1024, 768)
        box.mouse_move(321, 123)
        assert box.cursor_position() == (321, 123)
        shot = box.screenshot()
        assert parse_png(bytes(shot))[:2] == (1024, 768) == (shot["width"], shot["height"])
        with pytest.raises(InvalidOptionError, match="key name"):
            box.key("  ")
