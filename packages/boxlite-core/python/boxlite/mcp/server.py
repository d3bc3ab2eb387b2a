"""The MCP server: the official SDK's low-level ``Server`` over :class:`~boxlite.mcp.tools.ToolService`,
served over stdio (default) or streamable HTTP, and its clean-up.

Each MCP session (the stdio connection, or one HTTP session) gets a
:class:`~boxlite.mcp.tools.Connection` from the server's lifespan; when the session ends
(the client disconnects) its boxes are stopped. Ctrl-C and SIGTERM end the transport, then
every connection, the pool and any box left of this runtime are stopped before the process
exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import SessionMessage

from .. import __version__
from .options import McpOptions, is_loopback, parse_options
from .tools import Connection, ToolService

logger = logging.getLogger("boxlite.mcp")

INSTRUCTIONS = (
    "BoxLite runs code in local virtual machines. boxlite_python and boxlite_shell run in a fresh box per call "
    "unless you pass session=<name>, which keeps a box (Python variables, files, packages) for every call with "
    "that name. Plots and PNG files come back as images."
)
#: The longest JSON-RPC message (one line) read from stdin.
MAX_STDIN_LINE = 64 * 1024 * 1024


def build_server(service: ToolService) -> Server[Connection, Any]:
    """The MCP server of ``service``: one :class:`Connection` per session, closed with it."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Server[Connection, Any]) -> AsyncIterator[Connection]:
        connection = service.connect()
        try:
            yield connection
        finally:
            # The session may end by cancellation (transport closed): the boxes still go.
            with anyio.CancelScope(shield=True):
                await connection.close()

    server: Server[Connection, Any] = Server(
        "boxlite", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan
    )

    async def list_tools(_: types.ListToolsRequest) -> types.ServerResult:
        return types.ServerResult(types.ListToolsResult(tools=service.tools))

    async def call_tool(request: types.CallToolRequest) -> types.ServerResult:
        connection = server.request_context.lifespan_context
        return types.ServerResult(await connection.call(request.params.name, request.params.arguments or {}))

    server.request_handlers[types.ListToolsRequest] = list_tools
    server.request_handlers[types.CallToolRequest] = call_tool
    return server


def _initialization(server: Server[Connection, Any]) -> InitializationOptions:
    return server.create_initialization_options(NotificationOptions())


# -- stdio ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _stdio_streams() -> AsyncIterator[
    tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]
]:
    """The SDK's stdio transport, but reading stdin without a thread, so that a signal can end
    the server while the client keeps stdin open (a thread blocked in ``read`` cannot be
    cancelled). stdin that is not a pipe (a file, a terminal) falls back to the SDK's."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_STDIN_LINE)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    except (ValueError, OSError):
        async with stdio_server() as streams:
            yield streams
        return

    async def lines() -> AsyncIterator[str]:
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                logger.error("a message from the client is longer than %d bytes: closing", MAX_STDIN_LINE)
                return
            if not line:
                return
            yield line.decode("utf-8", "replace")

    async with stdio_server(stdin=lines()) as streams:  # type: ignore[arg-type]
        yield streams


async def _serve_stdio(server: Server[Connection, Any]) -> None:
    async with _stdio_streams() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, _initialization(server))
    logger.info("the client closed stdin")


# -- streamable HTTP ------------------------------------------------------------------------


class _BearerApp:
    """The streamable HTTP endpoint, behind a bearer token when one is set."""

    def __init__(self, manager: StreamableHTTPSessionManager, token: str | None) -> None:
        self.manager = manager
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.expected is not None:
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = b'{"error": "a bearer token is required: send Authorization: Bearer <token>"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.manager.handle_request(scope, receive, send)


async def _serve_http(server: Server[Connection, Any], options: McpOptions, stop: asyncio.Event) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    security = None
    if is_loopback(options.host):  # DNS rebinding: a web page must not reach a loopback server
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    manager = StreamableHTTPSessionManager(app=server, security_settings=security)
    app = Starlette(
        routes=[Route("/mcp", endpoint=_BearerApp(manager, options.token))], lifespan=lambda _: manager.run()
    )
    config = uvicorn.Config(
        app, host=options.host, port=options.http_port or 0, log_level="warning", timeout_graceful_shutdown=3
    )

    class _Uvicorn(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # the server's own handlers stop it (below)
            yield

    web = _Uvicorn(config)
    serving = asyncio.ensure_future(web.serve())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        web.should_exit = True
        await serving
    finally:
        stopping.cancel()


# -- the process ----------------------------------------------------------------------------


async def serve(options: McpOptions) -> int:
    """Serves until the client goes (stdio), or until SIGINT/SIGTERM; stops every box it started."""
    loop = asyncio.get_running_loop()
    service = ToolService(options)
    server = build_server(service)
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        logger.info("got signal %d: stopping", signum)
        received.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    service.start()
    try:
        if options.http_port is None:
            transport = asyncio.ensure_future(_serve_stdio(server))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({transport, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not transport.done():
                transport.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await transport
        else:
            logger.info("serving streamable HTTP on http://%s:%s/mcp", options.host, options.http_port)
            await _serve_http(server, options, stop)
    finally:
        # Shielded: a second signal must not cut the clean-up short.
        closing = asyncio.ensure_future(service.close())
        while not closing.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(closing)
        closing.result()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 128 + received[0] if received else 0


#: Set in the environment of the detached server process (see :func:`_run_detached`).
DETACHED_ENV = "BOXLITE_MCP_DETACHED"


def _run_detached(argv: Sequence[str]) -> int:
    """Runs the stdio server as a child in a session of its own, and waits for it.

    An MCP client ends a stdio server by closing its stdin, then, a couple of seconds later,
    SIGTERM and SIGKILL to the server's process group (the SDK's client waits 2 s for each).
    Stopping VMs, one of them perhaps still booting, can take longer than that under
    emulation, and a killed server would leave them running. The child shares the client's
    stdin and stdout, so it serves the connection; SIGINT and SIGTERM sent to this process are
    passed on; a SIGKILL of this process group does not reach the child, which finishes
    stopping its boxes and exits on its own.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "boxlite.mcp", *argv], env={**os.environ, DETACHED_ENV: "1"}, start_new_session=True
    )

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    return child.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``boxlite mcp [OPTIONS]`` (``python -m boxlite.mcp``): see ``--help``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        options = parse_options(argv)
    except ValueError as e:
        print(f"boxlite mcp: {e}", file=sys.stderr)
        return 2
    if options.http_port is None and not os.environ.get(DETACHED_ENV):
        return _run_detached(argv)
    # stdout is the protocol's channel on stdio: logs go to stderr.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="boxlite mcp: %(levelname)s %(message)s")
    logging.getLogger("mcp").setLevel(logging.WARNING)
    try:
        return asyncio.run(serve(options))
    except ValueError as e:  # options only found wrong when used (e.g. --ray with no cluster)
        print(f"boxlite mcp: {e}", file=sys.stderr)
        return 2


__all__ = ["build_server", "main", "serve"]
