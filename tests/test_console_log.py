"""Host files the guest can grow stay capped: a box flooding its serial console leaves
``console.log`` (and the ``console.log.1`` it rotates into) within the cap, keeps working, and
a crash still reports the end of the console."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import boxlite
import pytest

#: Every test here tries an attack for real and checks the host afterwards (`make audit`).
pytestmark = pytest.mark.hostile

#: The engine's cap per console file (crates/engine/src/logs.rs: CONSOLE_LOG_BYTES).
CONSOLE_CAP = 1 << 20
#: The engine's cap per helper log file (PROCESS_LOG_BYTES).
PROCESS_CAP = 256 << 10
#: What the guest writes to its console: two and a half times the cap, so that it rotates
#: twice. It is one long line: the UART takes ~300 KiB/s under TCG, but only ~30 KiB/s of
#: `yes` output, whose newlines the tty expands and processes byte by byte.
FLOOD_BYTES = 5 * CONSOLE_CAP // 2


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def test_a_console_flood_stays_within_the_cap(runtime: boxlite.Boxlite, busybox: str) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    directory = Path(box.info().dir)
    try:
        flood = (
            f"head -c {FLOOD_BYTES} /dev/zero | tr '\\0' x > /dev/ttyS0;"
            " echo > /dev/ttyS0; echo console-flood-finished > /dev/ttyS0"
        )
        result = await (await box.exec("sh", ["-c", flood])).wait()
        assert result.exit_code == 0, result.stderr
        console = directory / "console.log"
        rotated = directory / "console.log.1"
        assert size(rotated) == CONSOLE_CAP, "the console rotated at the cap"
        assert 0 < size(console) <= CONSOLE_CAP
        for name in ("vmm.log", "vmm.log.1", "passt.log", "passt.log.1"):
            assert size(directory / name) <= PROCESS_CAP, name
        # The box goes on.
        assert (await (await box.exec("echo", ["alive"])).wait()).stdout == "alive\n"
        # A crash message still shows the end of the console.
        pid = box.info().vmm_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        for _ in range(300):
            if box.info().status == "crashed":
                break
            await asyncio.sleep(0.1)
        with pytest.raises(boxlite.BoxDiedError, match="console-flood-finished") as died:
            await box.exec("true")
        assert len(str(died.value)) < 8192
    finally:
        await runtime.remove(box.id, force=True)
