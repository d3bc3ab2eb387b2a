"""``docker save`` archives: imported into the shared cache (tags from the archive, layers
hashed into blobs), and a box boots from an archive path directly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import boxlite
import pytest
from local_registry import layout_manifest, sha256_digest


def docker_save(layout: str, tag: str, archive: Path, name: str) -> None:
    """Writes a `docker save`-format archive of the layout's image, tagged ``name``."""
    policy = archive.parent / "policy.json"
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    subprocess.run(
        [
            "skopeo",
            "--policy",
            str(policy),
            "copy",
            "--quiet",
            f"oci:{layout}:{tag}",
            f"docker-archive:{archive}:{name}",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


async def test_an_archive_is_imported_into_the_cache_and_boots(busybox: str, tmp_path: Path) -> None:
    archive = tmp_path / "busybox.tar"
    docker_save(busybox, "latest", archive, "example.org/tools/busybox:saved")
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path / "home")))
    [info] = await runtime.images.import_archive(archive)
    assert info.reference == "example.org/tools/busybox:saved"
    assert info.source == f"docker-archive:{archive}"
    blobs = tmp_path / "home/images/blobs/sha256"
    for digest in (info.manifest_digest, info.config_digest, *info.layers):
        assert sha256_digest((blobs / digest.removeprefix("sha256:")).read_bytes()) == digest
    _, manifest = layout_manifest(busybox)
    assert len(info.layers) == len(manifest["layers"])
    assert [i.reference for i in await runtime.images.list()] == [info.reference]

    # Renamed on import, and booted straight from the archive path.
    [renamed] = await runtime.images.import_archive(archive, reference="busybox:mine")
    assert (renamed.reference, renamed.manifest_digest) == ("docker.io/library/busybox:mine", info.manifest_digest)
    async with boxlite.SimpleBox(image=str(archive), memory_mib=256, runtime=runtime) as box:
        result = await box.exec("sh", "-c", "echo from-archive; test -x /bin/busybox")
        assert (result.exit_code, result.stdout) == (0, "from-archive\n")
        assert box.box.info().image_digest == info.manifest_digest


async def test_a_file_that_is_no_docker_archive_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "not-an-image.tar"
    subprocess.run(["tar", "-cf", str(bogus), "-C", str(tmp_path), "--files-from=/dev/null"], check=True)
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path / "home")))
    with pytest.raises(boxlite.ImageError, match=r"no manifest.json: not a `docker save` archive"):
        await runtime.images.import_archive(bogus)
    assert await runtime.images.list() == []
