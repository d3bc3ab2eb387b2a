"""Memory, security options and metrics: OOM gives 137 and the box lives on, SecurityOptions
limits are enforced inside the guest, and the VMM process is confined on the host."""

from __future__ import annotations

import asyncio
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


# A subshell starts 300 sleepers, or as many as pids.max lets it, and dies at the first refused
# fork; then, with builtins only (no fork is possible any more), the execution counts its
# cgroup's processes and kills its process group.
SLEEPERS = """
(i=0; while [ $i -lt 300 ]; do sleep 1000 & i=$((i + 1)); done) 2>/dev/null
read -r line < /proc/self/cgroup; cgroup=/sys/fs/cgroup${line#0::}
n=0; while read -r pid; do n=$((n + 1)); done < $cgroup/cgroup.procs
while read -r key value; do [ "$key" = max ] && echo refused=$value; done < $cgroup/pids.events
echo procs=$n
kill -9 0
"""


async def test_an_execution_cannot_start_more_than_pids_max_processes(maximum_box: boxlite.Box) -> None:
    result = await maximum_box.run("sh", ["-c", SLEEPERS], timeout=120)
    assert not result.timed_out, result
    counts = dict(line.split("=") for line in result.stdout.split())
    # pids.max is 100: the shell and at most 99 sleepers, and the limit refused forks.
    assert 90 <= int(counts["procs"]) <= 100, result.stdout
    assert int(counts["refused"]) > 0, result.stdout


# Each execution's own cgroup has the pids controller (its process limit) and not the memory
# controller: its memory counts towards the box's limit in the parent. Code that manages cgroups
# of its own (a container runtime in the box) can still enable the memory controller for them:
# it moves itself into a leaf, as such managers do, and enables it down to its own groups.
NESTED_MEMORY = """
own=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)
echo own=$(tr ' ' , < $own/cgroup.controllers)
mkdir $own/leaf $own/limited && echo $$ > $own/leaf/cgroup.procs
echo +memory > $own/../cgroup.subtree_control && echo +memory > $own/cgroup.subtree_control
echo 16777216 > $own/limited/memory.max && echo limited=$(cat $own/limited/memory.max)
sh -c "echo \\$\\$ > $own/limited/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=64M count=1" 2>/dev/null
echo dd=$?
"""


async def test_executions_cgroups_leave_memory_to_the_box_and_code_can_enable_it(
    runtime: boxlite.Boxlite, busybox: str
) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    try:
        result = await box.run("sh", ["-c", NESTED_MEMORY])
    finally:
        await box.stop()
    lines = dict(line.split("=", 1) for line in result.stdout.split())
    assert lines["own"] == "pids", result
    # The limit the code set in its own group holds: dd's 64 MiB buffer is killed at 16 MiB.
    assert lines["limited"] == "16777216", result
    assert lines["dd"] == "137", result


OWN_CGROUP = "own=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup); "


async def test_an_ended_executions_cgroup_serves_a_later_one_only_as_a_new_one_would(
    runtime: boxlite.Boxlite, busybox: str
) -> None:
    """The agent keeps an ended execution's empty cgroup for a later execution (making and
    removing one per execution costs the exec round trip over a millisecond under emulation),
    with the settings the execution changed back at their defaults; a group the execution left
    anything in (a daemon, groups of its own) is never handed on."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))

    async def run(script: str) -> dict[str, str]:
        result = await box.run("sh", ["-c", OWN_CGROUP + script])
        assert result.exit_code == 0, result
        # The group is released just after the exit is reported.
        await asyncio.sleep(0.5)
        return dict(line.split("=", 1) for line in result.stdout.split())

    try:
        # It lowers its own limits and leaves.
        first = await run("echo 5 > $own/pids.max; echo 0 > $own/cgroup.max.depth; echo own=$own")
        second = await run("echo own=$own pids=$(cat $own/pids.max) depth=$(cat $own/cgroup.max.depth)")
        assert second["own"] == first["own"], "an empty group is kept for the next execution"
        assert (second["pids"], second["depth"]) == ("max", "max"), second
        # It leaves a daemon behind: its group stays with the daemon.
        daemon = await run("sleep 1000 >/dev/null 2>&1 & echo own=$own")
        after_daemon = await run("echo own=$own")
        assert after_daemon["own"] != daemon["own"]
        procs = await box.run("cat", [daemon["own"] + "/cgroup.procs"])
        assert procs.stdout.strip(), "the daemon still runs in its execution's group"
        # It makes a group of its own under its group: not handed on either.
        nested = await run("mkdir $own/sub; echo own=$own")
        after_nested = await run("echo own=$own")
        assert after_nested["own"] != nested["own"]
    finally:
        await box.stop()


@pytest.fixture(scope="module")
async def limited_box(runtime: boxlite.Boxlite, busybox: str) -> boxlite.Box:
    """A box whose processes may write files of at most 1 MiB and map at most 64 MiB."""
    security = SecurityOptions(max_file_size=1 << 20, max_memory=64 << 20)
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, security=security))
    yield box  # type: ignore[misc]
    await box.stop()


async def test_file_size_limit(limited_box: boxlite.Box) -> None:
    # 32 writes of 64 KiB: the 17th would pass 1 MiB and fails (EFBIG, SIGXFSZ); the file stops there.
    result = await limited_box.run("dd", ["if=/dev/zero", "of=/tmp/big", "bs=64k", "count=32"])
    assert result.exit_code != 0, result
    size = await limited_box.run("stat", ["-c", "%s", "/tmp/big"])
    assert size.stdout == f"{1 << 20}\n", (result, size)
    # Under the limit, writing works.
    small = await limited_box.run("dd", ["if=/dev/zero", "of=/tmp/small", "bs=64k", "count=15"])
    assert small.exit_code == 0, small


async def test_max_memory_limits_every_process(limited_box: boxlite.Box) -> None:
    # dd allocates its block: 1 MiB fits under RLIMIT_AS (64 MiB), 96 MiB does not.
    fits = await limited_box.run("dd", ["if=/dev/zero", "of=/dev/null", "bs=1M", "count=1"])
    assert fits.exit_code == 0, fits
    too_big = await limited_box.run("dd", ["if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"])
    assert too_big.exit_code != 0, too_big
    limit = await limited_box.run("sh", ["-c", "ulimit -v"])
    assert limit.stdout == f"{64 << 10}\n", limit


def vmm_status(pid: int) -> dict[str, str]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in status.splitlines() if ":" in line)}


async def test_vmm_is_filtered_has_no_core_dumps_and_none_of_our_descriptors(
    runtime: boxlite.Boxlite, busybox: str, tmp_path: Path
) -> None:
    # A descriptor this process holds open, inheritable, while it starts the VMM.
    marker = tmp_path / "not-for-the-vmm"
    fd = os.open(marker, os.O_CREAT | os.O_RDWR)
    os.set_inheritable(fd, True)
    try:
        box = await runtime.create(
            boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, security=SecurityOptions.maximum())
        )
    finally:
        os.close(fd)
    try:
        pid = box.info().vmm_pid
        assert pid is not None
        assert vmm_status(pid)["Seccomp"] == "2", "QEMU runs under its seccomp filter"
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert any(line.startswith("Max core file size") and " 0 " in line for line in limits.splitlines())
        # QEMU holds only what it opened itself: its box's files, the base disk, the guest files,
        # and, restored from the boot cache, that snapshot's memory and disk.
        box_dir = box.info().dir
        held = [os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")]
        assert not any(str(marker) in target for target in held), held
        foreign = [
            target
            for target in held
            if not (
                target.startswith(
                    (
                        box_dir,
                        str(runtime.home / "images" / "disks"),
                        str(runtime.home / "snapshots"),
                        "anon_inode:",
                        "socket:",
                        "pipe:",
                    )
                )
                or target in ("/dev/null", "/dev/kvm", "/dev/urandom", "/dev/net/tun")
                or target.endswith(("/vmlinux", "/initramfs.cpio"))
            )
        ]
        assert foreign == [], held
    finally:
        await box.stop()


@pytest.mark.skipif(
    os.geteuid() != 0, reason="the jailer chroots and drops privileges only when the engine runs as root"
)
async def test_vmm_is_jailed_as_nobody_in_an_empty_directory(maximum_box: boxlite.Box) -> None:
    pid = maximum_box.info().vmm_pid
    assert pid is not None
    assert vmm_status(pid)["Uid"].split()[:2] == ["65534", "65534"], "QEMU dropped to nobody"
    assert os.readlink(f"/proc/{pid}/root") == str(Path(maximum_box.info().dir) / "jail")
    assert os.listdir(f"/proc/{pid}/root") == [], "the jail is empty"


def default_vmm(box: boxlite.Box) -> int:
    pid = box.info().vmm_pid
    assert pid is not None and pid_alive(pid)
    return pid


async def test_the_default_preset_runs_the_vmm_under_seccomp(shared_box: boxlite.Box) -> None:
    assert vmm_status(default_vmm(shared_box))["Seccomp"] == "2", "the default preset (standard) filters QEMU"


async def test_the_vmm_runs_in_its_own_process_group(shared_box: boxlite.Box) -> None:
    """A Ctrl-C meant for the Python program does not reach the VMs."""
    pid = default_vmm(shared_box)
    assert os.getpgid(pid) == pid and os.getpgid(pid) != os.getpgid(0)


async def test_the_vmm_gets_none_of_our_environment(shared_box: boxlite.Box) -> None:
    environ = Path(f"/proc/{default_vmm(shared_box)}/environ").read_bytes().split(b"\0")
    assert [e.split(b"=")[0] for e in environ if e] == [b"PATH"], environ


@pytest.mark.skipif(os.geteuid() != 0, reason="only root jails the VMM, so only root can keep one out of the jail")
async def test_a_box_with_volumes_runs_its_vmm_outside_the_jail(
    runtime: boxlite.Boxlite, busybox: str, tmp_path: Path
) -> None:
    """QEMU's 9p server reaches a volume by path, so such a VMM is not chrooted (it stays filtered)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, volumes=[(str(shared), "/mnt/shared")])
    )
    try:
        pid = box.info().vmm_pid
        assert pid is not None
        assert os.readlink(f"/proc/{pid}/root") == "/"
        assert vmm_status(pid)["Seccomp"] == "2"
        written = await box.run("sh", ["-c", "echo from-the-box > /mnt/shared/out.txt"])
        assert written.exit_code == 0, written
        assert (shared / "out.txt").read_text() == "from-the-box\n"
    finally:
        await box.stop()


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
