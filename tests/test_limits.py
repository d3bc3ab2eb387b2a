"""Memory, security options and metrics: OOM gives 137 and the box lives on, SecurityOptions
limits are enforced inside the guest, and the VMM process is confined on the host."""

from __future__ import annotations

import os
from pathlib import Path

import boxlite
import pytest
from boxlite.boxlite import SecurityOptions
from conftest import pid_alive


async def test_oom_kill_gives_137_and_the_box_keeps_working(runtime: boxlite.Boxlite, python_image: str) -> None:
    """The reference docs' 'Memory Limits and OOM' example."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=python_image, memory_mib=256))
    try:
        execution = await box.exec("python", ["-c", "x = bytearray(2**30)"])
        completed = await execution.wait()
        assert completed.exit_code == 137
        again = await box.run("python3", ["-c", "print('still here')"])
        assert again.stdout == "still here\n"
        metrics = await box.metrics()
        assert metrics.mem_total < 256 * 1024 * 1024
    finally:
        await box.stop()


def test_presets_follow_the_reference_documentation() -> None:
    dev, std, top = SecurityOptions.development(), SecurityOptions.standard(), SecurityOptions.maximum()
    assert (dev.jailer_enabled, dev.seccomp_enabled) == (False, False)
    assert (std.jailer_enabled, std.seccomp_enabled, std.max_processes) == (True, True, None)
    assert (top.max_open_files, top.max_file_size, top.max_processes) == (1024, 1 << 30, 100)
    top.max_open_files = 2048  # customisable as the docs show
    top.network_enabled = False
    assert top.max_open_files == 2048 and not top.network_enabled
    with pytest.raises(ValueError):
        top.max_open_files = "many"  # type: ignore[assignment]


@pytest.fixture(scope="module")
async def maximum_box(runtime: boxlite.Boxlite, busybox: str) -> boxlite.Box:
    security = SecurityOptions.maximum()
    security.max_cpu_time = 30
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, security=security))
    yield box  # type: ignore[misc]
    await box.stop()


async def test_limits_apply_inside_the_guest(maximum_box: boxlite.Box) -> None:
    result = await maximum_box.run(
        "sh", ["-c", "ulimit -n; ulimit -f; ulimit -t; cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/pids.max"]
    )
    # ulimit -f counts 512-byte blocks in busybox sh.
    assert result.stdout.split() == ["1024", str((1 << 30) // 512), "30", "100"], result.stdout


async def test_fork_bomb_is_contained_and_the_agent_stays_responsive(maximum_box: boxlite.Box) -> None:
    # It hits pids.max (100): forks fail, the shells give up, and the timeout catches any rest.
    bomb = await maximum_box.run("sh", ["-c", "bomb() { bomb | bomb; }; bomb"], timeout=20)
    assert bomb.exit_code != 0
    assert "fork" in bomb.stderr or "Resource temporarily unavailable" in bomb.stderr
    alive = await maximum_box.run("echo", ["alive"])
    assert alive.stdout == "alive\n"
    # Orphaned members of the bomb's pipelines may outlive its first shell (an execution ends
    # with its process, as in a shell), but never more than its cgroup's pids.max.
    ps = await maximum_box.run("ps", ["-o", "pid,args"])
    left = [line for line in ps.stdout.splitlines() if "bomb()" in line]
    assert len(left) <= 100, len(left)


async def test_file_size_limit(maximum_box: boxlite.Box) -> None:
    security = SecurityOptions(max_file_size=1024 * 1024)
    assert security.max_file_size == 1 << 20
    result = await maximum_box.run("sh", ["-c", "dd if=/dev/zero of=/tmp/big bs=1M count=2000 2>&1; echo rc=$?"])
    assert "rc=0" not in result.stdout or result.exit_code != 0 or "File too large" in result.stdout


@pytest.mark.skipif(
    os.geteuid() != 0, reason="the jailer chroots and drops privileges only when the engine runs as root"
)
async def test_vmm_is_jailed_and_filtered(maximum_box: boxlite.Box) -> None:
    pid = maximum_box.info().vmm_pid
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Seccomp"].strip() == "2", "QEMU runs under its seccomp filter"
    assert fields["Uid"].split()[:2] == ["65534", "65534"], "QEMU dropped to nobody"
    assert os.readlink(f"/proc/{pid}/root").endswith("/jail")
    assert os.listdir(f"/proc/{pid}/root") == [], "the jail is empty"
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert any(line.startswith("Max core file size") and " 0 " in line for line in limits.splitlines())
    # No descriptor of ours leaked: QEMU holds only what it opened itself.
    home = str(Path(maximum_box.info().dir).parent.parent)
    held = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    foreign = [
        target
        for target in held
        if not (
            target.startswith((home, "anon_inode:", "socket:", "pipe:", "/dev/"))
            or target.endswith(("vmlinux", "initramfs.cpio"))
        )
    ]
    assert foreign == [], held


async def test_development_preset_runs_the_vmm_unconfined(runtime: boxlite.Boxlite, busybox: str) -> None:
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, security=SecurityOptions.development())
    )
    try:
        pid = box.info().vmm_pid
        assert pid is not None and pid_alive(pid)
        status = Path(f"/proc/{pid}/status").read_text()
        assert "Seccomp:\t0" in status
    finally:
        await box.stop()


async def test_out_of_range_limits_are_refused(runtime: boxlite.Boxlite, busybox: str) -> None:
    with pytest.raises(boxlite.InvalidOptionError, match="max_open_files=3"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, security=SecurityOptions(max_open_files=3)))


async def test_metrics_report_guest_host_and_stages(shared_box: boxlite.Box, runtime: boxlite.Boxlite) -> None:
    before = await shared_box.metrics()
    await shared_box.run("true")
    after = await shared_box.metrics()
    assert after.execs_started == before.execs_started + 1
    assert 0 < after.mem <= after.mem_total
    assert after.vmm_rss > 0 and after.vmm_cpu_ms > 0
    assert after.processes >= 1 and after.guest_uptime_ms > 0
    assert after.timings["boot_ms"] > 0
    totals = await runtime.metrics()
    assert totals.boxes_running >= 1 and totals.execs_started >= after.execs_started
    assert totals.vmm_rss_bytes >= after.vmm_rss
