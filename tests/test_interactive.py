"""``InteractiveBox``, ``SyncInteractiveBox``, ``boxlite shell`` and ``boxlite run -it``, each in
a real pseudo-terminal: a driver program (a separate interpreter, its own terminal from
``pexpect``) attaches a real busybox box's shell, and the test types into it as a person would.
The driver compares the terminal's modes (``termios.tcgetattr``) before and after, and says
whether raw mode was on while attached; the CLI's terminal is compared with ``stty -g``.
Without a terminal, the piped mode is checked byte for byte."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boxlite
import pexpect
import pytest
from boxlite.errors import BoxStoppedError, InvalidOptionError
from local_registry import LocalRegistry
from test_cli_boxes import qemu_processes

#: The program attached to a terminal: ``driver.py ROOTFS MODE``. Status lines go to stderr
#: (the same terminal under pexpect; kept apart from stdout in the piped modes).
DRIVER = r"""
import asyncio, os, signal, sys, termios
import boxlite

ROOTFS, MODE = sys.argv[1], sys.argv[2]


def say(text):
    os.write(2, f"\r\n{text}\r\n".encode())


def modes():
    return termios.tcgetattr(0) if os.isatty(0) else None


async def main():
    before = modes()
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=os.environ["BOXLITE_HOME"]))
    shell = "/bin/cat" if MODE == "pipe-cat" else "/bin/sh"
    try:
        async with boxlite.InteractiveBox(rootfs_path=ROOTFS, shell=shell, memory_mib=256, runtime=runtime) as box:
            say(f"RAW {modes() != before} TTY {box.tty}")
            if MODE == "exec":
                result = await box.exec("sh", "-c", "echo from-exec $((20 + 3))")
                say(f"EXEC {result.stdout.strip()} {result.exit_code}")
            elif MODE == "raise":
                raise RuntimeError("boom")
            elif MODE == "cancel":
                try:
                    await asyncio.wait_for(box.wait(), 3)
                except asyncio.TimeoutError:
                    say(f"CANCELLED RESTORED {modes() == before}")
                    return
            elif MODE == "die":
                os.kill(box.box.info().vmm_pid, signal.SIGKILL)
                try:
                    await box.wait()
                except boxlite.BoxliteError as e:
                    say(f"DIED {type(e).__name__} RESTORED {modes() == before}")
                    return
            await box.wait()
            say(f"EXIT CODE {box.exit_code}")
    except RuntimeError as e:
        say(f"CAUGHT {e}")
    except boxlite.errors.HangupError as e:
        say(f"HUNG UP {type(e).__name__}")
    finally:
        say(f"MODES RESTORED {modes() == before}")


def sync_main():
    before = modes()
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=os.environ["BOXLITE_HOME"]))
    with boxlite.SyncInteractiveBox(rootfs_path=ROOTFS, memory_mib=256, runtime=runtime) as box:
        say(f"RAW {modes() != before} TTY {box.tty}")
        box.wait()
        say(f"EXIT CODE {box.exit_code}")
    say(f"MODES RESTORED {modes() == before}")


sync_main() if MODE == "sync" else asyncio.run(main())
"""

#: busybox ash's prompt (it also asks the terminal for the cursor position, which nobody answers).
PROMPT = r"/ # "


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One home for the module: the accelerator probe (a real boot) runs once. Every program
    here stops its boxes: a VM of this home still running afterwards is killed, and an error."""
    home = tmp_path_factory.mktemp("interactive-home")
    yield home
    left = qemu_processes(home)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "a VM of the module's home outlived the program that started it"


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("driver") / "driver.py"
    path.write_text(DRIVER)
    return path


def environment(home: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, BOXLITE_HOME=str(home), BOXLITE_LOG="error", **extra)


def spawn(home: Path, args: list[str], **extra: str) -> pexpect.spawn:
    child = pexpect.spawn(
        args[0], args[1:], env=environment(home, **extra), timeout=120, dimensions=(30, 100), echo=True
    )
    child.delaybeforesend = 0.05
    return child


def attached(home: Path, driver: Path, busybox: str, mode: str) -> pexpect.spawn:
    """The driver in ``mode`` on a new terminal, once its shell's prompt shows."""
    child = spawn(home, [sys.executable, str(driver), busybox, mode])
    seen: set[int] = set()
    while seen != {0, 1}:  # in either order: the sync box's shell runs on another thread
        seen.add(child.expect(["RAW (True|False) TTY (True|False)", PROMPT]))
        if child.match.re.pattern.startswith(b"RAW"):
            assert child.match.group(1) == b"True", "the host terminal is in raw mode while attached"
            assert child.match.group(2) == b"True", "stdin is a terminal, so the shell runs on one in the box"
    return child


def ended(child: pexpect.spawn) -> None:
    child.expect("MODES RESTORED (True|False)")
    assert child.match.group(1) == b"True", "the terminal's modes are back after the session"
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before


def test_typed_commands_run_in_the_box_and_exit_gives_the_shells_code(home: Path, driver: Path, busybox: str) -> None:
    child = attached(home, driver, busybox, "shell")
    child.sendline("echo typed $((6 * 7)); test -t 0 && echo stdin-is-a-tty")
    child.expect("typed 42")
    child.expect("stdin-is-a-tty")
    child.sendline("cat /etc/hostname >/dev/null; uname -s")
    child.expect("Linux")
    child.sendline("exit 3")
    child.expect("EXIT CODE 3")
    ended(child)


def test_window_size_is_passed_at_start_and_follows_sigwinch(home: Path, driver: Path, busybox: str) -> None:
    child = attached(home, driver, busybox, "shell")
    child.sendline("stty size")
    child.expect("30 100")
    child.setwinsize(41, 123)
    deadline = time.monotonic() + 20
    while True:
        child.sendline("stty size")
        if child.expect(["41 123", r"\d+ \d+"]) == 0:
            break
        assert time.monotonic() < deadline, "the box's terminal never took the new size"
        time.sleep(0.5)
    child.sendline("exit")
    child.expect("EXIT CODE 0")
    ended(child)


def test_ctrl_c_interrupts_the_foreground_command_not_the_session(home: Path, driver: Path, busybox: str) -> None:
    child = attached(home, driver, busybox, "shell")
    # The process that prints the marker becomes the sleep: once it shows, the sleep runs (or
    # is a moment away from it).
    child.sendline("sh -c 'echo sleep-$((1 + 1)); exec sleep 100'")
    child.expect("sleep-2")
    time.sleep(0.5)
    started = time.monotonic()
    child.sendcontrol("c")
    child.expect(PROMPT, timeout=30)
    assert time.monotonic() - started < 30, "Ctrl-C reached the sleep in the box"
    child.sendline("echo status=$?")
    child.expect("status=130")
    child.sendline("echo still-here")
    child.expect("still-here")
    child.sendline("exit 0")
    child.expect("EXIT CODE 0")
    ended(child)


def test_exec_works_beside_the_shell_and_ctrl_d_ends_it(home: Path, driver: Path, busybox: str) -> None:
    child = spawn(home, [sys.executable, str(driver), busybox, "exec"])
    child.expect("RAW True")
    child.expect("EXEC from-exec 23 0")  # before or after the shell's first prompt
    child.sendline("echo shell-after-exec")
    child.expect("shell-after-exec")
    child.expect(PROMPT)
    child.sendcontrol("d")
    child.expect("EXIT CODE 0")
    ended(child)


def test_an_exception_while_attached_restores_the_terminal(home: Path, driver: Path, busybox: str) -> None:
    child = spawn(home, [sys.executable, str(driver), busybox, "raise"])
    child.expect("RAW True")
    child.expect("CAUGHT boom")
    ended(child)


def test_a_cancelled_wait_restores_the_terminal_at_once(home: Path, driver: Path, busybox: str) -> None:
    child = attached(home, driver, busybox, "cancel")
    child.expect("CANCELLED RESTORED (True|False)")
    assert child.match.group(1) == b"True", "restored when wait() was cancelled, before the box stopped"
    ended(child)


def test_the_box_dying_under_the_shell_restores_the_terminal(home: Path, driver: Path, busybox: str) -> None:
    child = spawn(home, [sys.executable, str(driver), busybox, "die"])
    child.expect("RAW True")
    child.expect(r"DIED (\w+) RESTORED (True|False)")
    assert child.match.group(1) == b"BoxDiedError", child.match.group(0)
    assert child.match.group(2) == b"True", "restored when the box died"
    ended(child)


def test_a_terminal_hanging_up_ends_the_session_and_stops_the_box(home: Path, driver: Path, busybox: str) -> None:
    # SIGHUP (the window closed) used to end the process at once and leave the VM running.
    child = attached(home, driver, busybox, "shell")
    child.sendline("sleep 1000")
    time.sleep(1)
    child.kill(signal.SIGHUP)
    child.expect("HUNG UP HangupError")
    ended(child)
    assert qemu_processes(home) == [], "the box stopped with the session"


def test_boxlite_shell_ends_on_a_hangup_with_129_and_stops_its_box(home: Path, busybox: str) -> None:
    child = spawn(home, [sys.executable, "-m", "boxlite", "shell", "-m", "256m", busybox])
    child.expect(PROMPT)
    child.sendline("sleep 1000")
    time.sleep(1)
    child.kill(signal.SIGHUP)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 129, (child.exitstatus, child.signalstatus, child.before)
    assert qemu_processes(home) == [], "the box stopped with the session"


def test_sync_interactive_box_in_a_terminal(home: Path, driver: Path, busybox: str) -> None:
    child = attached(home, driver, busybox, "sync")
    child.sendline("echo sync $((40 + 2)); stty size")
    child.expect("sync 42")
    child.expect("30 100")
    child.setwinsize(35, 90)  # from the library's loop thread, the size is polled
    deadline = time.monotonic() + 20
    while True:
        child.sendline("stty size")
        if child.expect(["35 90", r"\d+ \d+"]) == 0:
            break
        assert time.monotonic() < deadline, "the box's terminal never took the new size"
        time.sleep(0.5)
    child.sendline("exit 7")
    child.expect("EXIT CODE 7")
    ended(child)


@pytest.mark.parametrize("source", ["pipe", "file"])
def test_without_a_terminal_stdin_and_stdout_pass_through_byte_for_byte(
    home: Path, driver: Path, busybox: str, source: str, tmp_path: Path
) -> None:
    """From a pipe (read when the event loop says it is readable) and from a regular file
    (which epoll refuses: read in a thread)."""
    payload = bytes(range(256)) * 256 + b"\r\n\x03\x04 no newline at the end"
    data = tmp_path / "stdin.bin"
    data.write_bytes(payload)
    with data.open("rb") as file:
        done = subprocess.run(
            [sys.executable, str(driver), busybox, "pipe-cat"],
            input=payload if source == "pipe" else None,
            stdin=None if source == "pipe" else file,
            capture_output=True,
            env=environment(home),
            timeout=120,
        )
    assert b"RAW False TTY False" in done.stderr, done.stderr
    assert done.stdout == payload, (len(done.stdout), len(payload))
    assert b"EXIT CODE 0" in done.stderr, done.stderr


def test_without_a_terminal_the_shell_has_no_tty_and_stderr_stays_apart(home: Path, driver: Path, busybox: str) -> None:
    script = b"test -t 0 && echo tty || echo no-tty\necho out\necho err >&2\nexit 5\n"
    done = subprocess.run(
        [sys.executable, str(driver), busybox, "shell"],
        input=script,
        capture_output=True,
        env=environment(home),
        timeout=120,
    )
    assert done.stdout == b"no-tty\nout\n", done.stdout
    assert b"err\n" in done.stderr and b"EXIT CODE 5" in done.stderr, done.stderr


SEED_EXAMPLE = """
import asyncio
from boxlite import InteractiveBox

async def main():
    async with InteractiveBox(image="busybox:latest") as box:
        # Interactive terminal session (like docker exec -it)
        await box.wait()

asyncio.run(main())
"""


def test_seed_interactive_example_runs_as_written(registry: LocalRegistry, home: Path, tmp_path: Path) -> None:
    """The seeds' example, with ``alpine:latest`` replaced by the test registry's busybox."""
    program = tmp_path / "example.py"
    program.write_text(SEED_EXAMPLE)
    child = spawn(home, [sys.executable, str(program)], BOXLITE_REGISTRY_MIRRORS=f"docker.io={registry.url}")
    child.expect(PROMPT, timeout=120)
    child.sendline("echo seed-$((1 + 1))")
    child.expect("seed-2")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def boxlite_in_a_terminal(home: Path, command: str) -> tuple[pexpect.spawn, bytes]:
    """``command`` (a ``boxlite`` command line) run by a host shell on a new terminal that
    prints its modes (``stty -g``) before and after, then the command's exit code; the
    terminal and its modes before."""
    script = f"stty -g; {sys.executable} -m boxlite {command}; echo CODE=$?; stty -g"
    child = spawn(home, ["/bin/bash", "--norc", "--noprofile", "-c", script])
    before = child.readline().strip()
    assert re.fullmatch(rb"[0-9a-f:]+", before), before
    return child, before


def ends_with_modes_kept(child: pexpect.spawn, before: bytes, code: int) -> None:
    child.expect(f"CODE={code}\r\n")
    after = child.readline().strip()
    child.expect(pexpect.EOF)
    assert after == before, "the host terminal's modes are back after the command"


def test_boxlite_shell_attaches_a_shell_and_restores_the_terminal(home: Path, busybox: str) -> None:
    child, before = boxlite_in_a_terminal(home, f"shell -m 256m {busybox}")
    child.expect(PROMPT)
    child.sendline("echo in-the-shell; stty size")
    child.expect("in-the-shell")
    child.expect("30 100")
    child.sendline("exit 9")
    ends_with_modes_kept(child, before, 9)


def test_boxlite_run_it_passes_input_and_the_exit_code(home: Path, busybox: str) -> None:
    command = f"run --rm -it -m 256m {busybox} -- sh -c 'read line; echo got:$line; exit 4'"
    child, before = boxlite_in_a_terminal(home, command)
    child.sendline("hello box")
    child.expect("got:hello box")
    ends_with_modes_kept(child, before, 4)


def cli(home: Path, *args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "boxlite", *args], input=data, capture_output=True, env=environment(home), timeout=120
    )


def test_boxlite_run_i_pipes_stdin_through(home: Path, busybox: str) -> None:
    payload = bytes(range(256)) * 64
    done = cli(home, "run", "--rm", "-i", "-m", "256m", busybox, "--", "cat", data=payload)
    assert done.returncode == 0, done.stderr
    assert done.stdout == payload


def test_boxlite_run_t_runs_on_a_tty_without_our_stdin(home: Path, busybox: str) -> None:
    script = "test -t 1 && echo on-a-tty; cat; echo cat-ended; exit 6"
    done = cli(home, "run", "--rm", "-t", "-m", "256m", busybox, "--", "sh", "-c", script, data=b"not forwarded\n")
    assert done.returncode == 6, done.stderr
    assert b"on-a-tty\r\n" in done.stdout, "a pseudo-terminal (its line ending is CR LF)"
    assert b"not forwarded" not in done.stdout and b"cat-ended" in done.stdout, done.stdout


def test_boxlite_exec_it_attaches_to_a_kept_box(home: Path, busybox: str) -> None:
    started = cli(home, "run", "-d", "--name", "kept-shell", "--network", "none", "-m", "256m", busybox)
    assert started.returncode == 0, started.stderr
    try:
        child, before = boxlite_in_a_terminal(home, "exec -it kept-shell sh")
        child.expect(PROMPT)
        child.sendline("echo kept > /root/mark; test -t 0 && echo exec-on-a-tty")
        child.expect("exec-on-a-tty")
        child.sendline("exit 2")
        ends_with_modes_kept(child, before, 2)
        marked = cli(home, "exec", "kept-shell", "--", "cat", "/root/mark")
        assert marked.stdout == b"kept\n", marked.stderr
    finally:
        cli(home, "rm", "-f", "kept-shell")


async def test_bad_arguments_and_early_wait_say_what_to_do(busybox: str) -> None:
    with pytest.raises(InvalidOptionError, match="path of a shell"):
        boxlite.InteractiveBox(rootfs_path=busybox, shell="")
    with pytest.raises(TypeError, match="shel"):
        boxlite.InteractiveBox(rootfs_path=busybox, shel="/bin/sh")  # type: ignore[call-arg]
    box = boxlite.InteractiveBox(rootfs_path=busybox, tty=False)
    assert box.tty is False and box.shell == "/bin/sh" and box.exit_code is None
    with pytest.raises(BoxStoppedError, match="async with"):
        await box.wait()
