"""Bad input gets a clear error that names the problem and the fix, and leaves nothing behind."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import boxlite
import pytest
from conftest import vmms_under


async def test_missing_qemu_names_the_install_command(
    tmp_path: Path, busybox: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXLITE_QEMU", "/nonexistent/qemu-system-x86_64")
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path)))
    with pytest.raises(boxlite.QemuNotFoundError, match="apt-get install qemu-system-x86"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox))
    assert list((tmp_path / "boxes").iterdir()) == []


async def test_missing_passt_is_a_typed_error_naming_the_install_command(
    tmp_path: Path, busybox: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXLITE_PASST", str(tmp_path / "no-passt-here"))
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path / "home")))
    with pytest.raises(boxlite.PasstNotFoundError) as raised:
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox))
    message = str(raised.value)
    # The problem, and every way out: the package, the variable, a box without a network.
    assert "no-passt-here" in message
    assert "apt-get install passt" in message
    assert "BOXLITE_PASST" in message
    assert "network_enabled=False" in message
    # Raised as InvalidOptionError before; callers catching that still catch it.
    assert isinstance(raised.value, boxlite.InvalidOptionError)
    assert list((tmp_path / "home" / "boxes").iterdir()) == []
    assert vmms_under(tmp_path / "home") == []
    # Without a network the same box needs no passt.
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, network_enabled=False))
    try:
        assert (await box.run("true")).exit_code == 0
    finally:
        await runtime.remove(box.id, force=True)
        await runtime.shutdown()


async def test_path_that_is_not_an_oci_layout(runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    (tmp_path / "somefile").write_text("x")
    with pytest.raises(boxlite.InvalidImageError, match="oci-layout") as err:
        await runtime.create(boxlite.BoxOptions(rootfs_path=str(tmp_path)))
    assert str(tmp_path) in str(err.value)
    with pytest.raises(boxlite.InvalidImageError, match="no such directory"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=str(tmp_path / "missing")))


def unused_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_unreachable_registry_and_bad_reference_are_clear_errors(runtime: boxlite.Boxlite) -> None:
    before = set((runtime.home / "boxes").iterdir())
    port = unused_port()
    reference = f"127.0.0.1:{port}/library/python:slim"
    with pytest.raises(boxlite.ImageError, match=rf"{re.escape(reference)}.*cannot connect"):
        await runtime.create(boxlite.BoxOptions(image=reference))
    with pytest.raises(boxlite.ImageError, match=r"not a valid image reference"):
        await runtime.create(boxlite.BoxOptions(image="Python:Slim!"))
    assert set((runtime.home / "boxes").iterdir()) == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("memory_mib", 64, "128 to 65536"),
        ("cpus", 0, "cpus=0"),
        ("cpus", 4096, "CPU count"),
        ("working_dir", "rel", "absolute"),
    ],
)
async def test_out_of_range_options(
    runtime: boxlite.Boxlite, busybox: str, field: str, value: object, message: str
) -> None:
    before = set((runtime.home / "boxes").iterdir())
    options = boxlite.BoxOptions.model_validate({"rootfs_path": busybox, field: value})
    with pytest.raises(boxlite.InvalidOptionError, match=message):
        await runtime.create(options)
    assert isinstance(boxlite.InvalidOptionError("x"), ValueError)
    assert set((runtime.home / "boxes").iterdir()) == before


def test_unknown_option_names_are_refused() -> None:
    with pytest.raises(ValueError, match="no_such_option"):
        boxlite.BoxOptions.model_validate({"no_such_option": 1})


def test_boxlite_home_selects_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXLITE_HOME", str(tmp_path / "from-env"))
    runtime = boxlite.Boxlite()
    assert runtime.home == tmp_path / "from-env"
    assert sorted(p.name for p in runtime.home.iterdir()) == [
        "boxes",
        "db",
        "images",
        "lock",
        "logs",
        "snapshots",
        "tmp",
    ]
    explicit = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path / "explicit")))
    assert explicit.home == tmp_path / "explicit"


async def test_a_box_name_already_taken_is_a_conflict(runtime: boxlite.Boxlite, busybox: str) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, name="taken"))
    try:
        before = set((runtime.home / "boxes").iterdir())
        with pytest.raises(boxlite.BoxliteConflictError, match=r"a box named \"taken\" already exists") as err:
            await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, name="taken"))
        # Callers that caught the invalid-option error before still catch it.
        assert isinstance(err.value, boxlite.InvalidOptionError)
        assert isinstance(err.value, boxlite.errors.BoxliteConflictError)
        assert set((runtime.home / "boxes").iterdir()) == before
    finally:
        await runtime.remove(box.id, force=True)
