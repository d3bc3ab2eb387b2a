"""The shared tool core (``boxlite.tools``) against real boxes: the warm interpreter (fresh and
persistent), timeouts that kill everything, output caps, image collection, shell and files."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import boxlite
import pytest
from boxlite.tools import (
    BoxSandbox,
    ToolResult,
    ToolSandbox,
    ToolSandboxError,
    create_tool_pool,
    resolve_image,
    truncate_output,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

PLOT_CODE = """
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [1, 4, 9])
plt.title("squares")
print("plotted")
"""

# Starts a grandchild that leaves the process group, then spins: the timeout must kill both.
RUNAWAY_CODE = """
import subprocess
subprocess.Popen(["sleep", "1000"], start_new_session=True)
print("spawned", flush=True)
while True:
    pass
"""


async def processes_matching(sandbox: ToolSandbox, needle: str) -> list[str]:
    """Command lines of the box's processes that contain ``needle`` (no ps in minbase: /proc)."""
    script = "for p in /proc/[0-9]*; do tr '\\0\\n' '  ' < $p/cmdline 2>/dev/null; echo; done"
    listing = await sandbox.run_shell(script)
    return [line for line in listing.stdout.splitlines() if needle in line and "/proc/" not in line]


@pytest.fixture(scope="module")
async def fresh(runtime: boxlite.Boxlite, plot_image: str) -> AsyncIterator[ToolSandbox]:
    sandbox = ToolSandbox(plot_image, runtime=runtime, memory_mib=512)
    yield sandbox
    await sandbox.close()


@pytest.fixture(scope="module")
async def persistent(runtime: boxlite.Boxlite, plot_image: str) -> AsyncIterator[ToolSandbox]:
    sandbox = ToolSandbox(plot_image, runtime=runtime, memory_mib=512, persistent=True)
    yield sandbox
    await sandbox.close()


async def test_print_and_final_expression(fresh: ToolSandbox) -> None:
    result = await fresh.run_python("print(6*7)")
    assert (result.exit_code, result.stdout, result.stderr, result.timed_out) == (0, "42\n", "", False)
    assert "exit code: 0\nstdout:\n42\nstderr: (empty)" in result.to_text()
    # Like a notebook cell: the last expression's value is shown.
    assert (await fresh.run_python("x = 20\nx * 2 + 2")).stdout == "42\n"


async def test_fresh_mode_forgets_variables(fresh: ToolSandbox) -> None:
    assert (await fresh.run_python("secret = 7")).success
    result = await fresh.run_python("print(secret)")
    assert result.exit_code == 1
    assert "NameError: name 'secret' is not defined" in result.stderr
    # Only the model's code shows in the traceback, not the interpreter's own frames.
    assert "_interpreter" not in result.stderr and '"<code>", line 1' in result.stderr


async def test_persistent_session_keeps_variables(persistent: ToolSandbox) -> None:
    assert (await persistent.run_python("import math\nsecret = math.factorial(5)")).success
    result = await persistent.run_python("print(secret + 1)")
    assert (result.exit_code, result.stdout) == (0, "121\n")


async def test_failing_code_is_an_ordinary_result(fresh: ToolSandbox) -> None:
    result = await fresh.run_python("import sys\nprint('before')\nsys.exit(3)")
    assert (result.exit_code, result.stdout, result.success) == (3, "before\n", False)
    result = await fresh.run_python("1/0")
    assert result.exit_code == 1 and "ZeroDivisionError" in result.stderr
    syntax = await fresh.run_python("def (:")
    assert syntax.exit_code == 1 and "SyntaxError" in syntax.stderr


async def test_timeout_kills_everything_and_recovers(fresh: ToolSandbox) -> None:
    result = await fresh.run_python("print('started', flush=True)\n" + RUNAWAY_CODE, timeout=5)
    assert result.timed_out and result.exit_code == 124
    # The output so far, which also says that the grandchild ran before the timeout.
    assert result.stdout == "started\nspawned\n"
    assert "timed out: true" in result.to_text()
    assert await processes_matching(fresh, "sleep 1000") == []
    # The spinning child (a fork of the interpreter) is gone with it: no python3 at all is left.
    assert await processes_matching(fresh, "python3") == []
    assert (await fresh.run_python("print(6*7)")).stdout == "42\n"
    assert len(await processes_matching(fresh, "python3")) == 1  # the new warm interpreter


async def test_timeout_restarts_a_persistent_session_and_says_so(persistent: ToolSandbox) -> None:
    assert (await persistent.run_python("kept = 1")).success
    result = await persistent.run_python("while True: pass", timeout=2)
    assert result.timed_out and result.note is not None and "variables" in result.note
    after = await persistent.run_python("print('kept' in globals())")
    assert after.stdout == "False\n"
    assert after.note is not None and "restarted" in after.note
    assert len(await processes_matching(persistent, "python3")) == 1  # only the new interpreter


async def test_matplotlib_figure_and_png_files_come_back_as_images(fresh: ToolSandbox) -> None:
    result = await fresh.run_python(PLOT_CODE, timeout=120)
    assert result.success, result.stderr
    assert result.stdout == "plotted\n"
    assert len(result.images) == 1 and result.images[0].data.startswith(PNG_MAGIC)
    assert result.images[0].path.startswith("/output/figure-")
    # A PNG the code writes into the output folder itself is collected too (only new ones).
    code = (
        "import base64, os\n"
        f"data = base64.b64decode({__import__('base64').b64encode(result.images[0].data)!r})\n"
        "open(os.path.join(os.environ['BOXLITE_OUTPUT_DIR'], 'mine.png'), 'wb').write(data)"
    )
    second = await fresh.run_python(code)
    assert [img.name for img in second.images] == ["mine.png"]
    assert second.images[0].data == result.images[0].data
    assert (await fresh.run_python("print(1)")).images == ()


async def test_huge_output_is_truncated_with_a_marker(fresh: ToolSandbox) -> None:
    result = await fresh.run_python("for i in range(200000): print(f'line {i}')")
    assert result.success and result.stdout_truncated > 1_000_000
    assert len(result.stdout) < 10_200
    assert "characters truncated (output limit 10000 characters)" in result.stdout
    assert result.stdout.startswith("line 0\n") and result.stdout.endswith("line 199999\n")
    shell = await fresh.run_shell("seq 1 100000")
    assert shell.stdout_truncated > 0 and "characters truncated" in shell.stdout


def test_truncate_output_keeps_head_and_tail() -> None:
    text, dropped = truncate_output("a" * 50 + "b" * 100 + "c" * 50, 100)
    assert dropped == 100
    assert text.startswith("a" * 50) and text.endswith("c" * 33)
    assert truncate_output("short", 100) == ("short", 0)


async def test_large_code_goes_through_a_file(fresh: ToolSandbox) -> None:
    code = "data = " + repr("x" * 200_000) + "\nprint(len(data))"
    assert (await fresh.run_python(code)).stdout == "200000\n"


async def test_shell_and_files(fresh: ToolSandbox) -> None:
    shell = await fresh.run_shell("echo out; echo err >&2; exit 5")
    assert (shell.exit_code, shell.stdout, shell.stderr) == (5, "out\n", "err\n")
    assert (await fresh.run_shell("sleep 30", timeout=1)).timed_out
    assert await fresh.write_file("/work/sub/hello.txt", "héllo\n") == len("héllo\n".encode())
    assert await fresh.read_text("/work/sub/hello.txt") == "héllo\n"
    blob = bytes(range(256)) * 600  # binary and larger than one write chunk
    await fresh.write_file("/work/blob.bin", blob)
    assert await fresh.read_file("/work/blob.bin") == blob
    assert "binary file of 153600 bytes" in await fresh.read_text("/work/blob.bin")
    entries = await fresh.list_files("/work")
    assert [(e.name, e.kind) for e in entries] == [("blob.bin", "file"), ("sub", "directory")]
    assert entries[0].size == len(blob)
    with pytest.raises(FileNotFoundError, match="nope"):
        await fresh.read_file("/work/nope")
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        await fresh.list_files("/nope")
    with pytest.raises(NotADirectoryError):
        await fresh.list_files("/work/blob.bin")
    # Files persist in the box between calls; the code sees them.
    assert (await fresh.run_python("print(open('/work/sub/hello.txt').read())")).stdout == "héllo\n\n"


async def test_sync_calls_work_inside_a_running_loop(fresh: ToolSandbox) -> None:
    asyncio.get_running_loop()  # this test runs inside the session's event loop
    assert fresh.run_python_sync("print(6*7)").stdout == "42\n"
    result = await asyncio.to_thread(fresh.run_shell_sync, "echo threaded")
    assert result.stdout == "threaded\n"


async def test_concurrent_calls_on_one_box_are_serialised(fresh: ToolSandbox) -> None:
    # Each call notes when it started and ended, on the guest's clock.
    code = "import time\nstart = time.monotonic()\ntime.sleep(0.3)\nprint({i}, start, time.monotonic())"
    results = await asyncio.gather(*(fresh.run_python(code.format(i=i)) for i in range(4)))
    spans = [r.stdout.split() for r in results]
    assert [int(s[0]) for s in spans] == [0, 1, 2, 3], spans
    ordered = sorted((float(s[1]), float(s[2])) for s in spans)
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert start >= end, f"two calls ran at once in one interpreter: {ordered}"


async def test_interpreter_death_is_reported_and_recovered(fresh: ToolSandbox) -> None:
    # The forked child kills its parent, the warm interpreter.
    result = await fresh.run_python(
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(1)"
    )
    assert isinstance(result, ToolResult) and result.note is not None and "died" in result.note
    assert (await fresh.run_python("print('back')")).stdout == "back\n"


async def test_image_without_python_is_a_clear_error(runtime: boxlite.Boxlite, busybox: str) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    try:
        with pytest.raises(ToolSandboxError, match="no python3"):
            await BoxSandbox(box).run_python("print(1)")
    finally:
        await box.stop()


def test_image_resolution(monkeypatch: pytest.MonkeyPatch, plot_image: str) -> None:
    monkeypatch.delenv("BOXLITE_DEFAULT_IMAGE", raising=False)
    assert resolve_image() == "python:slim"
    assert resolve_image(Path(plot_image)) == plot_image
    monkeypatch.setenv("BOXLITE_DEFAULT_IMAGE", plot_image)
    assert resolve_image() == plot_image
    assert resolve_image("python:3.12-slim") == "python:3.12-slim"
    monkeypatch.setenv("BOXLITE_DEFAULT_IMAGE", "registry.local/py:1")
    assert ToolSandbox().options == boxlite.BoxOptions(image="registry.local/py:1", memory_mib=1024)


def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="max_output_chars"):
        ToolSandbox(max_output_chars=5).options  # noqa: B018
    with pytest.raises(ValueError, match="pool= or box="):
        ToolSandbox(pool=object(), box=object())  # type: ignore[arg-type]


BOOT_ID = "print(open('/proc/sys/kernel/random/boot_id').read().strip(), flush=True)\n"


async def test_pool_gives_concurrent_callers_their_own_warm_boxes(runtime: boxlite.Boxlite, plot_image: str) -> None:
    pool = create_tool_pool(plot_image, runtime=runtime, memory_mib=512, min_idle=2, max_size=2, max_uses=1)
    sandbox = ToolSandbox(pool=pool)
    try:
        await pool.start()
        # Two agents at once: each call holds its lease for a second, so the calls overlap.
        first, second = await asyncio.gather(
            sandbox.run_python(BOOT_ID + "import time; time.sleep(1)\nleak = 1"),
            sandbox.run_python(BOOT_ID + "import time; time.sleep(1)\nopen('/tmp/leak', 'w').write('x')"),
        )
        assert first.success and second.success
        assert first.stdout != second.stdout
        # max_uses=1: the next lease is a fresh box, with neither the variable nor the file.
        third = await sandbox.run_python(BOOT_ID + "import os\nprint('leak' in globals(), os.path.exists('/tmp/leak'))")
        assert third.stdout.splitlines()[1] == "False False"
        assert third.stdout.splitlines()[0] not in (first.stdout.strip(), second.stdout.strip())
    finally:
        await pool.close()


async def test_pool_hands_out_no_broken_box(runtime: boxlite.Boxlite, plot_image: str) -> None:
    # Boxes are reused (max_uses=10), so a box whose interpreter was lost must be dropped.
    pool = create_tool_pool(plot_image, runtime=runtime, memory_mib=512, min_idle=1, max_size=1, max_uses=10)
    sandbox = ToolSandbox(pool=pool)
    try:
        reused = [await sandbox.run_python(BOOT_ID) for _ in range(2)]
        assert reused[0].stdout == reused[1].stdout  # the same box, reused
        timed_out = await sandbox.run_python(BOOT_ID + "while True: pass", timeout=2)
        assert timed_out.timed_out and timed_out.stdout == reused[0].stdout
        after = await sandbox.run_python(BOOT_ID)
        assert after.success and after.stdout != reused[0].stdout
        # A box whose interpreter died between leases fails the health check and is replaced.
        await sandbox.run_shell("kill -9 $(cat /tmp/.boxlite-tools/*/pid)")
        replaced = await sandbox.run_python(BOOT_ID)
        assert replaced.success and replaced.stdout != after.stdout
        assert pool.stats().broken >= 1
    finally:
        await pool.close()


def test_box_options_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXLITE_DEFAULT_IMAGE", raising=False)
    custom = boxlite.BoxOptions(memory_mib=300, security=boxlite.SecurityOptions(max_processes=64))
    options = ToolSandbox(options=custom).options
    assert options is not None and options.image == "python:slim" and options.memory_mib == 300
    assert options.security.max_processes == 64
    assert ToolSandbox("other:1", options=custom).options.image == "other:1"  # type: ignore[union-attr]


async def test_any_pool_works_and_leaks_no_interpreter(runtime: boxlite.Boxlite, plot_image: str) -> None:
    # A plain BoxPool (no warm interpreter prepared): each call starts one and stops it again.
    pool = boxlite.BoxPool(
        boxlite.BoxOptions(image=plot_image, memory_mib=512), runtime=runtime, min_idle=0, max_size=1, max_uses=10
    )
    sandbox = ToolSandbox(pool=pool)
    try:
        assert (await sandbox.run_python("print(6*7)")).stdout == "42\n"
        assert (await sandbox.run_python("print(7*6)")).stdout == "42\n"
        assert await processes_matching(sandbox, "python3") == []
        assert pool.stats().created == 1  # the same box served every call
    finally:
        await pool.close()


def test_a_given_sandbox_excludes_box_options() -> None:
    """Every adapter resolves its sandbox the same way (ToolSandbox.given_or_new)."""
    shared = ToolSandbox(memory_mib=512)
    assert ToolSandbox.given_or_new(shared) is shared
    with pytest.raises(ValueError, match="not both"):
        ToolSandbox.given_or_new(shared, "python:slim")
    fresh = ToolSandbox.given_or_new(None, "registry.local/py:1", memory_mib=768)
    assert fresh.options is not None and (fresh.options.image, fresh.options.memory_mib) == ("registry.local/py:1", 768)
