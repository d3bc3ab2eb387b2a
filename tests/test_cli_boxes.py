"""The ``boxlite`` command's box and host commands, each through the real program (a subprocess
on its own ``BOXLITE_HOME``, real VMs): ``doctor``, ``info``, and a kept box taken through
``run -d``, ``exec``, ``cp``, ``inspect``, ``ps``, ``stats``, ``logs``, ``stop``, ``restart``,
``create``/``start`` and ``rm``, with no VM of that home left running afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from boxlite._install import install_hint
from boxlite.cli._common import UsageError, parse_copy_end, parse_publish, parse_volume
from boxlite.cli.boxes import parse_memory
from conftest import pid_alive
from netlab import free_port


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One home for the module: the accelerator probe (a real boot) runs once."""
    home = tmp_path_factory.mktemp("cli-home")
    yield home
    assert qemu_processes(home) == [], "a VM of the CLI's home is still running"


def boxlite(home: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BOXLITE_HOME=str(home), BOXLITE_LOG="error")
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "boxlite", *args], env=env, capture_output=True, text=True, timeout=300
    )


def qemu_processes(home: Path) -> list[int]:
    """Process ids of QEMU processes whose command line names ``home``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmdline and str(home) in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_doctor_reports_every_check_and_boots_once(cli_home: Path) -> None:
    human = boxlite(cli_home, "doctor")
    assert human.returncode == 0, human.stdout + human.stderr
    for name in ("qemu", "qemu-img", "passt", "e2fsprogs", "guest files", "/dev/kvm", "BOXLITE_HOME", "accelerator"):
        assert f"] {name}: " in human.stdout, (name, human.stdout)
    assert "QEMU emulator version" in human.stdout
    assert "test boot: kernel and agent up in" in human.stdout
    assert human.stdout.rstrip().endswith("boxes can run on this host")

    report = boxlite(cli_home, "doctor", "--json")
    assert report.returncode == 0, report.stderr
    parsed = json.loads(report.stdout)
    checks = {c["name"]: c for c in parsed["checks"]}
    assert parsed["ok"] is True
    assert checks["test boot"]["status"] == "ok" and checks["test boot"]["data"]["ms"] > 0
    assert checks["guest files"]["data"]["kernel_release"]
    assert checks["accelerator"]["data"]["accel"] in ("kvm", "hvf", "whpx", "tcg")
    assert checks["registries"]["status"] in ("ok", "warn"), "an unreachable registry does not stop boxes"
    assert all(c["fix"] for c in parsed["checks"] if c["status"] in ("warn", "fail"))


def test_doctor_without_qemu_on_path_fails_and_names_the_package(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    human = boxlite(tmp_path / "home", "doctor", path=str(empty))
    assert human.returncode == 1, human.stdout
    assert "[FAIL] qemu: qemu-system-" in human.stdout
    assert install_hint("qemu") in human.stdout
    assert "boxes cannot run on this host" in human.stdout

    report = boxlite(tmp_path / "home", "doctor", "--json", path=str(empty))
    assert report.returncode == 1
    checks = {c["name"]: c for c in json.loads(report.stdout)["checks"]}
    assert checks["qemu"]["status"] == "fail" and "install" in checks["qemu"]["fix"]
    assert checks["passt"]["status"] == "fail" and "passt" in checks["passt"]["fix"]
    assert checks["test boot"]["status"] == "skip", "no boot is tried without QEMU"


def test_install_hints_follow_os_release() -> None:
    debian = {"ID": "ubuntu", "ID_LIKE": "debian"}
    assert install_hint("qemu", debian).endswith("`sudo apt-get install qemu-system-x86`") or "qemu-system-arm" in (
        install_hint("qemu", debian)
    )
    assert "`sudo dnf install passt`" in install_hint("passt", {"ID": "fedora"})
    assert "`sudo pacman -S passt`" in install_hint("passt", {"ID": "arch"})
    unknown = install_hint("passt", {"ID": "plan9"})
    assert "apt-get" in unknown and "dnf" in unknown and "pacman" in unknown


def test_info_prints_versions_and_paths(cli_home: Path) -> None:
    shown = boxlite(cli_home, "info", "--json")
    assert shown.returncode == 0, shown.stderr
    facts = json.loads(shown.stdout)
    assert facts["home"] == str(cli_home)
    assert facts["qemu"].startswith("QEMU emulator version")
    assert facts["guest_kernel"] and Path(facts["guest_dir"], "vmlinux").is_file()
    assert facts["accelerator"].split()[0] in ("kvm", "hvf", "whpx", "tcg")
    human = boxlite(cli_home, "info")
    assert human.returncode == 0 and "guest_kernel" in human.stdout and facts["guest_kernel"] in human.stdout


def test_flags_are_parsed_as_docker_does() -> None:
    assert parse_volume("./data:/data:ro") == ("./data", "/data", "ro")
    assert parse_volume("/src:/src") == ("/src", "/src", "rw")
    assert parse_publish("8080:80") == (8080, 80, "tcp")
    assert parse_publish("5353:53/udp") == (5353, 53, "udp")
    assert parse_memory("512") == 512 and parse_memory("1g") == 1024 and parse_memory("256m") == 256
    assert parse_copy_end("work:/root/x").box == "work"
    assert parse_copy_end("./a:b").box is None, "a host path with a slash before the colon stays a host path"
    for bad in (lambda: parse_volume("data"), lambda: parse_publish("80"), lambda: parse_memory("lots")):
        with pytest.raises(UsageError):
            bad()


def test_bad_command_lines_fail_before_any_box_starts(cli_home: Path, busybox: str) -> None:
    cases = {
        ("run", "-d", "-it", busybox): "a detached box has no terminal",
        ("run", "-d", "--rm", busybox): "drop --rm",
        ("run", "-d", busybox, "--", "ls"): "boxlite exec BOX",
        ("run", busybox): "give the command",
        ("run", "-v", "/no/such/dir:/x", busybox, "--", "true"): "is not a directory",
        ("run", "-p", "eighty", busybox, "--", "true"): "HOST_PORT:GUEST_PORT",
        ("run", "-e", "=x", busybox, "--", "true"): "KEY=VALUE",
        ("cp", "./a", "./b"): "exactly one side names a box",
    }
    for argv, words in cases.items():
        done = boxlite(cli_home, *argv)
        assert done.returncode == 2 and words in done.stderr, (argv, done.stderr)
    assert boxlite(cli_home, "ls").stdout.splitlines() == ["ID  NAME  STATUS  IMAGE"]


def test_a_kept_box_through_every_command(cli_home: Path, busybox: str, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from the host\n")
    port = free_port()
    started = boxlite(cli_home, "run", "-d", "--name", "work", "-e", "GREETING=hi", "-v", f"{shared}:/mnt/shared:ro",
                      "-m", "256m", "-p", f"{port}:8080", busybox)  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert started.stdout == "work\n" and "started in" in started.stderr
    assert "WARN" not in started.stderr, started.stderr
    try:
        # The command that started it has ended; the box runs on.
        info = json.loads(boxlite(cli_home, "inspect", "work").stdout)[0]
        assert (info["name"], info["status"], info["auto_remove"], info["memory_mib"]) == (
            "work",
            "running",
            False,
            256,
        )
        assert pid_alive(info["vmm_pid"])

        # Its port forward works after the command that published it ended (busybox httpd forks
        # into the background, so the exec returns).
        serve = "mkdir -p /www && echo detached > /www/index.html && httpd -p 8080 -h /www"
        assert boxlite(cli_home, "exec", "work", "--", "sh", "-c", serve).returncode == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=30) as page:
            assert page.read() == b"detached\n"

        echoed = boxlite(cli_home, "exec", "work", "--", "sh", "-c", "echo $GREETING; cat /mnt/shared/in.txt; exit 7")
        assert (echoed.returncode, echoed.stdout) == (7, "hi\nfrom the host\n"), echoed.stderr
        read_only = boxlite(cli_home, "exec", "work", "--", "sh", "-c", "echo x > /mnt/shared/new")
        assert read_only.returncode != 0 and not (shared / "new").exists()
        with_env = boxlite(cli_home, "exec", "-e", "X=1", "-w", "/tmp", "work", "--", "sh", "-c", "echo $X $PWD")
        assert with_env.stdout == "1 /tmp\n", with_env.stderr

        payload = tmp_path / "payload.txt"
        payload.write_text("copied in\n")
        assert boxlite(cli_home, "cp", str(payload), "work:/root/").returncode == 0
        assert boxlite(cli_home, "exec", "work", "--", "cat", "/root/payload.txt").stdout == "copied in\n"
        boxlite(cli_home, "exec", "work", "--", "sh", "-c", "echo made in the box > /root/out.txt")
        out = tmp_path / "out.txt"
        copied = boxlite(cli_home, "cp", "work:/root/out.txt", str(out))
        assert copied.returncode == 0, copied.stderr
        assert out.read_text() == "made in the box\n"

        # One process uses a running box at a time: a second command while one runs is refused.
        env = dict(os.environ, BOXLITE_HOME=str(cli_home), BOXLITE_LOG="error")
        holder = subprocess.Popen(
            [sys.executable, "-m", "boxlite", "exec", "work", "--", "sh", "-c", "echo holding; sleep 8"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        busy = boxlite(cli_home, "exec", "work", "--", "true")
        assert holder.wait(timeout=60) == 0
        assert busy.returncode == 2 and "another boxlite command" in busy.stderr, busy.stderr

        ps = boxlite(cli_home, "ps").stdout.splitlines()
        assert ps[0].split()[:5] == ["ID", "NAME", "STATUS", "IMAGE", "UPTIME"] and len(ps) == 2
        assert "work" in ps[1] and "running" in ps[1] and "MiB /" in ps[1], ps
        stats = boxlite(cli_home, "stats", "work")
        assert stats.returncode == 0 and "work" in stats.stdout and "%" in stats.stdout, stats.stderr
        assert boxlite(cli_home, "logs", "--all", "work").returncode == 0

        refused = boxlite(cli_home, "rm", "work")
        assert refused.returncode == 2 and "boxlite rm -f work" in refused.stderr
        assert boxlite(cli_home, "stop", "work").returncode == 0
        assert not pid_alive(info["vmm_pid"])
        assert "stopped" in boxlite(cli_home, "ps", "-a").stdout
        stopped = boxlite(cli_home, "exec", "work", "--", "true")
        assert stopped.returncode == 2 and "boxlite start work" in stopped.stderr
        assert boxlite(cli_home, "restart", "work").returncode == 0
        kept = boxlite(cli_home, "exec", "work", "--", "cat", "/root/payload.txt")
        assert kept.stdout == "copied in\n", "a kept box keeps its files across stop and start"
        assert boxlite(cli_home, "restart", "work").returncode == 0, "restart of a running box"
    finally:
        removed = boxlite(cli_home, "rm", "-f", "work")
    assert removed.returncode == 0, removed.stderr
    assert boxlite(cli_home, "ls").stdout.splitlines() == ["ID  NAME  STATUS  IMAGE"]
    assert qemu_processes(cli_home) == []


def test_create_start_and_run_without_rm_keep_the_box(cli_home: Path, busybox: str) -> None:
    created = boxlite(cli_home, "create", "--name", "later", busybox)
    assert created.returncode == 0 and created.stdout == "later\n", created.stderr
    ran = boxlite(cli_home, "run", "--name", "once", busybox, "--", "sh", "-c", "echo ran")
    assert (ran.returncode, ran.stdout) == (0, "ran\n"), ran.stderr
    try:
        statuses = dict(line.split()[1:3] for line in boxlite(cli_home, "ls").stdout.splitlines()[1:])
        assert statuses == {"later": "stopped", "once": "stopped"}
        assert boxlite(cli_home, "start", "later").returncode == 0
        assert boxlite(cli_home, "exec", "later", "--", "true").returncode == 0
        assert qemu_processes(cli_home), "a started box runs on after `boxlite start`"
    finally:
        assert boxlite(cli_home, "rm", "-f", "later", "once").returncode == 0
    assert qemu_processes(cli_home) == []
    missing = boxlite(cli_home, "inspect", "later")
    assert missing.returncode == 1 and "later" in missing.stderr


async def test_a_missing_qemu_error_names_the_install_command_for_this_host(
    busybox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boxlite as bl

    monkeypatch.setenv("BOXLITE_QEMU", str(tmp_path / "no-qemu"))
    runtime = bl.Boxlite(bl.Options(home_dir=str(tmp_path / "home")))
    with pytest.raises(bl.QemuNotFoundError) as raised:
        await runtime.create(bl.BoxOptions(rootfs_path=busybox, memory_mib=256))
    assert f"On this host: {install_hint('qemu')}" in str(raised.value)


def test_run_publishes_a_port_and_ctrl_c_stops_the_box(cli_home: Path, busybox: str) -> None:
    port = free_port()
    serve = "mkdir -p /www && echo published > /www/index.html && httpd -f -p 8080 -h /www & sleep 120"
    env = dict(os.environ, BOXLITE_HOME=str(cli_home), BOXLITE_LOG="error")
    proc = subprocess.Popen(
        [sys.executable, "-m", "boxlite", "run", "--rm", "-p", f"{port}:8080", busybox, "--", "sh", "-c", serve],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body, deadline = "", time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as answer:
                    body = answer.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert body == "published\n", proc.stderr.read() if proc.poll() is not None and proc.stderr else body
        assert qemu_processes(cli_home)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert qemu_processes(cli_home) == [], "Ctrl-C stopped the box"
    assert boxlite(cli_home, "ls").stdout.splitlines() == ["ID  NAME  STATUS  IMAGE"], "--rm removed it"
