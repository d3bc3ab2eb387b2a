"""The ``boxlite`` command against a real registry on 127.0.0.1 and real boxes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import boxlite
from boxlite.cli import ProgressBar
from local_registry import LocalRegistry


def cli(registry: LocalRegistry, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BOXLITE_HOME=str(home), BOXLITE_REGISTRY_MIRRORS=f"docker.io={registry.url}")
    return subprocess.run(
        [sys.executable, "-m", "boxlite", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_pull_images_run_rmi(registry: LocalRegistry, tmp_path: Path) -> None:
    home = tmp_path / "home"
    pulled = cli(registry, home, "pull", "busybox")
    assert pulled.returncode == 0, pulled.stderr
    assert "docker.io/library/busybox:latest" in pulled.stdout and "sha256:" in pulled.stdout
    assert "layers" in pulled.stderr and "downloaded" in pulled.stderr, "progress, one line per layer"
    listed = cli(registry, home, "images")
    assert "docker.io/library/busybox:latest" in listed.stdout
    ran = cli(registry, home, "run", "--rm", "busybox", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (ran.returncode, ran.stdout, ran.stderr.strip().splitlines()[-1]) == (3, "out\n", "err")
    timed = cli(registry, home, "run", "--rm", "--timeout", "1", "busybox", "--", "sleep", "60")
    assert timed.returncode == 124 and "timed out" in timed.stderr
    assert cli(registry, home, "ls").stdout.splitlines() == ["ID  NAME  STATUS  IMAGE"], "run --rm removed its box"
    removed = cli(registry, home, "rmi", "busybox")
    assert removed.returncode == 0 and "freed" in removed.stdout
    missing = cli(registry, home, "rmi", "busybox")
    assert missing.returncode == 1 and "boxlite:" in missing.stderr
    # An image not yet cached is pulled with the same progress before the box starts.
    first = cli(registry, home, "run", "--rm", "layered", "--", "true")
    assert first.returncode == 0, first.stderr
    assert "layered:latest: 3 layers" in first.stderr and "downloaded" in first.stderr, first.stderr
    # doctor checks the configured mirror (and finds it answering) within its bound.
    doctor = cli(registry, home, "doctor", "--json")
    registries = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}["registries"]
    assert registries["data"]["mirrors"] == {"docker.io": [registry.url]}
    assert registries["data"]["reachable"] == [f"{registry.url} (mirror of docker.io)"], registries


async def test_progress_bar_on_a_terminal(registry: LocalRegistry, tmp_path: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    bar = ProgressBar(out)
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path), registry_mirrors={"docker.io": [registry.url]}))
    await runtime.images.pull("layered", progress=bar)
    bar.finish()
    text = out.getvalue()
    assert "100.0%" in text and "layers 3/3" in text, text
