"""Pulling images from a real registry on 127.0.0.1 (Debian's docker-registry, see
``local_registry.py``): normalised references, tags and digests, mirrors from the environment
and from options, multi-platform indexes, digest verification, the shared blob cache and its
index (``db/images.db``), concurrent pulls, clear errors, and booting a box from a pulled image."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import boxlite
import pytest
from local_registry import FlakyProxy, LocalRegistry, TokenServer, free_port, layout_manifest, sha256_digest


def new_runtime(home: Path, **options: object) -> boxlite.Boxlite:
    return boxlite.Boxlite(boxlite.Options(home_dir=str(home), **options))  # type: ignore[arg-type]


def cached_blobs(home: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (home / "images/blobs/sha256").iterdir()}


def image_blobs(layout: Path | str, tag: str = "latest") -> set[str]:
    digest, manifest = layout_manifest(layout, tag)
    return {digest, manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}


async def test_pull_by_tag_through_a_mirror_from_the_environment(
    registry: LocalRegistry, images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXLITE_REGISTRY_MIRRORS", f"docker.io={registry.url},ghcr.io=https://mirror.invalid")
    runtime = new_runtime(tmp_path)
    events: list[boxlite.PullProgress] = []
    info = await runtime.images.pull("python:slim", progress=events.append)

    digest, manifest = layout_manifest(images["python"], "bookworm-python3")
    assert info.reference == "docker.io/library/python:slim"
    assert info.manifest_digest == digest
    assert info.layers == [layer["digest"] for layer in manifest["layers"]]
    assert info.source == f"{registry.url} (mirror of docker.io)"
    assert cached_blobs(tmp_path) == image_blobs(images["python"], "bookworm-python3")
    # Every stored blob is what its name says.
    for blob in (tmp_path / "images/blobs/sha256").iterdir():
        assert sha256_digest(blob.read_bytes()) == f"sha256:{blob.name}"
    assert not list((tmp_path / "images/tmp").glob("*.partial"))

    kinds = [e.event for e in events]
    assert kinds[0] == "resolved" and events[0].layers == len(manifest["layers"])
    done = {e.digest for e in events if e.event == "layer_done"}
    assert done == {manifest["config"]["digest"], *info.layers}

    rows = (
        sqlite3.connect(tmp_path / "db/images.db").execute("SELECT reference, manifest_digest FROM images").fetchall()
    )
    assert rows == [("docker.io/library/python:slim", digest)]
    assert [i.reference for i in await runtime.images.list()] == ["docker.io/library/python:slim"]

    # A second pull finds every blob cached and downloads nothing.
    again: list[boxlite.PullProgress] = []
    await runtime.images.pull("docker.io/library/python:slim", progress=again.append)
    assert all(e.cached for e in again if e.event == "layer_done")
    assert not [e for e in again if e.event == "progress"]


async def test_pull_by_digest_from_a_loopback_registry(
    registry: LocalRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    runtime = new_runtime(tmp_path)
    digest, _ = layout_manifest(images["busybox"])
    info = await runtime.images.pull(f"{registry.host}/library/busybox@{digest}")
    assert info.reference == f"{registry.host}/library/busybox@{digest}"
    assert info.manifest_digest == digest
    assert info.source == registry.url


async def test_a_layer_shared_by_two_images_is_stored_once_and_removal_keeps_it(
    registry: LocalRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    runtime = new_runtime(tmp_path, registry_mirrors={"docker.io": registry.url})
    busybox = await runtime.images.pull("busybox")
    layered = await runtime.images.pull("layered")
    shared = set(busybox.layers) & set(layered.layers)
    assert shared, "the layered test image reuses the busybox layer"
    want = image_blobs(images["busybox"]) | image_blobs(images["layered"])
    assert cached_blobs(tmp_path) == want
    assert len(list((tmp_path / "images/blobs/sha256").iterdir())) == len(want)

    report = await runtime.images.remove("layered:latest")
    assert report.blobs_removed == len(image_blobs(images["layered"]) - image_blobs(images["busybox"]))
    assert cached_blobs(tmp_path) == image_blobs(images["busybox"])
    assert [i.reference for i in await runtime.images.list()] == ["docker.io/library/busybox:latest"]
    with pytest.raises(boxlite.ImageError, match="not in the image cache"):
        await runtime.images.remove("layered:latest")


def write_blob(layout: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    (layout / "blobs/sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    return digest


def multi_platform_layout(busybox: Path, target: Path, *, with_amd64: bool = True) -> tuple[str, str]:
    """An OCI layout whose tag ``multi`` is an index of linux/amd64 (the busybox image) and
    linux/arm64 (a config that says arm64 over the same layer). Returns (index, amd64) digests."""
    import shutil

    shutil.copytree(busybox, target, symlinks=False)
    amd64_digest, manifest = layout_manifest(target)
    config = json.loads((target / "blobs/sha256" / manifest["config"]["digest"].removeprefix("sha256:")).read_bytes())
    config["architecture"] = "arm64"
    config_bytes = json.dumps(config).encode()
    arm_manifest = dict(manifest)
    arm_manifest["config"] = {
        "mediaType": manifest["config"]["mediaType"],
        "digest": write_blob(target, config_bytes),
        "size": len(config_bytes),
    }
    arm_bytes = json.dumps(arm_manifest).encode()
    entries = [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": write_blob(target, arm_bytes),
            "size": len(arm_bytes),
            "platform": {"architecture": "arm64", "os": "linux"},
        }
    ]
    if with_amd64:
        amd64_size = len((target / "blobs/sha256" / amd64_digest.removeprefix("sha256:")).read_bytes())
        entries.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": amd64_digest,
                "size": amd64_size,
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        )
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    index_bytes = json.dumps(index).encode()
    index_digest = write_blob(target, index_bytes)
    top = json.loads((target / "index.json").read_text())
    top["manifests"] = [
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest,
            "size": len(index_bytes),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }
    ]
    (target / "index.json").write_text(json.dumps(top))
    return index_digest, amd64_digest


async def test_a_multi_platform_index_resolves_to_this_hosts_platform(
    registry: LocalRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    index_digest, amd64_digest = multi_platform_layout(images["busybox"], tmp_path / "multi")
    registry.push(tmp_path / "multi", "multi", "library/multi:1", all_platforms=True)
    runtime = new_runtime(tmp_path / "home")
    info = await runtime.images.pull(f"{registry.host}/library/multi:1")
    assert (info.index_digest, info.manifest_digest) == (index_digest, amd64_digest)
    assert index_digest in cached_blobs(tmp_path / "home")

    multi_platform_layout(images["busybox"], tmp_path / "armonly", with_amd64=False)
    registry.push(tmp_path / "armonly", "multi", "library/armonly:1", all_platforms=True)
    with pytest.raises(boxlite.ImageError, match=r"no linux/amd64 variant \(it offers: linux/arm64\)"):
        await runtime.images.pull(f"{registry.host}/library/armonly:1")


async def test_a_corrupted_blob_is_rejected_nothing_is_cached_and_a_retry_succeeds(
    images: dict[str, Path], tmp_path: Path
) -> None:
    # A registry of its own: its storage gets corrupted on purpose.
    server = LocalRegistry(tmp_path / "registry")
    try:
        server.push(images["busybox"], "latest", "library/busybox:latest")
        _, manifest = layout_manifest(images["busybox"])
        layer = manifest["layers"][0]["digest"]
        data_file = server.blob_data(layer)
        good = data_file.read_bytes()
        data_file.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])

        runtime = new_runtime(tmp_path / "home")
        reference = f"{server.host}/library/busybox:latest"
        with pytest.raises(boxlite.ImageError, match="digest mismatch") as raised:
            await runtime.images.pull(reference)
        assert reference in str(raised.value) and layer in str(raised.value)
        assert layer not in cached_blobs(tmp_path / "home")
        assert await runtime.images.list() == []
        assert not list((tmp_path / "home/images/tmp").glob("*.partial"))

        data_file.write_bytes(good)
        info = await runtime.images.pull(reference)
        assert layer in info.layers and layer in cached_blobs(tmp_path / "home")
    finally:
        server.stop()


PULL_SCRIPT = """
import asyncio, sys, boxlite
async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
    info = await runtime.images.pull(sys.argv[2])
    print(info.manifest_digest)
asyncio.run(main())
"""


async def test_two_processes_pulling_the_same_image_end_with_one_correct_copy(
    registry: LocalRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    reference = f"{registry.host}/library/python:slim"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PULL_SCRIPT,
            str(tmp_path),
            reference,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [await p.communicate() for p in procs]
    digest, _ = layout_manifest(images["python"], "bookworm-python3")
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == digest
    assert cached_blobs(tmp_path) == image_blobs(images["python"], "bookworm-python3")
    for blob in (tmp_path / "images/blobs/sha256").iterdir():
        assert sha256_digest(blob.read_bytes()) == f"sha256:{blob.name}"
    assert not list((tmp_path / "images/tmp").glob("*.partial"))
    runtime = new_runtime(tmp_path)
    assert [i.reference for i in await runtime.images.list()] == [reference]
    # And two pulls at once in one process.
    infos = await asyncio.gather(runtime.images.pull(reference), runtime.images.pull(reference))
    assert {i.manifest_digest for i in infos} == {digest}


async def test_bad_references_unknown_tags_and_unreachable_registries_are_clear_errors(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    runtime = new_runtime(tmp_path)
    with pytest.raises(boxlite.ImageError, match="not a valid image reference"):
        await runtime.images.pull("Not A/Reference!")
    with pytest.raises(boxlite.ImageError, match=r"library/busybox:no-such-tag.*not found"):
        await runtime.images.pull(f"{registry.host}/library/busybox:no-such-tag")
    port = free_port()  # nothing listens there
    with pytest.raises(boxlite.ImageError, match=rf"127\.0\.0\.1:{port}/library/x:1.*cannot connect"):
        await runtime.images.pull(f"127.0.0.1:{port}/library/x:1")
    assert await runtime.images.list() == []


async def test_plain_http_to_a_remote_mirror_is_refused_unless_configured(tmp_path: Path) -> None:
    runtime = new_runtime(tmp_path, registry_mirrors={"docker.io": ["http://192.0.2.1:5000"]})
    with pytest.raises(boxlite.ImageError, match=r"plain HTTP is allowed only for loopback.*insecure=True"):
        await runtime.images.pull("python:slim")


async def test_a_box_boots_from_a_pulled_image_and_a_second_box_copies_nothing(
    registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXLITE_REGISTRY_MIRRORS", f"docker.io={registry.url}")
    runtime = new_runtime(tmp_path)
    async with boxlite.SimpleBox(image="python:slim", memory_mib=512, runtime=runtime) as box:
        result = await box.exec("python3", "-c", "print(6 * 7)")
        assert (result.exit_code, result.stdout) == (0, "42\n")
        info = box.box.info()
        assert info.image == "python:slim"
    blobs = {p: p.stat().st_mtime_ns for p in (tmp_path / "images/blobs/sha256").iterdir()}
    disks = sorted((tmp_path / "images/disks").glob("*.ext4"))
    assert len(disks) == 1

    box2 = await runtime.create(boxlite.BoxOptions(image="python:slim", memory_mib=256, auto_remove=True))
    try:
        overlay = Path(box2.info().dir) / "disk.qcow2"
        # The box's disk is a thin overlay: it holds only what the box wrote.
        assert os.stat(overlay).st_blocks * 512 < 16 << 20
    finally:
        await box2.stop()
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "images/blobs/sha256").iterdir()} == blobs
    assert sorted((tmp_path / "images/disks").glob("*.ext4")) == disks

    # No box uses it any more: removing the image frees its blobs and its base disk.
    report = await runtime.images.remove("python:slim")
    assert (report.blobs_removed, report.disks_removed) == (len(blobs), 1)
    assert not list((tmp_path / "images/blobs/sha256").iterdir())
    assert not list((tmp_path / "images/disks").glob("*.ext4"))


async def test_basic_auth_with_credentials_and_a_clear_error_without(images: dict[str, Path], tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-Bbc", str(htpasswd), "agent", "s3cret"], check=True, capture_output=True)
    server = LocalRegistry(tmp_path / "registry", auth={"htpasswd": {"realm": "boxlite-test", "path": str(htpasswd)}})
    try:
        subprocess.run(
            [
                "skopeo",
                "--policy",
                str(server.policy),
                "copy",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
                "--dest-creds=agent:s3cret",
                f"oci:{images['busybox']}:latest",
                f"docker://{server.host}/private/busybox:1",
            ],
            check=True,
            capture_output=True,
        )
        reference = f"{server.host}/private/busybox:1"
        anonymous = new_runtime(tmp_path / "anon")
        with pytest.raises(boxlite.ImageError, match=r"private/busybox:1.*401.*image_registries"):
            await anonymous.images.pull(reference)
        wrong = new_runtime(
            tmp_path / "wrong", image_registries=[boxlite.ImageRegistry(server.host, username="agent", password="nope")]
        )
        with pytest.raises(boxlite.ImageError, match="401"):
            await wrong.images.pull(reference)
        assert await wrong.images.list() == []
        right = new_runtime(
            tmp_path / "right",
            image_registries=[boxlite.ImageRegistry(server.host, username="agent", password="s3cret")],
        )
        info = await right.images.pull(reference)
        assert info.manifest_digest == layout_manifest(images["busybox"])[0]
    finally:
        server.stop()


async def test_bearer_token_auth_through_a_token_server(images: dict[str, Path], tmp_path: Path) -> None:
    tokens = TokenServer(tmp_path / "tokens", "agent", "s3cret")
    server = LocalRegistry(tmp_path / "registry", auth=tokens.registry_auth())
    try:
        server.push(images["busybox"], "latest", "team/busybox:1", creds="agent:s3cret")
        reference = f"{server.host}/team/busybox:1"
        anonymous = new_runtime(tmp_path / "anon")
        with pytest.raises(boxlite.ImageError, match=r"team/busybox:1.*token server refused"):
            await anonymous.images.pull(reference)
        issued = tokens.issued
        runtime = new_runtime(
            tmp_path / "home",
            image_registries=[boxlite.ImageRegistry(server.host, username="agent", password="s3cret")],
        )
        info = await runtime.images.pull(reference)
        assert info.manifest_digest == layout_manifest(images["busybox"])[0]
        assert tokens.issued > issued, "the pull went through the token server"
    finally:
        server.stop()
        tokens.stop()


FULL_DISK_SCRIPT = """
import asyncio, subprocess, sys, boxlite
home, reference = sys.argv[1], sys.argv[2]
async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
    try:
        await runtime.images.pull(reference)
        print("first pull: succeeded")
    except boxlite.ImageError as e:
        print("first pull:", e)
    print("images after the failure:", [i.reference for i in await runtime.images.list()])
    subprocess.run(["mount", "-o", "remount,size=400m", home], check=True)
    info = await runtime.images.pull(reference)
    print("retry:", info.manifest_digest)
asyncio.run(main())
"""


def test_a_full_disk_is_a_clear_error_and_a_retry_succeeds(
    registry: LocalRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    # A real full disk: an 8 MiB tmpfs as the home, in a private mount namespace (unshare -rm
    # needs no privileges where user namespaces are enabled), grown before the retry.
    home = tmp_path / "home"
    home.mkdir()
    reference = f"{registry.host}/library/python:slim"
    pull_script = tmp_path / "pull.py"
    pull_script.write_text(FULL_DISK_SCRIPT)
    script = f"mount -t tmpfs -o size=8m tmpfs {home} && exec {sys.executable} {pull_script} {home} {reference}"
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    first = next(line for line in out.splitlines() if line.startswith("first pull:"))
    assert reference in first and "No space left on device" in first, out
    assert "images after the failure: []" in out
    digest, _ = layout_manifest(images["python"], "bookworm-python3")
    assert f"retry: {digest}" in out


INTERRUPTED_SCRIPT = """
import asyncio, sys, boxlite
async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
    def show(event):
        print(event.event, flush=True)
    await runtime.images.pull(sys.argv[2], progress=show)
asyncio.run(main())
"""


async def test_an_interrupted_pull_leaves_the_cache_consistent_and_a_retry_succeeds(
    registry: LocalRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    reference = f"{registry.host}/library/python:slim"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", INTERRUPTED_SCRIPT, str(tmp_path), reference, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    # Killed in the middle: once the first bytes of a layer arrived.
    while await asyncio.wait_for(proc.stdout.readline(), timeout=120) not in (b"", b"progress\n"):
        pass
    proc.kill()
    await proc.wait()
    runtime = new_runtime(tmp_path)
    assert await runtime.images.list() == []
    for blob in (tmp_path / "images/blobs/sha256").iterdir():
        assert sha256_digest(blob.read_bytes()) == f"sha256:{blob.name}"
    info = await runtime.images.pull(reference)
    assert info.manifest_digest == layout_manifest(images["python"], "bookworm-python3")[0]
    assert cached_blobs(tmp_path) == image_blobs(images["python"], "bookworm-python3")


async def test_mirrors_are_tried_in_order(registry: LocalRegistry, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    runtime = new_runtime(tmp_path, registry_mirrors={"docker.io": [dead, registry.url]})
    info = await runtime.images.pull("busybox")
    assert info.source == f"{registry.url} (mirror of docker.io)"


async def test_transient_server_errors_are_retried(registry: LocalRegistry, tmp_path: Path) -> None:
    proxy = FlakyProxy(registry.url)
    try:
        runtime = new_runtime(tmp_path, registry_mirrors={"docker.io": proxy.url})
        info = await runtime.images.pull("busybox")
        assert info.source == f"{proxy.url} (mirror of docker.io)"
        # Config and layer each failed once with 503 and were fetched again.
        assert len(proxy.failed) == 1 + len(info.layers)
        assert {f"sha256:{p.name}" for p in (tmp_path / "images/blobs/sha256").iterdir()} >= set(info.layers)
    finally:
        proxy.stop()


async def test_credentials_go_only_to_the_host_they_are_configured_for(registry: LocalRegistry, tmp_path: Path) -> None:
    """Credentials for docker.io are not sent to a mirror of docker.io (another host), even
    when the mirror asks for them."""
    mirror = FlakyProxy(registry.url, basic_challenge=True)
    try:
        runtime = new_runtime(
            tmp_path,
            registry_mirrors={"docker.io": mirror.url},
            image_registries=[boxlite.ImageRegistry("docker.io", username="agent", password="s3cret")],
        )
        info = await runtime.images.pull("busybox")
        assert info.source == f"{mirror.url} (mirror of docker.io)"
        assert len(mirror.authorizations) >= 3  # manifest, config, layers: all through the mirror
        assert set(mirror.authorizations) == {None}, mirror.authorizations
    finally:
        mirror.stop()


def test_the_sync_api_pulls_lists_and_removes(registry: LocalRegistry, tmp_path: Path) -> None:
    runtime = boxlite.SyncBoxlite(boxlite.Options(home_dir=str(tmp_path), registry_mirrors={"docker.io": registry.url}))
    events: list[boxlite.PullProgress] = []
    info = runtime.images.pull("busybox", progress=events.append)
    assert info.reference == "docker.io/library/busybox:latest" and events
    assert [i.reference for i in runtime.images.list()] == [info.reference]
    assert runtime.images.remove("busybox").blobs_removed == 2 + len(info.layers)
    assert runtime.images.list() == []


async def test_create_reports_the_pull_the_base_disk_and_the_boot_as_progress(
    registry: LocalRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = new_runtime(tmp_path)
    reference = f"{registry.host}/library/busybox:latest"
    events: list[boxlite.StartProgress] = []
    first = await runtime.create(boxlite.BoxOptions(image=reference), progress=events.append)
    try:
        # Stage by stage, in order: the pull (with its own events), the base disk built, the boot.
        stages = [(e.stage, e.event) for e in events if e.event != "progress"]
        assert stages == [
            ("pull", "started"),
            ("pull", "done"),
            ("base_disk", "started"),
            ("base_disk", "done"),
            ("boot", "started"),
            ("boot", "done"),
        ]
        pulled = [e.pull for e in events if e.event == "progress"]
        assert pulled and all(e.stage == "pull" for e in events if e.event == "progress")
        assert pulled[0] is not None and pulled[0].event == "resolved"
        assert any(p is not None and p.event == "layer_done" for p in pulled)
        disk_done = next(e for e in events if (e.stage, e.event) == ("base_disk", "done"))
        assert disk_done.built is True
        boot_done = events[-1]
        assert boot_done.timings["boot_ms"] > 0 and boot_done.elapsed_s > 0
        assert (await first.run("true")).exit_code == 0

        # The image cached and its disk built: only the disk found and the boot. A failing
        # callback is logged and does not break the create.
        again: list[boxlite.StartProgress] = []

        def record_then_fail(event: boxlite.StartProgress) -> None:
            again.append(event)
            raise RuntimeError("a broken progress callback")

        second = await runtime.create(boxlite.BoxOptions(image=reference), progress=record_then_fail)
        await second.stop()
        assert [(e.stage, e.event) for e in again] == [
            ("base_disk", "started"),
            ("base_disk", "done"),
            ("boot", "started"),
            ("boot", "done"),
        ]
        assert again[1].built is False
        assert "the start progress callback failed" in caplog.text

        # A restore has one stage: nothing to pull or build.
        snapshot = await first.snapshot("progress")
        restored_events: list[boxlite.StartProgress] = []
        restored = await runtime.restore(snapshot.name, progress=restored_events.append)
        await restored.stop()
        assert [(e.stage, e.event) for e in restored_events] == [("restore", "started"), ("restore", "done")]
    finally:
        await runtime.shutdown()
