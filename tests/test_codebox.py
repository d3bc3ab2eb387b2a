"""``CodeBox`` / ``SyncCodeBox`` on the local Debian + python3 test image (no pip, no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import boxlite
import pytest


@pytest.fixture(scope="module")
async def codebox(runtime: boxlite.Boxlite, python_image: str) -> AsyncIterator[boxlite.CodeBox]:
    async with boxlite.CodeBox(rootfs_path=python_image, memory_mib=512, runtime=runtime) as box:
        yield box


async def test_run_returns_stdout(codebox: boxlite.CodeBox) -> None:
    assert await codebox.run("print(2 + 2)") == "4\n"
    assert await codebox.run("import sys; print(sys.version_info[0])") == "3\n"


async def test_run_shows_the_traceback_on_error(codebox: boxlite.CodeBox) -> None:
    output = await codebox.run("print('before'); 1 / 0")
    assert output.startswith("before\n")
    assert "Traceback (most recent call last)" in output
    assert "ZeroDivisionError: division by zero" in output


async def test_each_run_is_a_new_interpreter_but_files_persist(codebox: boxlite.CodeBox) -> None:
    await codebox.run("x = 41\nopen('/tmp/shared.txt', 'w').write('kept')")
    assert "NameError" in await codebox.run("print(x)")
    assert await codebox.run("print(open('/tmp/shared.txt').read())") == "kept\n"


async def test_run_timeout_kills_the_code(codebox: boxlite.CodeBox) -> None:
    code = (
        "import subprocess, time\n"
        "subprocess.Popen(['sleep', '4242'], start_new_session=True)\n"
        "print('start', flush=True)\n"
        "time.sleep(60)"
    )
    output = await codebox.run(code, timeout=5)
    assert output.startswith("start\n"), "the code and its child ran before the timeout"
    assert "TimeoutError: the code ran longer than 5 s and was killed" in output
    # Neither the interpreter nor the daemon it started is left (no ps in the image: /proc).
    listing = await codebox.exec("sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert "sleep 4242" not in listing.stdout and "time.sleep(60)" not in listing.stdout, listing.stdout


async def test_run_script_runs_a_host_file(codebox: boxlite.CodeBox, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("import platform\nprint('kernel', platform.release().endswith('-boxlite'))\n")
    assert await codebox.run_script(script) == "kernel True\n"
    with pytest.raises(FileNotFoundError, match=r"no script at .*missing\.py"):
        await codebox.run_script(tmp_path / "missing.py")


async def test_install_package_without_pip_fails_clearly(codebox: boxlite.CodeBox) -> None:
    # The test image has no pip (and boxes have no network here): this must fail, and say why.
    with pytest.raises(boxlite.PackageInstallError, match="pip install requests failed") as info:
        await codebox.install_package("requests")
    assert "The image has no pip" in str(info.value)
    with pytest.raises(boxlite.PackageInstallError, match="pip install numpy pandas failed"):
        await codebox.install_packages("numpy", "pandas")
    with pytest.raises(boxlite.InvalidOptionError, match="package names"):
        await codebox.install_packages()
    with pytest.raises(boxlite.InvalidOptionError, match="package names"):
        await codebox.install_package("  ")


def test_default_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXLITE_DEFAULT_IMAGE", raising=False)
    assert boxlite.CodeBox().options.image == "python:slim"
    monkeypatch.setenv("BOXLITE_DEFAULT_IMAGE", "/some/layout")
    assert boxlite.CodeBox().options.image == "/some/layout"
    assert boxlite.CodeBox(image="other:tag").options.image == "other:tag"
    explicit = boxlite.CodeBox(rootfs_path="/layout")
    assert (explicit.options.image, explicit.options.rootfs_path) == (None, "/layout")


def test_sync_codebox_with_the_env_default_image(
    monkeypatch: pytest.MonkeyPatch, runtime: boxlite.Boxlite, python_image: str
) -> None:
    """``BOXLITE_DEFAULT_IMAGE`` set to an OCI layout path boots that image."""
    monkeypatch.setenv("BOXLITE_DEFAULT_IMAGE", python_image)
    with boxlite.SyncCodeBox(memory_mib=512, runtime=runtime) as box:
        assert box.run("print(sum(range(10)))") == "45\n"
        assert box.exec("python3", "-c", "import sys; sys.exit(3)").exit_code == 3
        with pytest.raises(boxlite.PackageInstallError):
            box.install_package("requests")
