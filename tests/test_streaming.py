"""Executions stream: stdout/stderr as they arrive, stdin both ways, terminals, and output far
larger than memory with bounded host memory (flow control per execution)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import boxlite
import pytest
from boxlite.errors import InvalidOptionError, StdinClosedError


async def test_lines_arrive_while_the_process_runs(shared_box: boxlite.Box) -> None:
    execution = await shared_box.exec("sh", ["-c", "echo one; sleep 1; echo two; echo oops >&2"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    seen: list[tuple[str, float]] = []
    async for line in execution.stdout():
        seen.append((line, loop.time() - started))
    assert [line for line, _ in seen] == ["one\n", "two\n"]
    assert seen[0][1] < seen[1][1] - 0.5, "the first line came before the process slept"
    result = await execution.wait()
    assert result.exit_code == 0
    assert result.stdout == "", "streamed output is not repeated in the result"
    assert result.stderr == "oops\n", "the stream nobody read is in the result"


async def test_stderr_streams_too_and_raw_bytes_survive(shared_box: boxlite.Box) -> None:
    execution = await shared_box.exec("sh", ["-c", "printf '\\377\\000\\n' >&2; printf 'caf\\303\\251\\n'"])
    raw = b"".join([chunk async for chunk in execution.stderr().chunks()])
    assert raw == b"\xff\x00\n"
    assert [line async for line in execution.stdout()] == ["café\n"]
    assert (await execution.wait()).exit_code == 0


async def test_stdin_round_trip(shared_box: boxlite.Box) -> None:
    execution = await shared_box.exec("sh", ["-c", "while read line; do echo got:$line; done; echo done"])
    stdin, stdout = execution.stdin(), execution.stdout()
    await stdin.send_input(b"alpha\n")
    assert await stdout.readline() == b"got:alpha\n", "an answer arrives before stdin closes"
    await stdin.send_input("beta\n")
    assert await stdout.readline() == b"got:beta\n"
    await stdin.close()
    assert await stdout.read() == b"done\n"
    assert (await execution.wait()).exit_code == 0
    with pytest.raises(StdinClosedError):
        await stdin.send_input(b"late\n")


async def test_wait_closes_stdin_nobody_took(shared_box: boxlite.Box) -> None:
    execution = await shared_box.exec("cat")
    result = await asyncio.wait_for(execution.wait(), timeout=30)
    assert result.exit_code == 0 and result.stdout == ""


async def test_large_stdin_is_delivered_whole(shared_box: boxlite.Box) -> None:
    payload = bytes(range(256)) * 40_000  # ~10 MB, ten times the flow-control window
    execution = await shared_box.exec("sh", ["-c", "md5sum | cut -d' ' -f1"])
    stdin = execution.stdin()
    await stdin.send_input(payload)
    await stdin.close()
    import hashlib

    result = await execution.wait()
    assert result.stdout.strip() == hashlib.md5(payload).hexdigest()


async def test_100_mb_of_output_streams_with_bounded_host_memory(shared_box: boxlite.Box) -> None:
    def rss() -> int:
        """The current resident set in bytes (ru_maxrss is a high-water mark: it hides a queue
        that grows while nobody reads and shrinks before the end)."""
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024

    before = rss()
    execution = await shared_box.exec("sh", ["-c", "dd if=/dev/zero bs=1M count=100 2>/dev/null; echo end"])
    stream = execution.stdout().chunks()
    total = len(await anext(stream))
    # Nobody reads for a while, as the box keeps writing: the host must hold it back, not queue it.
    samples = []
    for _ in range(30):
        await asyncio.sleep(0.1)
        samples.append(rss() - before)
    tail = b""
    async for chunk in stream:
        total += len(chunk)
        tail = (tail + chunk)[-4:]
        await asyncio.sleep(0)  # a consumer slower than the producer
        if total % (8 << 20) < len(chunk):
            samples.append(rss() - before)
    assert total == 100 * 1024 * 1024 + 4 and tail == b"end\n"
    assert (await execution.wait()).exit_code == 0
    grown_mib = max(samples) / 2**20
    assert grown_mib < 50, f"RSS grew by {grown_mib:.0f} MiB while streaming 100 MiB"


async def test_a_stalled_reader_does_not_block_other_executions(shared_box: boxlite.Box) -> None:
    # This execution's output is never read while others run: its window fills, its process
    # blocks on the pipe, and the channel keeps serving everyone else.
    flood = await shared_box.exec("sh", ["-c", "yes flood | head -c 20000000; echo end"])
    results = await asyncio.gather(*(shared_box.run("echo", [str(i)]) for i in range(8)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(8)]
    data = await flood.stdout().read()
    assert len(data) == 20_000_004 and data.endswith(b"end\n")
    assert (await flood.wait()).exit_code == 0


async def test_many_streaming_executions_at_once(shared_box: boxlite.Box) -> None:
    async def one(i: int) -> list[str]:
        execution = await shared_box.exec("sh", ["-c", f"for n in 1 2 3; do echo {i}-$n; done"])
        lines = [line async for line in execution.stdout()]
        assert (await execution.wait()).exit_code == 0
        return lines

    results = await asyncio.gather(*(one(i) for i in range(10)))
    assert results == [[f"{i}-{n}\n" for n in (1, 2, 3)] for i in range(10)]


async def test_tty_resize_is_seen_by_stty(shared_box: boxlite.Box) -> None:
    execution = await shared_box.exec("sh", ["-c", "stty size; read go; stty size; tty"], tty=True)
    assert execution.tty
    stdout = execution.stdout()
    assert await stdout.readline() == b"24 80\r\n"
    await execution.resize_tty(40, 120)
    await execution.stdin().send_input(b"go\n")
    rest = (await stdout.read()).decode()
    assert "40 120" in rest and "/dev/pts/" in rest, rest
    assert (await execution.wait()).exit_code == 0


async def test_tty_close_sends_end_of_file(shared_box: boxlite.Box) -> None:
    execution = await shared_box.exec("cat", tty=True)
    stdin = execution.stdin()
    await stdin.send_input(b"typed\n")
    await stdin.close()
    result = await asyncio.wait_for(execution.wait(), timeout=30)
    assert result.exit_code == 0
    assert "typed" in result.stdout


async def test_resize_of_a_non_tty_execution_is_an_error(shared_box: boxlite.Box) -> None:
    execution = await shared_box.exec("true")
    with pytest.raises(InvalidOptionError, match="tty=True"):
        await execution.resize_tty(40, 120)
    await execution.wait()


async def test_seeds_interactive_shell_example(shared_box: boxlite.Box) -> None:
    """The reference docs' 'Terminal Resizing' example, with an exit so it ends."""
    execution = await shared_box.exec("sh", tty=True)
    await execution.resize_tty(40, 120)
    stdin = execution.stdin()
    await stdin.send_input(b"ls -la /\n")
    await stdin.send_input(b"exit\n")
    lines = [line async for line in execution.stdout()]
    assert any("proc" in line for line in lines), lines
    assert (await execution.wait()).exit_code == 0
