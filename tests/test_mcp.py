"""``boxlite mcp`` driven by the MCP SDK's own client, over stdio (the server as a subprocess)
and over streamable HTTP (a server on a free loopback port), booting real boxes.

The frameworks' MCP clients (``langchain-mcp-adapters``, CrewAI's MCP support,
``llama-index-tools-mcp``) consume the server in their agent loops in ``test_mcp_frameworks.py``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from boxlite._ports import free_port
from boxlite.contract import TIMEOUT_EXIT_CODE
from boxlite.mcp.options import parse_options
from boxlite.tools import descriptions
from conftest import SPAWN_AND_SPIN, pid_alive, vmms_under
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"
TOOLS = {
    descriptions.PYTHON_TOOL_NAME,
    descriptions.SHELL_TOOL_NAME,
    descriptions.READ_FILE_TOOL_NAME,
    descriptions.WRITE_FILE_TOOL_NAME,
    descriptions.LIST_FILES_TOOL_NAME,
    "boxlite_create_box",
    "boxlite_list_boxes",
    "boxlite_stop_box",
    "boxlite_remove_box",
}
CALL_TIMEOUT = timedelta(seconds=400)
LIST_SLEEPS = (
    "import os\n"
    "names = [open(f'/proc/{p}/cmdline').read() for p in os.listdir('/proc') if p.isdigit()]\n"
    "print('sleeps:', [n for n in names if n.startswith('sleep')])"
)
NAME_X = "print('x gone' if 'x' not in globals() else 'x kept')"


@pytest.fixture(scope="module")
def mcp_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home for this module's servers (the accelerator is probed once)."""
    return tmp_path_factory.mktemp("mcp-home")


def server_env(home: Path) -> dict[str, str]:
    path = [str(REPO / "packages" / "boxlite-core" / "python"), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, BOXLITE_HOME=str(home), PYTHONPATH=os.pathsep.join(p for p in path if p))


def server_args(image: str, *extra: str) -> list[str]:
    return ["-m", "boxlite.mcp", "--image", image, "--memory", "512", "--pool-size", "2", "--warm", "1", *extra]


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent), result
    return block.text


async def call(client: ClientSession, tool: str, **arguments: Any) -> types.CallToolResult:
    return await client.call_tool(tool, arguments, read_timeout_seconds=CALL_TIMEOUT)


async def test_stdio_tools_sessions_files_lifecycle_and_disconnect(plot_image: str, mcp_home: Path) -> None:
    params = StdioServerParameters(command=sys.executable, args=server_args(plot_image), env=server_env(mcp_home))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        listed = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(listed) == TOOLS
        assert listed[descriptions.SHELL_TOOL_NAME].description == descriptions.SHELL_TOOL_DESCRIPTION
        python_schema = listed[descriptions.PYTHON_TOOL_NAME].inputSchema
        assert python_schema["required"] == ["code"] and "session" in python_schema["properties"]

        # Stateless Python in a pooled box.
        ran = await call(session, descriptions.PYTHON_TOOL_NAME, code="print(6 * 7)")
        assert not ran.isError and "exit code: 0" in text(ran) and "42" in text(ran), ran

        # A plot comes back as image content, not as text.
        plotted = await call(
            session,
            descriptions.PYTHON_TOOL_NAME,
            code="import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()",
        )
        images = [b for b in plotted.content if isinstance(b, types.ImageContent)]
        assert not plotted.isError and len(images) == 1, plotted
        assert images[0].mimeType == "image/png" and base64.b64decode(images[0].data).startswith(PNG)

        # A timeout is a result (exit 124), not a crash of the call or the server.
        slow = await call(session, descriptions.PYTHON_TOOL_NAME, code="import time\ntime.sleep(120)", timeout=2)
        assert not slow.isError and f"exit code: {TIMEOUT_EXIT_CODE}" in text(slow) and "timed out: true" in text(slow)

        # Invalid arguments are tool errors naming the problem.
        bad = await call(session, descriptions.PYTHON_TOOL_NAME, code=5)
        assert bad.isError and "code" in text(bad) and "string" in text(bad), bad
        negative = await call(session, descriptions.SHELL_TOOL_NAME, command="true", timeout=-1)
        assert negative.isError and "timeout" in text(negative), negative
        unknown = await call(session, "boxlite_nope")
        assert unknown.isError and "unknown tool" in text(unknown)

        # A named session keeps variables, and its files (written, read back, listed).
        assert not (await call(session, descriptions.PYTHON_TOOL_NAME, code="x = 41", session="work")).isError
        kept = await call(session, descriptions.PYTHON_TOOL_NAME, code="print(x + 1)", session="work")
        assert "42" in text(kept), kept

        # A cancelled call kills what it started; the session says it was restarted.
        request_id = session._request_id  # the id the next request gets
        running = asyncio.ensure_future(
            call(session, descriptions.PYTHON_TOOL_NAME, code=SPAWN_AND_SPIN.format(n=600), session="work")
        )
        await asyncio.sleep(5)
        cancel = types.CancelledNotification(params=types.CancelledNotificationParams(requestId=request_id))
        await session.send_notification(types.ClientNotification(cancel))
        with pytest.raises(McpError, match="cancelled"):
            await running
        after = await call(session, descriptions.PYTHON_TOOL_NAME, code=LIST_SLEEPS, session="work")
        assert "sleeps: []" in text(after) and "restarted" in text(after), after
        assert "x gone" in text(await call(session, descriptions.PYTHON_TOOL_NAME, code=NAME_X, session="work"))

        wrote = await call(
            session, descriptions.WRITE_FILE_TOOL_NAME, path="/data/notes.txt", content="héllo\n", session="work"
        )
        assert not wrote.isError and "wrote 7 bytes" in text(wrote), wrote
        read = await call(session, descriptions.READ_FILE_TOOL_NAME, path="/data/notes.txt", session="work")
        assert text(read) == "héllo\n"
        listing = await call(session, descriptions.LIST_FILES_TOOL_NAME, path="/data", session="work")
        assert "notes.txt" in text(listing)
        shell = await call(session, descriptions.SHELL_TOOL_NAME, command="wc -c < /data/notes.txt", session="work")
        assert "7" in text(shell)
        missing = await call(session, descriptions.READ_FILE_TOOL_NAME, path="/data/nope", session="work")
        assert missing.isError and "nope" in text(missing), missing
        throwaway = await call(session, descriptions.WRITE_FILE_TOOL_NAME, path="/x", content="x")
        assert throwaway.isError and "session" in text(throwaway)

        # A PNG file the code saved is read back as an image.
        await call(
            session,
            descriptions.PYTHON_TOOL_NAME,
            code="import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig('/data/p.png')\nplt.close()",
            session="work",
        )
        png = await call(session, descriptions.READ_FILE_TOOL_NAME, path="/data/p.png", session="work")
        assert any(isinstance(b, types.ImageContent) for b in png.content), png

        # Lifecycle: a kept box keeps its files over a stop; removing it deletes it.
        created = await call(session, "boxlite_create_box", name="keeper")
        assert not created.isError and "keeper" in text(created), created
        again = await call(session, "boxlite_create_box", name="keeper")
        assert again.isError and "exists already" in text(again)
        await call(session, descriptions.SHELL_TOOL_NAME, command="echo kept > /root/k.txt", session="keeper")
        boxes = text(await call(session, "boxlite_list_boxes"))
        assert "keeper: running, kept" in boxes and "work: running, session" in boxes, boxes
        stopped = await call(session, "boxlite_stop_box", name="keeper")
        assert not stopped.isError and "keeper: stopped" in text(await call(session, "boxlite_list_boxes"))
        back = await call(session, descriptions.READ_FILE_TOOL_NAME, path="/root/k.txt", session="keeper")
        assert text(back) == "kept\n", back
        assert not (await call(session, "boxlite_remove_box", name="keeper")).isError
        assert "keeper" not in text(await call(session, "boxlite_list_boxes"))
        gone = await call(session, "boxlite_stop_box", name="keeper")
        assert gone.isError and "no workspace box named 'keeper'" in text(gone)
        assert vmms_under(mcp_home), "the session's box and the pool's are running"
    # The client closed the connection: the server stopped every box it started and exited.
    assert wait_until(lambda: not vmms_under(mcp_home)), f"QEMU left running: {vmms_under(mcp_home)}"


async def test_http_bearer_token_volumes_session_disconnect_and_sigterm(
    plot_image: str, mcp_home: Path, tmp_path: Path
) -> None:
    port = free_port()
    token = "s3cret-token"
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("hi from the host\n")
    log = tmp_path / "server.log"
    args = server_args(plot_image, "--http", str(port), "--token", token, "-v", f"{shared}:/shared")
    with log.open("w") as err:  # the child keeps its own copy
        server = subprocess.Popen(
            [sys.executable, *args],
            env=server_env(mcp_home),
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(300):
                try:
                    refused = await probe.post(url, json={})
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.2)
            assert refused.status_code == 401 and "bearer token" in refused.text

        client = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(400))
        async with (
            client,
            streamable_http_client(url, http_client=client) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS
            ran = await call(session, descriptions.PYTHON_TOOL_NAME, code="print(1 + 1)")
            assert not ran.isError and "2" in text(ran), ran
            assert "7" in text(await call(session, descriptions.PYTHON_TOOL_NAME, code="print(7)", session="s"))
            # Output is capped with the framework tools' truncation marker.
            long = await call(session, descriptions.PYTHON_TOOL_NAME, code="print('x' * 30000)", session="s")
            assert "characters truncated (output limit 10000 characters)" in text(long), text(long)[:300]
            # A volume is read-only unless :rw was asked for.
            volume = await call(
                session,
                descriptions.SHELL_TOOL_NAME,
                command="cat /shared/hello.txt && echo x > /shared/new.txt",
                session="s",
            )
            assert "hi from the host" in text(volume) and "exit code: 0" not in text(volume), text(volume)
            assert not (shared / "new.txt").exists()
            with_session = len(vmms_under(mcp_home))
        # The client ended its session: the session's box is stopped, the server goes on.
        assert wait_until(lambda: len(vmms_under(mcp_home)) < with_session), "the session's box is still running"
        assert server.poll() is None
        assert vmms_under(mcp_home), "the pool's warm box stays for the next client"

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()
        assert wait_until(lambda: not vmms_under(mcp_home)), f"QEMU left running: {vmms_under(mcp_home)}"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


async def test_stdio_sigterm_while_connected(plot_image: str, mcp_home: Path) -> None:
    """SIGTERM with the client still connected (stdin open): the boxes stop, the server exits."""
    params = StdioServerParameters(
        command=sys.executable, args=server_args(plot_image, "--warm", "0"), env=server_env(mcp_home)
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        assert "3" in text(await call(session, descriptions.PYTHON_TOOL_NAME, code="print(3)", session="s"))
        servers = [p for p in _children() if "boxlite.mcp" in _cmdline(p)]
        assert len(servers) == 1 and vmms_under(mcp_home)
        os.kill(servers[0], signal.SIGTERM)
        assert wait_until(lambda: not pid_alive(servers[0]), timeout=60), "the server did not exit on SIGTERM"
        assert wait_until(lambda: not vmms_under(mcp_home)), f"QEMU left running: {vmms_under(mcp_home)}"


def _children() -> list[int]:
    me = str(os.getpid())
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().rsplit(") ", 1)[1].split()[1] == me:
                    pids.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return pids


def _cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline")).read_bytes().decode(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def test_refuses_a_non_loopback_bind_without_a_token(mcp_home: Path) -> None:
    env = {k: v for k, v in server_env(mcp_home).items() if k != "BOXLITE_MCP_TOKEN"}
    refused = subprocess.run(
        [sys.executable, "-m", "boxlite", "mcp", "--http", str(free_port()), "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "not loopback" in refused.stderr and "--token" in refused.stderr
    assert not vmms_under(mcp_home)
    bad_volume = subprocess.run(
        [sys.executable, "-m", "boxlite.mcp", "--volume", "/nonexistent-dir:/data"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_volume.returncode == 2 and "not a directory" in bad_volume.stderr


def test_options_from_flags_and_environment(tmp_path: Path) -> None:
    env = {
        "BOXLITE_MCP_MEMORY": "768",
        "BOXLITE_MCP_POOL_SIZE": "3",
        "BOXLITE_MCP_NETWORK": "off",
        "BOXLITE_MCP_VOLUMES": f"{tmp_path}:/data,{tmp_path}:/out:rw",
    }
    options = parse_options(["--memory", "640"], env)
    assert (options.memory_mib, options.pool_size, options.network) == (640, 3, False), "a flag wins over its variable"
    assert [(v.guest, v.mode) for v in options.volumes] == [("/data", "ro"), ("/out", "rw")], "read-only by default"
    assert parse_options(["--http", "8000", "--host", "10.0.0.1", "--token", "t"], {}).token == "t"
    assert parse_options(["--http", "8000", "--host", "::1"], {}).host == "::1"
    for argv, problem in [
        (["--http", "8000", "--host", "0.0.0.0"], "not loopback"),
        (["--pool-size", "0"], "--pool-size 0 must be between 1"),
        (["--network", "maybe"], "on or off"),
        (["--volume", f"{tmp_path}:relative"], "must be absolute"),
        (["--host", "127.0.0.1"], "--host applies to --http only"),
        (["--timeout", "-3"], "positive number of seconds"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_options(argv, {})
