"""The seeds' spellings of SimpleBox's options (``cpu``, ``memory``, ``disk_size``,
``mounts``) and ``exec(..., background=True)``, on real boxes."""

from __future__ import annotations

import asyncio
import gc
import time
import urllib.error
import urllib.request
from pathlib import Path

import boxlite
import pytest
from boxlite.errors import InvalidOptionError
from boxlite.sync_api import SyncExecution, SyncSimpleBox
from local_registry import free_port


def test_the_seeds_spellings_are_aliases_of_our_options(tmp_path: Path) -> None:
    box = boxlite.SimpleBox(
        image="python:3.11-slim", cpu=2, memory=2048, disk_size=10240, mounts=[(str(tmp_path), "/data", "ro")]
    )
    opts = box.options
    assert (opts.cpus, opts.memory_mib, opts.disk_size_gb) == (2, 2048, 10)
    assert opts.volumes == [(str(tmp_path), "/data", "ro")]
    assert boxlite.SimpleBox(image="x", mounts=[(str(tmp_path), "/d")]).options.volumes == [(str(tmp_path), "/d", "rw")]
    # MB round up to whole GB: the disk is at least as large as asked.
    assert boxlite.SimpleBox(image="x", disk_size=1025).options.disk_size_gb == 2
    assert boxlite.CodeBox(cpu=2, memory=512).options.cpus == 2
    assert SyncSimpleBox(image="x", cpu=2, mounts=[(str(tmp_path), "/d", "ro")]).options.cpus == 2


@pytest.mark.parametrize(
    ("ours", "alias"),
    [
        ({"cpus": 1}, {"cpu": 2}),
        ({"memory_mib": 512}, {"memory": 1024}),
        ({"disk_size_gb": 1}, {"disk_size": 2048}),
        ({"volumes": [("/tmp", "/a")]}, {"mounts": [("/tmp", "/b")]}),
    ],
)
def test_both_spellings_of_one_option_are_a_type_error_naming_both(
    ours: dict[str, object], alias: dict[str, object]
) -> None:
    for kwargs in (ours | alias, alias | ours):
        with pytest.raises(TypeError) as err:
            boxlite.CodeBox(**kwargs)  # type: ignore[arg-type]
        assert f"{next(iter(ours))}=" in str(err.value) and f"{next(iter(alias))}=" in str(err.value), err.value


@pytest.mark.parametrize("value", [0, -1, 1.5, "10G", True])
def test_a_disk_size_that_is_not_a_positive_number_of_mb_is_named(value: object) -> None:
    with pytest.raises(InvalidOptionError, match=r"disk_size=.*positive integer"):
        boxlite.SimpleBox(image="x", disk_size=value)  # type: ignore[arg-type]


async def test_an_alias_out_of_range_keeps_the_engines_error(runtime: boxlite.Boxlite, busybox: str) -> None:
    with pytest.raises(InvalidOptionError, match=r"memory_mib=64.*128 to 65536"):
        async with boxlite.SimpleBox(rootfs_path=busybox, memory=64, runtime=runtime):
            pass


async def test_the_aliases_reach_the_box(runtime: boxlite.Boxlite, python_image: str, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("from the host\n")
    async with boxlite.SimpleBox(
        rootfs_path=python_image,
        cpu=2,
        memory=384,
        disk_size=2048,
        mounts=[(str(tmp_path), "/data", "ro")],
        runtime=runtime,
    ) as box:
        probe = await box.exec(
            "sh", "-c", "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; df -k / | tail -1; cat /data/hello.txt"
        )
        nproc, mem_kib, df, hello = probe.stdout.splitlines()
        assert nproc == "2"
        assert 300 * 1024 < int(mem_kib) <= 384 * 1024, mem_kib
        # disk_size=2048 MB is 2 GB of free space (the default is 4).
        assert 1.5 * 1024 * 1024 < int(df.split()[3]) <= 2 * 1024 * 1024, df
        assert hello == "from the host"
        denied = await box.exec("touch", "/data/new")
        assert denied.exit_code != 0, "mounts=(..., 'ro') is read-only for the box"


def http_get(port: int, timeout: float) -> str:
    """The body at ``/`` of 127.0.0.1:port, retried until it answers or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                body: str = response.read().decode()
                return body
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


async def test_a_background_server_keeps_running_and_stops_with_the_box(
    runtime: boxlite.Boxlite, python_image: str
) -> None:
    port = free_port()
    # The troubleshooting page's call, in a box whose working directory has a page to serve.
    box = boxlite.SimpleBox(
        rootfs_path=python_image, memory=512, ports=[(port, 80)], working_dir="/srv", runtime=runtime
    )
    await box.start()
    try:
        await box.write_file("/srv/index.html", "served from the box\n", parents=True)
        # A server never ends: an exec that waited for it would run into this timeout.
        execution = await asyncio.wait_for(box.exec("python", "-m", "http.server", "80", background=True), 60)
        assert isinstance(execution, boxlite.Execution)
        # Nothing holds the handle any more: the server must keep running.
        del execution
        gc.collect()
        body = await asyncio.to_thread(http_get, port, 120)
        assert body == "served from the box\n"
        ps = await box.exec("sh", "-c", "ps -eo args 2>/dev/null || cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
        assert "http.server" in ps.stdout, ps.stdout
    finally:
        await box.shutdown()
    with pytest.raises((urllib.error.URLError, ConnectionError, TimeoutError)):
        await asyncio.to_thread(http_get, port, 0)


async def test_a_background_handle_can_be_read_waited_and_killed(python_box: boxlite.SimpleBox) -> None:
    done = await python_box.exec("sh", "-c", "sleep 1; echo finished", background=True)
    result = await done.wait()
    assert (result.exit_code, result.stdout) == (0, "finished\n")

    sleeper = await python_box.exec("sleep", "300", background=True)
    await sleeper.kill()
    killed = await asyncio.wait_for(sleeper.wait(), 60)
    assert killed.exit_code != 0


def test_sync_background_exec_returns_a_sync_execution(runtime: boxlite.Boxlite, busybox: str) -> None:
    with SyncSimpleBox(rootfs_path=busybox, memory=256, runtime=runtime) as box:
        execution = box.exec("sh", "-c", "sleep 1; echo background", background=True)
        assert isinstance(execution, SyncExecution)
        assert execution.wait(timeout=60).stdout == "background\n"
        assert box.exec("echo", "foreground").stdout == "foreground\n"
