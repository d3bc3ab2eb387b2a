"""``BrowserBox``: a headless browser in a box, driven from the host over the DevTools protocol.

    async with boxlite.BrowserBox() as box:
        browser = await box.connect()            # a Playwright Browser (boxlite-core[browser])
        page = await browser.new_page()
        await page.goto("https://example.com")

How it works: the box boots an image that has Chromium (upstream's Playwright image by default;
``image=`` or ``BOXLITE_BROWSER_IMAGE`` picks another), and the class starts Chromium itself with
one long-running ``exec`` (the engine does not run image entrypoints), as an unprivileged user,
with its profile under ``/tmp`` in the box. Chromium's DevTools listener binds to the guest's
loopback only (``--remote-debugging-address`` is ignored by current headless Chromium), and a
forwarded port reaches the box's network address, not its loopback; so a relay in the box
(``socat``, else ``python3``, else ``node``: whichever the image has) listens on guest port 9222
and connects to Chromium on 127.0.0.1:9223. The host end is ``127.0.0.1:<cdp_port>`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from ._ports import claim_port, release_ports, reserve_port
from .errors import BoxliteError, InvalidOptionError
from .options import BoxOptions, NetworkSpec
from .runtime import Box, Boxlite, ExecResult, Execution
from .simplebox import SimpleBox, SizedBoxArgs

if TYPE_CHECKING:
    from playwright.async_api import Browser, Playwright

log = logging.getLogger("boxlite.browserbox")

#: The image a BrowserBox uses when neither ``image=`` nor ``BOXLITE_BROWSER_IMAGE`` is given
#: (upstream BoxLite's default: Playwright's image with its browsers).
DEFAULT_BROWSER_IMAGE = "mcr.microsoft.com/playwright:v1.58.0-jammy"

#: The browsers BrowserBox knows. ``endpoint()`` (CDP) is Chromium's; Firefox and WebKit are
#: reached only through a Playwright server in the image (:meth:`BrowserBox.playwright_endpoint`).
BROWSERS = ("chromium", "firefox", "webkit")

#: Guest ports: the CDP relay, Chromium's own (loopback) DevTools port, the Playwright server.
GUEST_CDP_PORT = 9222
GUEST_CHROMIUM_PORT = 9223
GUEST_PLAYWRIGHT_PORT = 3000

#: Where the browser's profile and log live in the box (written by the unprivileged user).
GUEST_DIR = "/tmp/boxlite-browser"
_CHROMIUM_LOG = f"{GUEST_DIR}/chromium.log"
_PLAYWRIGHT_LOG = f"{GUEST_DIR}/playwright.log"
_PLAYWRIGHT_VERSION = "1.58.0"

#: Chromium's flags: headless, no GPU (a VM has none), no sandbox (the VM is the sandbox, and
#: Chromium's setuid / user-namespace sandbox needs privileges the unprivileged user lacks),
#: ``/tmp`` rather than a small ``/dev/shm``, and none of the background work a fresh profile
#: starts (component updates, sync, background networking, first-run pages). Under TCG the time
#: goes to starting Chromium's processes (see the README's BrowserBox figures and
#: ``benchmarks/bench_browser.py --flags`` to compare others).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--mute-audio",
    "--remote-allow-origins=*",
)

# Finds Chromium, starts the relay and execs Chromium; run as the unprivileged user, with the
# flags as "$@". The relays' code is passed in the environment, so nothing needs quoting.
_LAUNCHER = f"""
set -u
mkdir -p {GUEST_DIR} && cd {GUEST_DIR} || exit 1
export HOME={GUEST_DIR}
exec >{_CHROMIUM_LOG} 2>&1
bin=""
for c in chromium chromium-browser google-chrome; do
  if command -v "$c" >/dev/null 2>&1; then bin=$(command -v "$c"); break; fi
done
[ -n "$bin" ] || bin=$(ls /ms-playwright/chromium-*/chrome-linux*/chrome 2>/dev/null | head -n 1)
if [ -z "$bin" ]; then
  echo "boxlite: no Chromium in this image (looked for chromium, chromium-browser, google-chrome"
  echo "on PATH and /ms-playwright/chromium-*/chrome-linux*/chrome)"
  exit 127
fi
if command -v socat >/dev/null 2>&1; then
  socat TCP-LISTEN:{GUEST_CDP_PORT},fork,reuseaddr TCP:127.0.0.1:{GUEST_CHROMIUM_PORT} &
elif command -v python3 >/dev/null 2>&1; then
  python3 -c "$BOXLITE_PY_RELAY" &
elif command -v node >/dev/null 2>&1; then
  node -e "$BOXLITE_NODE_RELAY" &
else
  echo "boxlite: the image has none of socat, python3, node to relay the DevTools port"
  exit 127
fi
exec "$bin" "$@" --user-data-dir={GUEST_DIR}/profile --remote-debugging-address=127.0.0.1 \\
  --remote-debugging-port={GUEST_CHROMIUM_PORT} about:blank
"""

_PY_RELAY = f"""
import asyncio
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data); await w.drain()
    finally:
        w.close()
async def client(r, w):
    try:
        r2, w2 = await asyncio.open_connection("127.0.0.1", {GUEST_CHROMIUM_PORT})
    except OSError:
        w.close(); return
    await asyncio.gather(pipe(r, w2), pipe(r2, w), return_exceptions=True)
async def main():
    server = await asyncio.start_server(client, "0.0.0.0", {GUEST_CDP_PORT}, reuse_address=True)
    await server.serve_forever()
asyncio.run(main())
"""

_NODE_RELAY = (
    "const net=require('net');net.createServer(c=>{const s=net.connect("
    f"{GUEST_CHROMIUM_PORT},'127.0.0.1');c.pipe(s);s.pipe(c);"
    "c.on('error',()=>s.destroy());s.on('error',()=>c.destroy());})"
    f".listen({GUEST_CDP_PORT},'0.0.0.0');"
)

# Prints "uid:gid" of the image's browser user (ours: browser; Playwright's: pwuser), else nobody's.
_WHO = (
    "for u in browser pwuser; do id -u $u >/dev/null 2>&1 && echo $(id -u $u):$(id -g $u) && exit; done; "
    "echo 65534:65534"
)

_PLAYWRIGHT_INSTALL_HINT = "pip install 'boxlite-core[browser]'"


class BrowserStartError(BoxliteError):
    """The browser in a :class:`BrowserBox` exited or could not be started (the message has its log)."""


def default_browser_image() -> str:
    """``BOXLITE_BROWSER_IMAGE`` (a reference or an OCI layout path) or :data:`DEFAULT_BROWSER_IMAGE`."""
    return os.environ.get("BOXLITE_BROWSER_IMAGE") or DEFAULT_BROWSER_IMAGE


def _retrieve(done: asyncio.Future[ExecResult]) -> None:
    """Marks Chromium's outcome seen (``endpoint()`` reports it), so that its end when the box
    is stopped under it (by a pool) is not logged as an unretrieved exception."""
    if not done.cancelled():
        done.exception()


class BrowserBoxArgs(SizedBoxArgs, total=False):
    """Box keywords of :class:`BrowserBox`: those of :class:`~boxlite.SimpleBox` but ``runtime``,
    which is a parameter of its own, as upstream (see :class:`~boxlite.simplebox.BoxArgs`)."""


@dataclass(frozen=True)
class BrowserBoxOptions:
    """Configuration of a :class:`BrowserBox` (upstream's shape).

    Attributes:
        browser: ``"chromium"`` (CDP: :meth:`BrowserBox.endpoint`, :meth:`BrowserBox.connect`),
            ``"firefox"`` or ``"webkit"`` (only through a Playwright server in the image).
        memory: Guest memory in MiB (Chromium wants 1024 or more).
        cpu: Virtual CPUs.
        port: Host port of the Playwright server (guest port 3000); ``None`` picks a free one.
            A port named here that is already in use is an error when the box starts.
        cdp_port: Host port of the DevTools protocol (guest port 9222); ``None`` picks a free one
            (never one another box of this process holds). Named and in use: an error at start.
        image: The image (reference or OCI layout path); ``None`` means :func:`default_browser_image`.
    """

    browser: str = "chromium"
    memory: int = 2048
    cpu: int = 2
    port: int | None = None
    cdp_port: int | None = None
    image: str | None = None

    def __post_init__(self) -> None:
        if self.browser not in BROWSERS:
            raise InvalidOptionError(
                f"BrowserBoxOptions(browser={self.browser!r}): unknown browser; use one of {', '.join(BROWSERS)}"
            )
        for name in ("port", "cdp_port"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 0 < value < 65536):
                raise InvalidOptionError(f"BrowserBoxOptions({name}={value!r}): a TCP port 1-65535, or None")


class BrowserBox(SimpleBox):
    """A headless browser in a box: ``endpoint()`` (CDP URL), ``connect()`` (Playwright Browser).

    ``BrowserBox(options=BrowserBoxOptions(...), runtime=None, image=None, network=None, **box_options)``:
    other keywords are :class:`~boxlite.SimpleBox`'s (``volumes``, ``env``, ``ports``, ``security``
    ...); ``network`` is :attr:`BoxOptions.network` (what the browser may reach). Chromium starts
    when the box does (``async with`` or :meth:`start`); :meth:`endpoint` waits until it answers.
    Firefox and WebKit start lazily with the Playwright server (:meth:`playwright_endpoint`).
    """

    def __init__(
        self,
        options: BrowserBoxOptions | None = None,
        runtime: Boxlite | None = None,
        *,
        image: str | None = None,
        network: NetworkSpec | list[str] | None = None,
        **box_options: Unpack[BrowserBoxArgs],
    ) -> None:
        opts = options if options is not None else BrowserBoxOptions()
        if not isinstance(opts, BrowserBoxOptions):
            raise InvalidOptionError(f"BrowserBox(options=...) takes a BrowserBoxOptions, got {type(opts).__name__}")
        self._browser_name = opts.browser
        if opts.cdp_port is not None and opts.cdp_port == opts.port:
            raise InvalidOptionError(f"BrowserBoxOptions: port and cdp_port are both {opts.port}")
        # Ports left to us are reserved now (so two boxes of this process never get one port);
        # ports named are checked at start, once the caller can no longer change them.
        self._claim: list[tuple[int, str]] = [
            (port, name) for port, name in ((opts.cdp_port, "cdp_port"), (opts.port, "port")) if port is not None
        ]
        self._cdp_host_port = opts.cdp_port if opts.cdp_port is not None else reserve_port()
        self._pw_host_port = opts.port if opts.port is not None else reserve_port()
        self._held_ports = [
            p for p, given in ((self._cdp_host_port, opts.cdp_port), (self._pw_host_port, opts.port)) if given is None
        ]
        ports = [
            (self._cdp_host_port, GUEST_CDP_PORT),
            (self._pw_host_port, GUEST_PLAYWRIGHT_PORT),
            *(box_options.pop("ports", None) or []),
        ]
        if box_options.get("rootfs_path") is None:
            image = image or opts.image or default_browser_image()
        args: dict[str, Any] = {**box_options, "runtime": runtime, "ports": ports}
        if args.get("cpus") is None and args.get("cpu") is None:
            args["cpus"] = opts.cpu
        if args.get("memory_mib") is None and args.get("memory") is None:
            args["memory_mib"] = opts.memory
        super().__init__(image, **args)
        if network is not None:
            self._options = BoxOptions.model_validate({**self._options.model_dump(), "network": network})
        self._user: str | None = None
        self._chromium: Execution | None = None
        self._chromium_done: asyncio.Future[ExecResult] | None = None
        self._pw_server: Execution | None = None
        self._playwright: Playwright | None = None
        self._connected: list[Browser] = []
        #: Chromium runs already, started before the snapshot this box was restored from.
        self._restored = False

    @classmethod
    def adopt(cls, box: Box, options: BrowserBoxOptions, *, running: bool = False) -> BrowserBox:
        """A BrowserBox on ``box``, a box that is already running (e.g. one a
        :class:`~boxlite.pool.BoxPool` booted), without booting another VM: :meth:`start` then
        starts Chromium in it and :meth:`endpoint` waits for it. With ``running=True``, Chromium
        already runs in ``box`` (a box restored from a snapshot taken after its BrowserBox
        started it): :meth:`start` starts nothing, and :meth:`endpoint` only waits for it to
        answer on this box's ports (its exit is then seen only as an endpoint timeout).

        ``box`` must run a browser image and forward the host ports ``options.cdp_port`` and
        ``options.port`` (both required here) to guest ports 9222 and 3000, as
        ``BrowserBox(options).options`` does. :meth:`shutdown` stops ``box``; a pool stops its own
        boxes (see :func:`boxlite.tools.create_browser_pool`, which does all of this).
        """
        if options.cdp_port is None or options.port is None:
            raise InvalidOptionError(
                "BrowserBox.adopt(box, options): options.cdp_port and options.port must be the host ports "
                "the box forwards to guest ports 9222 and 3000"
            )
        browser = cls(options, runtime=box._runtime, image=box.info().image or None)
        browser._box = box
        browser._claim = []  # the box's forwards exist already: its ports are in use by it
        browser._restored = running
        return browser

    @property
    def browser(self) -> str:
        """The browser's name (``"chromium"``, ``"firefox"`` or ``"webkit"``), as upstream."""
        return self._browser_name

    @property
    def cdp_port(self) -> int:
        """The host port (on 127.0.0.1) of the DevTools protocol."""
        return self._cdp_host_port

    @property
    def port(self) -> int:
        """The host port (on 127.0.0.1) of the Playwright server."""
        return self._pw_host_port

    async def start(self) -> BrowserBox:
        """Boots the box and starts Chromium in it (not waiting for it: :meth:`endpoint` does).

        Raises:
            InvalidOptionError: a port named in the options is in use on the host.
        """
        if self._box is None:
            claims, self._claim = self._claim, []
            for port, name in claims:
                claim_port(port, owner="BrowserBoxOptions", option=name)
                self._held_ports.append(port)
        await super().start()
        if self._browser_name == "chromium" and self._chromium_done is None:
            if self._restored:
                # No execution of ours to watch (it belonged to the connection of the box the
                # snapshot was taken of): a future nobody completes, not a task, as a pool may
                # stop the box without shutting this down.
                self._chromium_done = asyncio.get_running_loop().create_future()
            else:
                await self._start_chromium()
        return self

    async def _browser_user(self) -> str:
        if self._user is None:
            who = await self.exec("sh", "-c", _WHO)
            self._user = who.stdout.strip() or "65534:65534"
        return self._user

    async def _start_chromium(self) -> None:
        user = await self._browser_user()
        self._chromium = await self.box.exec(
            "sh",
            ["-c", _LAUNCHER, "boxlite-browser", *CHROMIUM_FLAGS],
            {"BOXLITE_PY_RELAY": _PY_RELAY, "BOXLITE_NODE_RELAY": _NODE_RELAY},
            user=user,
        )
        self._chromium_done = asyncio.ensure_future(self._chromium.wait())
        self._chromium_done.add_done_callback(_retrieve)
        log.debug("started Chromium in box %s as %s", self.id, user)

    async def _guest_log(self, path: str) -> str:
        with contextlib.suppress(Exception):
            return (await self.read_file(path)).decode(errors="replace")[-2000:].strip()
        return ""

    async def endpoint(self, timeout: float = 60) -> str:
        """The DevTools (CDP) websocket URL of the browser, on ``127.0.0.1:<cdp_port>``; waits up
        to ``timeout`` seconds for Chromium to answer.

        Raises:
            InvalidOptionError: the box's browser is not Chromium (use :meth:`playwright_endpoint`).
            BrowserStartError: Chromium exited, or the image has none (the message has its log).
            TimeoutError: Chromium did not answer within ``timeout`` seconds.
        """
        if self._browser_name != "chromium":
            raise InvalidOptionError(
                f"endpoint() is the Chromium DevTools protocol; this box's browser is {self._browser_name}: "
                "use playwright_endpoint() or connect()"
            )
        if self._chromium_done is None:
            await self.start()
        done = self._chromium_done
        assert done is not None
        url = f"http://127.0.0.1:{self._cdp_host_port}/json/version"
        deadline = time.monotonic() + timeout
        while True:
            if done.done():
                result = done.result() if not done.cancelled() and done.exception() is None else None
                code = result.exit_code if result is not None else "unknown"
                raise BrowserStartError(
                    f"Chromium in box {self.id} exited (exit code {code}) before answering:\n"
                    f"{await self._guest_log(_CHROMIUM_LOG)}"
                )
            version = await asyncio.to_thread(_get_json, url, 2.0)
            if version is not None and isinstance(version.get("webSocketDebuggerUrl"), str):
                ws: str = version["webSocketDebuggerUrl"]
                return re.sub(r"^ws://[^/]+", f"ws://127.0.0.1:{self._cdp_host_port}", ws)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Chromium in box {self.id} did not answer on 127.0.0.1:{self._cdp_host_port} within "
                    f"{timeout} s (under TCG emulation a cold start takes longer: pass a larger timeout). "
                    f"Its log so far:\n{await self._guest_log(_CHROMIUM_LOG)}"
                )
            await asyncio.sleep(0.25)

    async def playwright_endpoint(self, timeout: float = 60) -> str:
        """The websocket URL of a Playwright server in the box (``playwright run-server`` with
        ``npx``, as in upstream's Playwright image), on ``127.0.0.1:<port>``.

        Raises:
            BrowserStartError: the image has no ``npx`` (no Playwright server: use :meth:`endpoint`
                or :meth:`connect` with Chromium), or the server exited.
            TimeoutError: the server did not answer within ``timeout`` seconds.
        """
        await SimpleBox.start(self)
        if self._pw_server is None:
            probe = await self.exec("sh", "-c", "command -v npx")
            if probe.exit_code != 0:
                raise BrowserStartError(
                    "playwright_endpoint(): this image has no Playwright server (no npx); "
                    "use endpoint() or connect() (Chromium over CDP), or an image with Node and Playwright"
                )
            user = await self._browser_user()
            script = (
                f"mkdir -p {GUEST_DIR} && cd {GUEST_DIR} && HOME={GUEST_DIR} exec npx -y "
                f"playwright@{_PLAYWRIGHT_VERSION} run-server --port {GUEST_PLAYWRIGHT_PORT} --host 0.0.0.0 "
                f">{_PLAYWRIGHT_LOG} 2>&1"
            )
            self._pw_server = await self.box.exec("sh", ["-c", script], user=user)
        url = f"http://127.0.0.1:{self._pw_host_port}/json"
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(_answers, url, 2.0):
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"the Playwright server in box {self.id} did not answer within {timeout} s. Its log:\n"
                    f"{await self._guest_log(_PLAYWRIGHT_LOG)}"
                )
            await asyncio.sleep(0.5)
        return f"ws://127.0.0.1:{self._pw_host_port}/"

    async def connect(self, timeout: float = 60) -> Browser:
        """A Playwright ``Browser`` connected to the box's browser (async API): Chromium over CDP
        (:meth:`endpoint`), Firefox and WebKit through the Playwright server. Closed when the box
        shuts down. Needs Playwright for Python: ``pip install 'boxlite-core[browser]'`` (no
        browser download: the browser is in the box).
        """
        try:
            from playwright.async_api import async_playwright
        except ImportError as e:
            raise ImportError(f"BrowserBox.connect() needs Playwright for Python: {_PLAYWRIGHT_INSTALL_HINT}") from e
        if self._browser_name == "chromium":
            ws = await self.endpoint(timeout)
        else:
            ws = await self.playwright_endpoint(timeout)
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        kind = getattr(self._playwright, self._browser_name)
        if self._browser_name == "chromium":
            browser: Browser = await kind.connect_over_cdp(ws, timeout=timeout * 1000)
        else:
            browser = await kind.connect(ws, timeout=timeout * 1000)
        self._connected.append(browser)
        return browser

    async def shutdown(self) -> None:
        """Disconnects Playwright, then stops the box (and the browser in it)."""
        for browser in self._connected:
            with contextlib.suppress(Exception):
                await browser.close()
        self._connected.clear()
        if self._playwright is not None:
            playwright, self._playwright = self._playwright, None
            with contextlib.suppress(Exception):
                await playwright.stop()
        if self._chromium_done is not None:
            self._chromium_done.cancel()
            with contextlib.suppress(BaseException):
                await self._chromium_done
        self._chromium = self._chromium_done = self._pw_server = None
        try:
            await super().shutdown()
        finally:
            release_ports(self._held_ports)
            self._held_ports = []

    async def __aenter__(self) -> BrowserBox:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()


def _get_json(url: str, timeout: float) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            value = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return value if isinstance(value, dict) else None


def _answers(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


__all__ = [
    "BROWSERS",
    "DEFAULT_BROWSER_IMAGE",
    "BrowserBox",
    "BrowserBoxArgs",
    "BrowserBoxOptions",
    "BrowserStartError",
    "default_browser_image",
]
