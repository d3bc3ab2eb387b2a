"""``create_browser_pool`` and ``create_computer_pool``: pools of ready browser and desktop boxes
for the browser tool set and the computer-use tool (``pool=``), so that an agent's first call
does not wait for a cold start (under TCG, about 30 s to a browser's first page and 15 s to a
ready desktop).

Each pooled box is booted by the pool as a plain box with the options of a ``BrowserBox`` (or
``ComputerBox``) and host ports of its own (:class:`_ForwardingPool`: two such boxes at once
never share a port), then turned into a ready one by the pool's ``prepare``
(:meth:`BrowserBox.adopt` and Chromium answering on its DevTools port;
:meth:`ComputerBox.adopt` and :meth:`~boxlite.ComputerBox.wait_until_ready`). A lease's
``resource`` is that BrowserBox or ComputerBox. ``max_uses=1`` by default: a browser profile or
a desktop is never handed to a second tenant.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from typing import Any

from .._pool.box_pool import snapshot_allowed
from .._ports import release_ports, reserve_port
from ..browserbox import GUEST_CDP_PORT, GUEST_PLAYWRIGHT_PORT, BrowserBox, BrowserBoxOptions, _get_json
from ..computerbox import GUEST_HTTP_PORT, GUEST_HTTPS_PORT, ComputerBox
from ..errors import InvalidOptionError
from ..options import BoxOptions, NetworkSpec
from ..pool import BoxPool
from ..pool import default_health_check as _box_answers
from ..runtime import Box, Boxlite
from .browser import BROWSER_START_TIMEOUT
from .computer import DESKTOP_READY_TIMEOUT

logger = logging.getLogger("boxlite.tools")

#: Seconds an acquire waits for a box when none is idle (one is then started for it: a cold
#: browser or desktop under emulation takes most of this).
POOL_ACQUIRE_TIMEOUT = 300.0
#: Seconds the health check before a lease gives the browser's DevTools port to answer.
CDP_CHECK_TIMEOUT = 5.0


class _ForwardingPool(BoxPool):
    """A :class:`~boxlite.pool.BoxPool` whose every box forwards host ports of its own (chosen
    free when the box is booted) to the same guest ports; :meth:`host_ports` says which."""

    def __init__(self, options: BoxOptions, guest_ports: tuple[int, ...], **pool_options: Any) -> None:
        taken = sorted({guest for _, guest, _ in options.ports} & set(guest_ports))
        if taken:
            raise InvalidOptionError(
                f"the pool's box options forward guest ports {taken} already: the pool forwards them itself, "
                "a host port of its own for each box"
            )
        self._guest_ports = guest_ports
        self._ports_of: dict[str, tuple[int, ...]] = {}
        super().__init__(options, **pool_options)

    async def _create_box(self, runtime: Boxlite, options: BoxOptions) -> Box:
        hosts = tuple(reserve_port() for _ in self._guest_ports)
        forwards = [(host, guest, "tcp") for host, guest in zip(hosts, self._guest_ports, strict=True)]
        options = options.model_copy(update={"ports": [*forwards, *options.ports]})
        try:
            box = await runtime.create(options)
        except BaseException:
            release_ports(hosts)
            raise
        self._ports_of[box.id] = hosts
        return box

    async def _stop_box(self, box: Box) -> None:
        try:
            await super()._stop_box(box)
        finally:
            release_ports(self._ports_of.pop(box.id, ()))

    def host_ports(self, box: Box) -> tuple[int, ...]:
        """The host ports ``box`` forwards to the pool's guest ports, in their order."""
        return self._ports_of[box.id]


def create_browser_pool(
    options: BrowserBoxOptions | None = None,
    *,
    image: str | None = None,
    network: NetworkSpec | list[str] | None = None,
    runtime: Boxlite | None = None,
    start_timeout: float = BROWSER_START_TIMEOUT,
    min_idle: int = 1,
    max_size: int = 2,
    max_uses: int = 1,
    acquire_timeout: float = POOL_ACQUIRE_TIMEOUT,
    **pool_options: Any,
) -> BoxPool:
    """A :class:`~boxlite.pool.BoxPool` of ready :class:`~boxlite.BrowserBox` es (Chromium
    started and answering on its DevTools port) for the browser tools' ``pool=``:
    ``BrowserToolSession(pool=pool)``, ``BoxLiteBrowserToolkit(pool=pool)`` (LangChain),
    ``browser_tools(pool=pool)`` (CrewAI), ``BoxLiteBrowserToolSpec(pool=pool)`` (LlamaIndex).

    ``options``, ``image`` and ``network`` are :class:`~boxlite.BrowserBox`'s (``options.port``
    and ``options.cdp_port`` must be unset: each box gets free host ports of its own, see
    :attr:`BrowserBox.cdp_port`). ``start_timeout`` is how long a box's Chromium may take to
    answer before the box is given up. ``min_idle`` ready boxes wait for a lease; a session holds
    its lease until it closes and ``max_uses=1`` (default) destroys the box then, so no profile,
    cookie or page reaches the next tenant. Other keywords go to ``BoxPool`` (``max_lifetime``,
    ``exhaustion``, ...). Start it with ``await pool.start()`` (or ``async with pool``) to wait
    for the first ready box; ``await pool.close()`` stops them all.
    """
    opts = options if options is not None else BrowserBoxOptions()
    if opts.port is not None or opts.cdp_port is not None:
        raise InvalidOptionError(
            "create_browser_pool(options=...): leave options.port and options.cdp_port unset; "
            "each pooled box gets free host ports of its own (BrowserBox.cdp_port says which)"
        )
    if opts.browser != "chromium":
        raise InvalidOptionError(
            f"create_browser_pool(options=BrowserBoxOptions(browser={opts.browser!r})): the browser tools drive "
            "Chromium over CDP; use browser='chromium'"
        )
    # The options of a BrowserBox (image, sizes, network), without its own port forwards.
    template = BrowserBox(opts, runtime=runtime, image=image, network=network)
    release_ports([template.cdp_port, template.port])
    own = (template.cdp_port, template.port)
    base = template.options.model_copy(update={"ports": [p for p in template.options.ports if p[0] not in own]})
    browsers: weakref.WeakValueDictionary[str, BrowserBox] = weakref.WeakValueDictionary()
    #: The box the pool's snapshot is taken of, its Chromium started, until prepare takes it.
    snapshotted: dict[str, BrowserBox] = {}
    pool: _ForwardingPool

    async def ready_browser(box: Box, *, running: bool) -> BrowserBox:
        cdp_port, port = pool.host_ports(box)
        browser = BrowserBox.adopt(box, dataclasses.replace(opts, cdp_port=cdp_port, port=port), running=running)
        await browser.start()
        await browser.endpoint(timeout=start_timeout)
        logger.debug("pool box %s: Chromium ready on 127.0.0.1:%d", box.id, cdp_port)
        return browser

    async def before_snapshot(box: Box) -> None:
        # The snapshot holds a started Chromium: every box restored from it skips the start
        # (most of a cold BrowserBox's time under emulation).
        snapshotted[box.id] = await ready_browser(box, running=False)

    async def prepare(box: Box) -> BrowserBox:
        browser = snapshotted.pop(box.id, None)
        if browser is None:
            browser = await ready_browser(box, running=pool.from_snapshot)
        browsers[box.id] = browser
        return browser

    async def health_check(box: Box) -> bool:
        browser = browsers.get(box.id)
        if browser is None or not await _box_answers(box):
            return False
        url = f"http://127.0.0.1:{browser.cdp_port}/json/version"
        return await asyncio.to_thread(_get_json, url, CDP_CHECK_TIMEOUT) is not None

    pool = _ForwardingPool(
        base,
        (GUEST_CDP_PORT, GUEST_PLAYWRIGHT_PORT),
        runtime=runtime,
        min_idle=min_idle,
        max_size=max_size,
        max_uses=max_uses,
        acquire_timeout=acquire_timeout,
        prepare=prepare,
        health_check=health_check,
        # Booting every box (from_snapshot=False, or options a snapshot cannot hold) starts each
        # one's Chromium in prepare instead.
        before_snapshot=before_snapshot if pool_options.get("from_snapshot", snapshot_allowed(base)) else None,
        **pool_options,
    )
    return pool


def create_computer_pool(
    cpu: int = 2,
    memory: int = 2048,
    *,
    image: str | None = None,
    runtime: Boxlite | None = None,
    ready_timeout: float = DESKTOP_READY_TIMEOUT,
    min_idle: int = 1,
    max_size: int = 2,
    max_uses: int = 1,
    acquire_timeout: float = POOL_ACQUIRE_TIMEOUT,
    box_options: dict[str, Any] | None = None,
    **pool_options: Any,
) -> BoxPool:
    """A :class:`~boxlite.pool.BoxPool` of ready :class:`~boxlite.ComputerBox` es (the desktop
    started and :meth:`~boxlite.ComputerBox.wait_until_ready` passed) for the computer-use
    tool's ``pool=``: ``ComputerToolSession(pool=pool)``, ``BoxLiteComputerTool(pool=pool)``
    (LangChain, CrewAI), ``BoxLiteComputerToolSpec(pool=pool)`` (LlamaIndex).

    ``cpu``, ``memory``, ``image`` and ``box_options`` (other :class:`~boxlite.ComputerBox`
    keywords: ``env``, ``volumes``, ...) shape every box; each gets free host ports of its own
    for its web desktop (:attr:`ComputerBox.gui_http_port` says which). ``ready_timeout`` is how
    long a desktop may take to be ready before the box is given up. ``min_idle`` ready desktops
    wait for a lease; ``max_uses=1`` (default) destroys a desktop when its session closes, so no
    window or file reaches the next tenant. Other keywords go to ``BoxPool``.
    """
    extra = dict(box_options or {})
    for reserved in ("gui_http_port", "gui_https_port", "runtime"):
        if reserved in extra:
            raise InvalidOptionError(
                f"create_computer_pool(box_options={{{reserved!r}: ...}}): "
                + (
                    "each pooled desktop gets free host ports of its own"
                    if reserved != "runtime"
                    else "pass runtime= to create_computer_pool itself"
                )
            )
    template = ComputerBox(cpu, memory, runtime=runtime, image=image, **extra)
    desktops: weakref.WeakValueDictionary[str, ComputerBox] = weakref.WeakValueDictionary()
    pool: _ForwardingPool

    async def prepare(box: Box) -> ComputerBox:
        http_port, https_port = pool.host_ports(box)
        desktop = ComputerBox.adopt(box, gui_http_port=http_port, gui_https_port=https_port)
        await desktop.wait_until_ready(timeout=ready_timeout)
        desktops[box.id] = desktop
        return desktop

    async def health_check(box: Box) -> bool:
        desktop = desktops.get(box.id)
        return desktop is not None and desktop.desktop_running and await _box_answers(box)

    pool = _ForwardingPool(
        template.options,
        (GUEST_HTTP_PORT, GUEST_HTTPS_PORT),
        runtime=runtime,
        min_idle=min_idle,
        max_size=max_size,
        max_uses=max_uses,
        acquire_timeout=acquire_timeout,
        prepare=prepare,
        health_check=health_check,
        **pool_options,
    )
    return pool


__all__ = ["POOL_ACQUIRE_TIMEOUT", "create_browser_pool", "create_computer_pool"]
