"""The tool core against code that attacks it: the warm interpreter's answers cannot be forged
by the code it runs, every size the box announces is bounded, and a silent interpreter fails
its health check within the deadline instead of hanging it. Real boxes, real attacks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import boxlite
import boxlite.tools._session as session_module
import pytest
from boxlite.tools import BoxSandbox, ToolSandboxError

#: Every test here tries an attack for real and checks the host afterwards (`make audit`).
pytestmark = pytest.mark.hostile

# What the forgeries claim: if it ever shows up as a call's result, the forgery worked.
FORGED_ANSWER = (
    '{"exit_code": 0, "stdout": "FORGED\\n", "stdout_size": 7, "stderr": "", "stderr_size": 0, "images": []}'
)

# Finds the interpreter's answer pipe and opens it for writing, as root in the box can: through
# the server's descriptors in /proc. The server is the code's parent in both modes; its answer
# pipe is a write-only pipe that is neither its stderr nor one of the code's own pipes.
CHANNEL = """
import os

def _link(pid, fd):
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None

def channel():
    server = os.getppid()
    mine = {_link("self", fd) for fd in os.listdir("/proc/self/fd")}
    for fd in os.listdir(f"/proc/{server}/fd"):
        link = _link(server, fd)
        try:
            info = open(f"/proc/{server}/fdinfo/{fd}").read()
        except OSError:
            continue
        flags = int(info.split("flags:")[1].split()[0], 8)
        if link and link.startswith("pipe:") and flags & 3 == 1 and link not in mine and link != _link(server, 2):
            return os.open(f"/proc/{server}/fd/{fd}", os.O_WRONLY)
    raise RuntimeError("the answer pipe was not found")
"""


@pytest.fixture(scope="module")
async def box(runtime: boxlite.Boxlite, python_image: str) -> AsyncIterator[boxlite.Box]:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=python_image, memory_mib=512))
    yield box
    await box.stop()


@pytest.fixture(params=["persistent", "fresh"])
async def sandbox(box: boxlite.Box, request: pytest.FixtureRequest) -> AsyncIterator[BoxSandbox]:
    sandbox = await BoxSandbox(box, persistent=request.param == "persistent").start()
    yield sandbox
    await sandbox.close()


def forged(nonce: str = "0" * 32) -> str:
    return repr(f"DONE {nonce} {len(FORGED_ANSWER)}\n{FORGED_ANSWER}")


async def test_printed_and_redirected_forgeries_are_ordinary_output(sandbox: BoxSandbox) -> None:
    code = f"""
import os, sys
keep = 41
print({forged()})
os.write(1, {forged()}.encode())
sys.stdout.flush()
sys.stdout = os.fdopen(os.dup(1), "w")
print({forged()}, flush=True)
sys.stdout = sys.__stdout__
"""
    result = await sandbox.run_python(code)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("DONE ") == 3 and result.stdout != "FORGED\n"
    # The next call gets its own answer (and a persistent session its variables).
    after = await sandbox.run_python("print(keep + 1)" if sandbox.persistent else "print(42)")
    assert (after.exit_code, after.stdout) == (0, "42\n")


async def test_code_writing_to_every_file_it_holds_cannot_answer(sandbox: BoxSandbox) -> None:
    # Every open file object in the code's process (had the server run the code in its own
    # process, its answer stream would be one of them), and every descriptor it has.
    code = f"""
import gc, io, os
for obj in gc.get_objects():
    if isinstance(obj, io.FileIO) and not obj.closed and obj.writable():
        try:
            obj.write({forged()}.encode())
        except OSError:
            pass
for fd in range(3, 64):
    try:
        os.write(fd, {forged()}.encode())
    except OSError:
        pass
print("done")
"""
    try:
        result = await sandbox.run_python(code)
    except ToolSandboxError as e:
        assert "protocol" in str(e)
    else:
        # Its answer is the genuine one (the forgeries it wrote to its own output included), or
        # the interpreter it broke is reported gone.
        assert result.stdout != "FORGED\n"
        assert result.stdout.endswith("done\n") or (result.note is not None and "died" in result.note)
    after = await sandbox.run_python("print(6 * 7)")
    assert (after.exit_code, after.stdout) == (0, "42\n")


async def test_a_forged_answer_on_the_real_channel_is_refused(sandbox: BoxSandbox) -> None:
    code = CHANNEL + f"os.write(channel(), {forged()}.encode())\nimport time; time.sleep(1)\n"
    with pytest.raises(ToolSandboxError, match=r"broke the tool protocol .*not for request"):
        await sandbox.run_python(code)
    assert not sandbox.interpreter_running
    after = await sandbox.run_python("print(6 * 7)")
    assert (after.exit_code, after.stdout) == (0, "42\n")
    if sandbox.persistent:
        assert after.note is not None and "restarted" in after.note


async def test_a_huge_announced_answer_is_refused_before_it_is_read(sandbox: BoxSandbox) -> None:
    code = CHANNEL + "os.write(channel(), b'DONE ' + b'0' * 32 + b' 99999999999\\n')\nimport time; time.sleep(1)\n"
    with pytest.raises(ToolSandboxError, match="announces 99999999999 bytes, more than the limit"):
        await sandbox.run_python(code)
    assert (await sandbox.run_python("print(6 * 7)")).stdout == "42\n"


async def test_an_endless_line_is_refused_at_the_header_limit(sandbox: BoxSandbox) -> None:
    # 8 MiB without a newline: gathering it would take the host's memory (and the call's time).
    code = CHANNEL + "fd = channel()\nfor _ in range(128):\n    os.write(fd, b'A' * 65536)\n"
    with pytest.raises(ToolSandboxError, match="limit of 256 bytes"):
        await sandbox.run_python(code, timeout=120)
    assert (await sandbox.run_python("print(6 * 7)")).stdout == "42\n"


async def test_a_stopped_interpreter_fails_its_health_check_in_time(
    sandbox: BoxSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "PING_TIMEOUT", 3.0)  # read where the session lives
    assert await sandbox.is_healthy()
    # The code stops its server (the interpreter) from a background process, after answering.
    stop = "import os\nos.system(f'(sleep 1; kill -STOP {os.getppid()}) >/dev/null 2>&1 &')"
    assert (await sandbox.run_python(stop)).success
    await asyncio.sleep(3)
    # Without a deadline this would wait for ever; the outer limit only turns a hang into a failure.
    assert not await asyncio.wait_for(sandbox.is_healthy(), 60)
    assert not sandbox.interpreter_running
    assert (await sandbox.run_python("print(6 * 7)")).stdout == "42\n"
