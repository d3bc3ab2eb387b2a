"""Pools of ready browser and desktop boxes for the agent tools (``create_browser_pool``,
``create_computer_pool``), on real VMs: one pool of each kind for the module (``min_idle=1,
max_size=2``; these images are heavy under TCG). A tool session leasing from a pool drives a box
that was ready before its first call; a second session after the first closed gets another box
(``max_uses=1``); two desktops at once have web desktops on different host ports, both
answering; closing a pool leaves no VMM. The host-port choice (free ports, 3000/3001 when free,
a named port in use refused) is checked without VMs."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

import boxlite
import pytest
from boxlite import _ports
from boxlite.pool import BoxPool
from boxlite.tools import BrowserToolSession, ComputerToolSession, create_browser_pool, create_computer_pool
from boxlite_langchain import BoxLiteBrowserToolkit
from boxlite_llamaindex import BoxLiteComputerToolSpec
from build_images import build_images
from conftest import pid_alive, vmms_under
from llama_index.core.base.llms.types import ImageBlock
from test_langchain import call, run_agent, text_of
from test_llamaindex import run_agent as run_llamaindex_agent

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.filterwarnings("ignore:create_react_agent has been moved"),
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PAGE = "data:text/html," + urllib.parse.quote("<title>Pooled</title><h1>served from a pooled box</h1>")
#: Seconds an action may take: Chromium or X under TCG on a loaded 2-core host is slow.
ACTION_TIMEOUT = 180
#: Seconds a test waits for a pool to have an idle box again (a cold start under TCG).
REFILL_TIMEOUT = 300


@pytest.fixture(scope="module")
def vmms_before(home: Path) -> set[int]:
    """The VMMs of other modules' session boxes, which the pools' closing must leave alone."""
    return set(vmms_under(home))


@pytest.fixture(scope="module")
async def browser_pool(runtime: boxlite.Boxlite, vmms_before: set[int]) -> AsyncIterator[BoxPool]:
    image = str(build_images(["browser"])["browser"])
    pool = create_browser_pool(
        boxlite.BrowserBoxOptions(memory=1536, cpu=2), image=image, runtime=runtime, min_idle=1, max_size=2
    )
    await pool.start()  # the first ready browser, before any session's clock runs
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def computer_pool(runtime: boxlite.Boxlite, vmms_before: set[int]) -> AsyncIterator[BoxPool]:
    image = str(build_images(["desktop"])["desktop"])
    pool = create_computer_pool(cpu=2, memory=1024, image=image, runtime=runtime, min_idle=1, max_size=2)
    await pool.start()
    yield pool
    await pool.close()


async def wait_for_idle(pool: BoxPool) -> None:
    deadline = time.monotonic() + REFILL_TIMEOUT
    while pool.stats().idle < 1:
        assert time.monotonic() < deadline, f"the pool did not refill: {pool.stats()}"
        await asyncio.sleep(0.5)


def http_status(port: int) -> int | None:
    """The HTTP status of ``/`` on 127.0.0.1:``port``, or ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


async def close_leaving_no_vmm(pool: BoxPool, home: Path, before: set[int]) -> None:
    """Closes ``pool`` and checks that no VMM of it is left (only those of other modules' boxes)."""
    await pool.close()
    left: set[int] = set()
    for _ in range(100):
        left = set(vmms_under(home)) - before
        if not left:
            break
        await asyncio.sleep(0.2)
    assert not left, f"VMMs of the closed pool still run: {left}"


async def answers(port: int, within: float = 120) -> bool:
    """Whether the web desktop on ``port`` answers within ``within`` seconds (it starts after the
    window manager, a few seconds late under TCG)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(http_status, port) is not None:
            return True
        await asyncio.sleep(1)
    return False


# -- browser -----------------------------------------------------------------------------------


async def test_browser_sessions_lease_ready_boxes_and_never_share_one(
    browser_pool: BoxPool, runtime: boxlite.Boxlite, home: Path, vmms_before: set[int]
) -> None:
    assert browser_pool.stats().idle == 1
    first = BrowserToolSession(pool=browser_pool, default_timeout=ACTION_TIMEOUT)
    started = time.monotonic()
    navigated = await first.navigate(PAGE)
    first_call = time.monotonic() - started
    assert not navigated.error, navigated.text
    assert "title: Pooled" in navigated.text
    read = await first.read_text()
    assert "served from a pooled box" in read.text
    box = first.box
    assert isinstance(box, boxlite.BrowserBox)
    first_id, first_pid = box.id, box.box.info().vmm_pid
    assert isinstance(first_pid, int)
    print(f"first browser call on a pooled box: {first_call:.2f} s")
    await first.close()
    # max_uses=1: the box the first tenant used is destroyed, never leased again.
    for _ in range(100):
        if not pid_alive(first_pid):
            break
        await asyncio.sleep(0.2)
    assert not pid_alive(first_pid), "the released browser box's VMM still runs"

    refill_started = time.monotonic()
    await wait_for_idle(browser_pool)
    print(f"browser pool refilled in {time.monotonic() - refill_started:.2f} s")
    # The pool's snapshot holds a started Chromium: the refill restored it instead of booting
    # a box and starting Chromium again.
    assert browser_pool.from_snapshot and browser_pool.snapshot is not None
    snapshot = runtime.snapshots.get(browser_pool.snapshot)
    # The second tenant: LangChain's browser toolkit on the same pool, in its agent loop.
    toolkit = BoxLiteBrowserToolkit(pool=browser_pool)
    try:
        messages = await run_agent(toolkit.get_tools(), call("browser_read_text"))
        second = toolkit.session.box
        assert isinstance(second, boxlite.BrowserBox)
        assert second.id != first_id
        assert second.box.info().id != snapshot.source_box, "a box restored from the snapshot, not its source"
        # A fresh profile: the first tenant's page is not in this browser.
        assert "served from a pooled box" not in text_of(messages[0])
        assert "url: about:blank" in text_of(messages[0])
    finally:
        await toolkit.session.close()
    assert browser_pool.stats().leased == 0
    # Closed here, not at the module's end: its refills would slow the desktop tests down.
    await close_leaving_no_vmm(browser_pool, home, vmms_before)


# -- desktop -----------------------------------------------------------------------------------


async def test_computer_session_drives_a_ready_desktop(computer_pool: BoxPool) -> None:
    assert computer_pool.stats().idle == 1
    session = ComputerToolSession(pool=computer_pool, default_timeout=ACTION_TIMEOUT)
    try:
        shot = await session.act("screenshot")
        assert not shot.error, shot.text
        assert shot.images[0].data.startswith(PNG_MAGIC)
        clicked = await session.act("left_click", coordinate=[200, 200])
        assert not clicked.error, clicked.text
        assert clicked.text.startswith("left click at (200, 200)")
        assert len(clicked.images) == 1
        desktop = session.box
        assert isinstance(desktop, boxlite.ComputerBox)
        assert await desktop.cursor_position() == (200, 200)
    finally:
        await session.close()


async def test_two_desktops_at_once_on_their_own_ports(
    computer_pool: BoxPool, home: Path, vmms_before: set[int]
) -> None:
    await wait_for_idle(computer_pool)
    first = ComputerToolSession(pool=computer_pool, default_timeout=ACTION_TIMEOUT)
    # The second through LlamaIndex's computer tool, in its agent loop.
    spec = BoxLiteComputerToolSpec(pool=computer_pool)
    try:
        assert not (await first.act("cursor_position")).error
        outputs = await run_llamaindex_agent(spec, ("computer", {"action": "screenshot"}))  # type: ignore[arg-type]
        assert any(isinstance(block, ImageBlock) for block in outputs[0].blocks)
        one, two = first.box, spec.session.box
        assert isinstance(one, boxlite.ComputerBox) and isinstance(two, boxlite.ComputerBox)
        assert one.id != two.id
        ports = {one.gui_http_port, one.gui_https_port, two.gui_http_port, two.gui_https_port}
        assert len(ports) == 4, ports
        assert await answers(one.gui_http_port) and await answers(two.gui_http_port)
    finally:
        await first.close()
        await spec.session.close()
    await close_leaving_no_vmm(computer_pool, home, vmms_before)


# -- host ports, without VMs -------------------------------------------------------------------


def test_free_ports_are_never_handed_out_twice() -> None:
    first, second = _ports.reserve_port(), _ports.reserve_port()
    assert first != second
    # Outside the kernel's ephemeral range, where no outgoing connection can take them before passt binds them.
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert not low <= first <= high and not low <= second <= high, (first, second, low, high)
    named = _ports.free_port()
    assert _ports.port_free(named), "free_port() does not reserve: the caller names it"
    assert _ports.claim_port(named, owner="test", option="port") == named
    assert not _ports.port_free(named)
    assert not _ports.port_free(first)
    _ports.release_ports([first, second, named])
    assert _ports.port_free(first) and _ports.port_free(named)


def test_computerbox_prefers_3000_and_falls_back_to_a_free_port() -> None:
    boxes = [boxlite.ComputerBox(image="unused"), boxlite.ComputerBox(image="unused")]
    try:
        for box in boxes:
            box._choose_ports()
        chosen = [(box.gui_http_port, box.gui_https_port) for box in boxes]
        assert len({port for pair in chosen for port in pair}) == 4, chosen
        if _ports._bindable(3000) or chosen[0][0] == 3000:
            assert chosen[0][0] == 3000  # upstream's default when it is free
        for box, (http, https) in zip(boxes, chosen, strict=True):
            assert (http, 3000, "tcp") in box.options.ports and (https, 3001, "tcp") in box.options.ports
    finally:
        for box in boxes:
            box._release_ports()


async def test_a_named_port_in_use_is_refused_before_booting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        box = boxlite.ComputerBox(gui_http_port=port, image="unused")
        with pytest.raises(boxlite.InvalidOptionError, match=rf"gui_http_port={port}\): host port {port} .* in use"):
            await box.start()
        browser = boxlite.BrowserBox(boxlite.BrowserBoxOptions(cdp_port=port), image="unused")
        with pytest.raises(boxlite.InvalidOptionError, match=rf"cdp_port={port}\)"):
            await browser.start()
    with pytest.raises(boxlite.InvalidOptionError, match=r"leave options\.port and options\.cdp_port unset"):
        create_browser_pool(boxlite.BrowserBoxOptions(cdp_port=port))


def test_wrong_port_options_are_clear_errors() -> None:
    with pytest.raises(boxlite.InvalidOptionError, match=r"gui_http_port=70000\): a TCP port 1-65535"):
        boxlite.ComputerBox(gui_http_port=70000, image="unused")
    with pytest.raises(boxlite.InvalidOptionError, match="gui_http_port and gui_https_port are both 4000"):
        boxlite.ComputerBox(gui_http_port=4000, gui_https_port=4000, image="unused")
    with pytest.raises(boxlite.InvalidOptionError, match=r"options\.cdp_port and options\.port must be the host ports"):
        boxlite.BrowserBox.adopt(None, boxlite.BrowserBoxOptions())  # type: ignore[arg-type]  # checked first
    with pytest.raises(boxlite.InvalidOptionError, match="each pooled desktop gets free host ports of its own"):
        create_computer_pool(box_options={"gui_http_port": 4000})
