"""The reference documentation's examples, run as written: ``image="python:slim"`` comes from a
real registry on 127.0.0.1 through ``BOXLITE_REGISTRY_MIRRORS``, as an air-gapped user would
set it up, and the program is a separate interpreter with its own ``BOXLITE_HOME``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from local_registry import LocalRegistry

COMPLETE_EXAMPLE = r'''
import asyncio
import boxlite
from boxlite.boxlite import SecurityOptions


async def safe_exec(box, cmd, args=None, timeout=30):
    """Execute with timeout and guaranteed process cleanup."""
    execution = await box.exec(cmd, args or [])
    try:
        result = await asyncio.wait_for(execution.wait(), timeout=timeout)
        return result
    except asyncio.TimeoutError:
        try:
            await execution.kill()
        except Exception:
            pass
        raise


async def main():
    runtime = boxlite.Boxlite.default()

    # Configure box with security and resource limits
    box = await runtime.create(boxlite.BoxOptions(
        image="python:slim",
        cpus=2,
        memory_mib=1024,
        working_dir="/workspace",
        security=SecurityOptions.maximum(),
    ))

    try:
        # Run with timeout protection
        result = await safe_exec(
            box,
            "python",
            ["-c", "print('hello from secure sandbox')"],
            timeout=60,
        )
        print(f"Exit code: {result.exit_code}")

        # Run concurrent tasks safely
        tasks = [
            safe_exec(box, "python", ["-c", "print('task 1')"], timeout=10),
            safe_exec(box, "python", ["-c", "print('task 2')"], timeout=10),
        ]
        results = await asyncio.gather(*tasks, return_exceptions=True)

        for i, r in enumerate(results):
            if isinstance(r, Exception):
                print(f"Task {i} failed: {r}")
            else:
                print(f"Task {i} exit code: {r.exit_code}")

    finally:
        await box.stop()
        await runtime.remove(box.id)


asyncio.run(main())
'''

CONCURRENCY_EXAMPLE = r"""
import asyncio
import boxlite

async def main():
    runtime = boxlite.Boxlite.default()
    from boxlite.boxlite import SecurityOptions
    box = await runtime.create(boxlite.BoxOptions(
        image="python:slim",
        cpus=2,
        memory_mib=1024,
        security=SecurityOptions.maximum(),
    ))

    try:
        # Run agent tools concurrently in the same box
        results = await asyncio.gather(
            box.exec("python", ["-c", "print('task A')"]),
            box.exec("python", ["-c", "print('task B')"]),
            box.exec("python", ["-c", "print('task C')"]),
        )

        for execution in results:
            result = await execution.wait()
            print(f"Exit code: {result.exit_code}")
    finally:
        await box.stop()
        await runtime.remove(box.id)

asyncio.run(main())
"""


def run_example(code: str, registry: LocalRegistry, home: Path) -> str:
    env = dict(os.environ, BOXLITE_HOME=str(home), BOXLITE_REGISTRY_MIRRORS=f"docker.io={registry.url}")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name", ["complete", "concurrency"])
def test_seed_example_runs_as_written(name: str, registry: LocalRegistry, tmp_path: Path) -> None:
    code = COMPLETE_EXAMPLE if name == "complete" else CONCURRENCY_EXAMPLE
    out = run_example(code, registry, tmp_path / "home")
    if name == "complete":
        assert out.splitlines() == ["Exit code: 0", "Task 0 exit code: 0", "Task 1 exit code: 0"], out
    else:
        assert out.splitlines() == ["Exit code: 0"] * 3, out
    assert not any((tmp_path / "home" / "boxes").iterdir()), "the example removed its box"
