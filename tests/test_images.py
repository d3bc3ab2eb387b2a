"""Root file systems from OCI image layouts: layers, whiteouts, ownership, modes, links and
device nodes as the image states them (built without root), one shared base disk per image."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import boxlite
import pytest

EXPECTED: dict[str, Any] = json.loads((Path(__file__).parent / "images" / "layered_expected.json").read_text())


@pytest.fixture(scope="module")
async def layered_box(runtime: boxlite.Boxlite, images: dict[str, Path]) -> Any:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(images["layered"]), memory_mib=256))
    yield box
    await box.stop()


async def sh(box: boxlite.Box, script: str) -> boxlite.ExecResult:
    return await (await box.exec("sh", ["-c", script])).wait()


async def test_layered_image_matches_the_expected_tree(layered_box: boxlite.Box) -> None:
    # One exec reports everything: a JSON line per path.
    checks = []
    for path, want in EXPECTED["paths"].items():
        p = shlex.quote(path)
        parts = [f"stat -c '{EXPECTED['stat_format']}' {p}"]
        if "content" in want:
            parts.append(f"cat {p} | od -An -tx1 | tr -d ' \\n'")
        if "link_target" in want:
            parts.append(f"readlink {p}")
        if "device" in want:
            parts.append(f"stat -c '%t %T' {p}")
        if "links" in want:
            parts.append(f"stat -c %h {p}")
        if "same_inode_as" in want:
            parts.append(f"stat -c %i {p} {shlex.quote(want['same_inode_as'])} | tr '\\n' ' '")
        checks.append(" ; ".join(f'echo "$({part})"' for part in parts) + " ; echo ---")
    result = await sh(layered_box, "\n".join(checks))
    assert result.exit_code == 0, result.stderr
    blocks = result.stdout.split("---\n")
    for (path, want), block in zip(EXPECTED["paths"].items(), blocks[: len(EXPECTED["paths"])], strict=True):
        lines = block.splitlines()
        stat = lines.pop(0)
        expected_stat = want["stat"]
        if expected_stat.startswith("regular file") and want.get("content") == "":
            expected_stat = expected_stat.replace("regular file", "regular empty file")
        assert stat == expected_stat, path
        if "content" in want:
            assert bytes.fromhex(lines.pop(0)) == want["content"].encode(), path
        if "link_target" in want:
            assert lines.pop(0) == want["link_target"], path
        if "device" in want:
            major, minor = (int(x, 16) for x in lines.pop(0).split())
            assert [major, minor] == want["device"], path
        if "links" in want:
            assert int(lines.pop(0)) == want["links"], path
        if "same_inode_as" in want:
            first, second = lines.pop(0).split()
            assert first == second, path


async def test_whiteouts_hide_lower_layers(layered_box: boxlite.Box) -> None:
    for path in EXPECTED["absent"]:
        result = await sh(layered_box, f"test -e {shlex.quote(path)} || test -L {shlex.quote(path)}")
        assert result.exit_code == 1, f"{path} should not exist"


async def test_symlink_escape_stayed_inside_the_image(layered_box: boxlite.Box) -> None:
    # The layered image is unpacked (the fixture built its base disk) before the host is checked;
    # relative `../..` symlinks and hard links are tried in test_hostile_images.py.
    for path in EXPECTED["absent_on_host"]:
        assert not Path(path).exists(), f"unpacking wrote {path} on the host"
    result = await sh(layered_box, "cat /tmp/boxlite-escape-canary")
    assert result.stdout == "canary\n", "the write through /opt/escape landed inside the image"


async def test_image_config_env_and_working_dir(layered_box: boxlite.Box) -> None:
    result = await sh(layered_box, 'echo "$BOXLITE_TEST_IMAGE $PWD"')
    assert result.stdout == f"layered {EXPECTED['config']['WorkingDir']}\n"


async def test_ownership_is_enforced_in_the_guest(layered_box: boxlite.Box) -> None:
    # The image's owners hold in the guest: only uid 1000 may read its 0600 note in its 0700 directory.
    result = await (await layered_box.exec("cat", ["/data/private/note.txt"], user="1001:1001")).wait()
    assert result.exit_code != 0 and "Permission denied" in result.stderr
    result = await (await layered_box.exec("cat", ["/data/private/note.txt"], user="1000:1000")).wait()
    assert result.stdout == "private\n"


async def test_base_disk_is_built_once_and_shared(runtime: boxlite.Boxlite, busybox: str) -> None:
    disks = runtime.home / "images" / "disks"
    first = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    bases_before = sorted(disks.glob("*.ext4"))
    second = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    try:
        assert sorted(disks.glob("*.ext4")) == bases_before
        bottoms = set()
        for box in (first, second):
            overlay = Path(box.info().dir) / "disk.qcow2"
            chain = json.loads(
                subprocess.run(
                    ["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(overlay)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            # The base disk is the bottom of each box's chain (a box restored from the boot
            # cache builds on that snapshot's disk, which builds on the base).
            bottoms.add(chain[-1]["filename"])
            assert chain[-1]["format"] == "raw" and len(chain) in (2, 3), chain
            # A new box's own disk holds next to nothing: the image stays in the base.
            assert overlay.stat().st_size < 2 * 1024 * 1024
        assert len(bottoms) == 1 and Path(bottoms.pop()) in bases_before
        # Writes stay in each box's own overlay.
        assert (await sh(first, "echo mine > /root/only-here")).exit_code == 0
        assert (await sh(second, "test -e /root/only-here")).exit_code == 1
    finally:
        await first.stop()
        await second.stop()
