"""The wheel is the product: built, installed into a fresh virtual environment away from the
source tree, it boots a box, also as an unprivileged user (no root needed on the host)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

CORE = REPO / "packages" / "boxlite-core"
NOBODY = 65534

SCRIPT = """
import asyncio, json, os, sys
import boxlite

async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=os.environ["BOXLITE_HOME"]))
    async with boxlite.SimpleBox(rootfs_path=sys.argv[1], memory_mib=256, runtime=runtime) as box:
        result = await box.exec("sh", "-c", "echo hello from $(uname -r) as $(id -u)")
        print(json.dumps({"module": boxlite.__file__, "uid": os.getuid(), "stdout": result.stdout,
                          "accel": box.box.info().accel}))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release wheel of boxlite-core, built from this tree with its guest files."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        ["uv", "build", "--wheel", "--out-dir", str(out), str(CORE)],
        check=True,
        capture_output=True,
        env={**os.environ, "CARGO_TARGET_DIR": str(CORE / "target")},
    )
    (built,) = out.glob("boxlite_core-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv outside the repository, readable by every user, with the wheel installed.

    It lives in a directory of its own under the system's temporary directory, not under
    pytest's ``/tmp/pytest-of-<user>``: pytest resets that one to 0700 whenever a pytest run
    starts, which would hide the venv from the unprivileged user mid-test."""
    base = Path(tempfile.mkdtemp(prefix="boxlite-wheel-venv-"))
    base.chmod(0o755)
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    env_dir = base / "venv"
    subprocess.run(["uv", "venv", "--quiet", "--python", python, str(env_dir)], check=True)
    subprocess.run(
        ["uv", "pip", "install", "--quiet", "--python", str(env_dir / "bin" / "python"), str(wheel)], check=True
    )
    yield env_dir
    shutil.rmtree(base, ignore_errors=True)


def test_wheel_carries_the_guest_files(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "boxlite/_guest/vmlinux" in names
    assert "boxlite/_guest/initramfs.cpio" in names
    assert any(n.startswith("boxlite/_engine") and n.endswith(".so") for n in names)


def _run(venv: Path, layout: Path, home: Path, as_user: int | None) -> dict[str, object]:
    command = [str(venv / "bin" / "python"), "-c", SCRIPT, str(layout)]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "BOXLITE_HOME": str(home), "HOME": str(home)}
    if as_user is not None:
        command = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", *command]
    done = subprocess.run(command, cwd="/", env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_installed_wheel_boots_a_box_away_from_the_source_tree(venv: Path, busybox: str, tmp_path: Path) -> None:
    result = _run(venv, Path(busybox), tmp_path / "home", as_user=None)
    assert str(result["module"]).startswith(str(venv))
    assert str(result["stdout"]).startswith("hello from ")
    assert os.uname().release not in str(result["stdout"])


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="switching to another user needs root; as a non-root user every test already runs unprivileged",
)
def test_an_unprivileged_user_runs_boxes(venv: Path, busybox: str) -> None:
    # The image and home must be reachable by that user: copy the (small) layout out of root's
    # cache, into a directory of its own (not pytest's, which is private to root; see venv).
    shared = Path(tempfile.mkdtemp(prefix="boxlite-unprivileged-"))
    shared.chmod(0o755)
    try:
        layout = shutil.copytree(busybox, shared / "busybox")
        home = shared / "home"
        home.mkdir()
        for path in [layout, *layout.rglob("*"), home]:
            os.chown(path, NOBODY, NOBODY)
        result = _run(venv, layout, home, as_user=NOBODY)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert result["uid"] == NOBODY
    assert str(result["stdout"]).strip().endswith("as 0"), "root inside the box, nobody outside"
    assert result["accel"] == "tcg" or os.access("/dev/kvm", os.W_OK)
