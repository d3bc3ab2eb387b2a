"""A hostile image cannot harm the host while it is prepared.

Every image here is built by the test, in its own temporary directory: OCI layouts with crafted
tar layers (bombs, overlong and control-character names, malformed whiteouts, size and digest
lies, escaping links), a registry on 127.0.0.1 that streams forever or lies about sizes, and
``docker save`` archives that claim names already in the cache. Each must fail with a clear
error naming the problem (and the option that would allow it), leaving nothing in the cache
(``images/tmp``, ``images/blobs``, ``images/disks``, ``boxes``) and nothing outside it.

Over 500 lines on purpose: one attack per test, side by side, so the list can be read whole.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boxlite
import pytest
from local_registry import layout_manifest, sha256_digest

#: Every test here tries an attack for real and checks the host afterwards (`make audit`).
pytestmark = pytest.mark.hostile

MiB = 1 << 20
LIMIT_BYTES = 16 * MiB
LIMIT_ENTRIES = 1000
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


# --- building the corpus -------------------------------------------------------------------


def regular(name: str, data: bytes = b"", *, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    return info, None


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, None


def tar_layer(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def put_blob(layout: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest.removeprefix("sha256:")).write_bytes(data)
    return digest


def write_index(layout: Path, manifest: dict[str, Any], *, tag: str = "latest") -> str:
    data = json.dumps(manifest).encode()
    digest = put_blob(layout, data)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": len(data),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return digest


def oci_layout(layout: Path, layers: list[bytes], *, gzipped: bool = True) -> Path:
    """An OCI layout of one image whose layers are the given uncompressed tar streams."""
    descriptors = []
    for tar in layers:
        blob = gzip.compress(tar, compresslevel=1, mtime=0) if gzipped else tar
        media_type = GZIP_LAYER if gzipped else "application/vnd.oci.image.layer.v1.tar"
        descriptors.append({"mediaType": media_type, "digest": put_blob(layout, blob), "size": len(blob)})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(t) for t in layers]},
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put_blob(layout, config),
            "size": len(config),
        },
        "layers": descriptors,
    }
    write_index(layout, manifest)
    return layout


def gzip_bomb_layer(size: int) -> bytes:
    """A tar stream holding one file of ``size`` zero bytes (gzip makes it about 1/1000)."""
    return tar_layer([regular("zeros", bytes(size))])


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")} if root.exists() else set()


# --- the cache must stay clean -------------------------------------------------------------


def assert_cache_clean(home: Path) -> None:
    images = home / "images"
    leftovers = {
        "images/tmp": files_under(images / "tmp"),
        "images/blobs/sha256": files_under(images / "blobs" / "sha256"),
        "images/disks": files_under(images / "disks"),
        "boxes": files_under(home / "boxes"),
    }
    assert all(not found for found in leftovers.values()), leftovers


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-home")


@pytest.fixture(scope="module")
def strict_runtime(hostile_home: Path) -> boxlite.Boxlite:
    """A runtime with small image limits, so that a bomb of a few tens of MiB exceeds them."""
    return boxlite.Boxlite(
        boxlite.Options(home_dir=str(hostile_home), image_max_bytes=LIMIT_BYTES, image_max_entries=LIMIT_ENTRIES)
    )


async def refused(runtime: boxlite.Boxlite, layout: Path, match: str) -> str:
    """Creates a box from ``layout``: it must fail with an ImageError matching ``match``, leaving
    the cache clean and nothing new beside the layout."""
    outside = layout.parent
    before = files_under(outside)
    with pytest.raises(boxlite.ImageError, match=match) as raised:
        await runtime.create(boxlite.BoxOptions(rootfs_path=str(layout), memory_mib=256))
    assert_cache_clean(runtime.home)
    assert files_under(outside) == before, "preparing the image wrote beside it"
    return str(raised.value)


# --- bombs -----------------------------------------------------------------------------------


async def test_a_gzip_bomb_fails_with_the_limit_named(strict_runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    layer = gzip_bomb_layer(64 * MiB)
    layout = oci_layout(tmp_path / "bomb", [layer])
    message = await refused(strict_runtime, layout, r"image_max_bytes.*Options\(image_max_bytes=\.\.\.\)")
    assert f"more than {LIMIT_BYTES} bytes" in message
    print(f"gzip bomb: 64 MiB of zeros in a {len(gzip.compress(layer, 1)) // 1024} KiB layer: {message}")


async def test_a_1_tib_sparse_file_fails_at_its_header_without_writing(hostile_home: Path, tmp_path: Path) -> None:
    # A real GNU sparse archive (GNU tar --sparse) of a 1 TiB file that is one hole: the
    # tar reader expands it to 1 TiB of zeros. With the default limits, the declared size is
    # refused before a byte is written.
    sparse = tmp_path / "src" / "sparse"
    sparse.parent.mkdir()
    with open(sparse, "wb") as f:
        f.truncate(1 << 40)
    tar = subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-cf", "-", "-C", str(sparse.parent), "sparse"],
        check=True,
        capture_output=True,
    ).stdout
    shutil.rmtree(sparse.parent)
    layout = oci_layout(tmp_path / "sparse-bomb", [tar])
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(hostile_home)))
    started = time.monotonic()
    message = await refused(runtime, layout, r"sparse \(declared 1099511627776 bytes\).*image_max_bytes")
    print(f"1 TiB sparse entry ({len(tar)} bytes of tar) refused in {time.monotonic() - started:.2f} s: {message}")


async def test_an_entry_bomb_fails_with_the_limit_named(strict_runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    layer = tar_layer([regular(f"f{i}") for i in range(LIMIT_ENTRIES + 1)])
    layout = oci_layout(tmp_path / "entries", [layer])
    await refused(strict_runtime, layout, r"more than 1000 entries.*Options\(image_max_entries=\.\.\.\)")


# --- names and whiteouts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("etc/evil\nsif /etc/shadow mode 0100777", "control character"),
        ("etc/carriage\rreturn", "control character"),
        ("x" * 256, "at most 255 bytes"),
        ("/".join(["d" * 250] * 17), "at most 4095 bytes"),
    ],
    ids=["newline", "carriage-return", "name-256-bytes", "path-over-4095-bytes"],
)
async def test_names_the_ext4_fixup_could_misread_are_refused(
    strict_runtime: boxlite.Boxlite, tmp_path: Path, name: str, why: str
) -> None:
    layout = oci_layout(tmp_path / "names", [tar_layer([regular("etc/ok"), regular(name, b"x")])])
    await refused(strict_runtime, layout, why)


@pytest.mark.parametrize("whiteout", [".wh.", ".wh..", ".wh...", "data/.wh...", "data/.wh..wh.plnk"])
async def test_malformed_whiteouts_are_refused(strict_runtime: boxlite.Boxlite, tmp_path: Path, whiteout: str) -> None:
    lower = tar_layer([regular("data/keep", b"keep"), regular("top", b"top")])
    upper = tar_layer([regular(whiteout)])
    layout = oci_layout(tmp_path / "whiteouts", [lower, upper])
    await refused(strict_runtime, layout, r"whiteout .* is malformed")


# --- size and digest lies --------------------------------------------------------------------


def layout_manifest_path(layout: Path) -> tuple[dict[str, Any], Path]:
    digest, manifest = layout_manifest(layout)
    return manifest, layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


async def test_a_layer_whose_size_is_misstated_is_refused(strict_runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "size-lie", [tar_layer([regular("etc/hostname", b"liar\n")])])
    manifest, _ = layout_manifest_path(layout)
    manifest["layers"][0]["size"] -= 1
    write_index(layout, manifest)
    await refused(strict_runtime, layout, r"size mismatch: the manifest states \d+ bytes, the blob has \d+")


async def test_a_layout_layer_is_verified_before_it_is_unpacked(
    strict_runtime: boxlite.Boxlite, tmp_path: Path
) -> None:
    # The blob an innocent layer's digest names is swapped for a gzip bomb, its stated size
    # updated to match. Verified only while unpacking, the bomb would hit image_max_bytes
    # first; verified before, the digest mismatch is all that happens.
    layout = oci_layout(tmp_path / "swapped", [tar_layer([regular("etc/hostname", b"innocent\n")])])
    manifest, _ = layout_manifest_path(layout)
    bomb = gzip.compress(gzip_bomb_layer(64 * MiB), 1)
    (layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].removeprefix("sha256:")).write_bytes(bomb)
    manifest["layers"][0]["size"] = len(bomb)
    write_index(layout, manifest)
    message = await refused(strict_runtime, layout, r"digest mismatch")
    assert "image_max_bytes" not in message


async def test_an_oversized_manifest_is_refused(strict_runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "fat-manifest", [tar_layer([regular("etc/ok")])])
    manifest, _ = layout_manifest_path(layout)
    manifest["annotations"] = {"padding": "x" * (5 * MiB)}
    write_index(layout, manifest)
    await refused(strict_runtime, layout, r"more than the 4194304 an image's metadata may have")


# --- links -----------------------------------------------------------------------------------


def layout_on_busybox(busybox: Path, target: Path, extra: list[bytes]) -> Path:
    """The busybox test image with ``extra`` layers on top."""
    shutil.copytree(busybox, target)
    _, manifest = layout_manifest(target)
    for tar in extra:
        blob = gzip.compress(tar, compresslevel=1, mtime=0)
        manifest["layers"].append({"mediaType": GZIP_LAYER, "digest": put_blob(target, blob), "size": len(blob)})
    write_index(target, manifest)
    return target


async def test_relative_symlinks_and_hard_links_stay_inside_the_image(
    strict_runtime: boxlite.Boxlite, images: dict[str, Path], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:12]
    host_canaries = [Path(f"/tmp/boxlite-rel-canary-{tag}"), Path(f"/tmp/boxlite-deep-canary-{tag}")]
    passwd_links = os.stat("/etc/passwd").st_nlink
    layer = tar_layer(
        [
            symlink("up", "../../../../../../../../.."),
            regular(f"up/tmp/boxlite-rel-canary-{tag}", b"rel\n"),
            symlink("deep/a/b/rel", "../../../../../../../../tmp"),
            regular(f"deep/a/b/rel/boxlite-deep-canary-{tag}", b"deep\n"),
            # A hard link through the escaping symlink names the image's file, not the host's.
            regular("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
            hardlink("linked-passwd", "up/etc/passwd"),
        ]
    )
    layout = layout_on_busybox(images["busybox"], tmp_path / "links", [layer])
    box = await strict_runtime.create(boxlite.BoxOptions(rootfs_path=str(layout), memory_mib=256))
    try:
        script = (
            f"cat /tmp/boxlite-rel-canary-{tag} /tmp/boxlite-deep-canary-{tag}; "
            "stat -c %i /etc/passwd /linked-passwd | uniq | wc -l"
        )
        result = await (await box.exec("sh", ["-c", script])).wait()
        assert (result.exit_code, result.stdout) == (0, "rel\ndeep\n1\n"), result.stderr
    finally:
        await box.stop()
        # The image's base disk is kept like any other; no image names it, so prune removes it.
        await strict_runtime.images.prune()
    for canary in host_canaries:
        assert not canary.exists(), f"unpacking wrote {canary} on the host"
    assert os.stat("/etc/passwd").st_nlink == passwd_links, "a hard link to the host's /etc/passwd was made"


async def test_a_hard_link_out_of_the_image_is_refused(strict_runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    layer = tar_layer([regular("etc/ok"), hardlink("escape", "../../../../etc/passwd")])
    layout = oci_layout(tmp_path / "hardlink", [layer])
    await refused(strict_runtime, layout, r"escapes the root with '\.\.'")


# --- a hostile registry ----------------------------------------------------------------------


class HostileRegistry:
    """A registry on 127.0.0.1 serving one image, ``hostile/image:1``, whose layer blob is
    served ``forever`` (zeros, no length, never ending), ``longer`` (real content of 2 KiB,
    whose digest matches, but the manifest states 1 KiB), ``shorter`` (the manifest states
    4 KiB) or ``huge`` (the manifest states 1 TiB); with ``endless-manifest`` the manifest
    itself never ends."""

    def __init__(self, mode: str) -> None:
        self.sent = 0
        self.requested: list[str] = []
        content = os.urandom(2048)
        stated = {"forever": 1024, "longer": 1024, "shorter": 4096, "huge": 1 << 40}.get(mode, 2048)
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
        self.blobs = {sha256_digest(config): config, sha256_digest(content): content}
        self.layer = sha256_digest(content)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": sha256_digest(config),
                    "size": len(config),
                },
                "layers": [{"mediaType": GZIP_LAYER, "digest": self.layer, "size": stated}],
            }
        ).encode()
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(self, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def endless(self, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.end_headers()
                chunk = b" " * (64 * 1024)
                try:
                    while registry.sent < 1 << 34:
                        self.wfile.write(chunk)
                        registry.sent += len(chunk)
                except OSError:
                    pass

            def do_GET(self) -> None:
                registry.requested.append(self.path)
                if self.path == "/v2/":
                    self.reply(b"{}")
                elif self.path.startswith("/v2/hostile/image/manifests/") and mode == "endless-manifest":
                    self.endless("application/vnd.oci.image.manifest.v1+json")
                elif self.path.startswith("/v2/hostile/image/manifests/"):
                    self.reply(manifest, "application/vnd.oci.image.manifest.v1+json")
                elif self.path == f"/v2/hostile/image/blobs/{registry.layer}" and mode == "forever":
                    self.endless("application/octet-stream")
                elif self.path.startswith("/v2/hostile/image/blobs/"):
                    blob = registry.blobs.get(self.path.rsplit("/", 1)[1])
                    if blob is None:
                        self.send_error(404)
                    else:
                        self.reply(blob, "application/octet-stream")
                else:
                    self.send_error(404)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.reference = f"127.0.0.1:{self.httpd.server_address[1]}/hostile/image:1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile_registry(request: pytest.FixtureRequest) -> Iterator[HostileRegistry]:
    server = HostileRegistry(request.param)
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("hostile_registry", "match"),
    [
        ("forever", r"sent more than the 1024 bytes the manifest states; cut off"),
        ("longer", r"the manifest states 1024 bytes, the registry announces 2048"),
        ("shorter", r"the manifest states 4096 bytes, the registry (announces|sent) 2048"),
        ("huge", r"its layers are stated to have 1099511627776 bytes, more than \d+ bytes.*image_max_bytes"),
        (
            "endless-manifest",
            r"the manifest is over 4194304 bytes long: an image's metadata may have at most 4194304 bytes",
        ),
    ],
    indirect=["hostile_registry"],
    ids=["streams-forever", "longer-than-stated", "shorter-than-stated", "stated-1-tib", "endless-manifest"],
)
async def test_a_registry_that_lies_about_sizes_is_cut_off(
    hostile_registry: HostileRegistry, tmp_path: Path, match: str
) -> None:
    home = tmp_path / "home"
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    with pytest.raises(boxlite.ImageError, match=match) as raised:
        await runtime.images.pull(hostile_registry.reference)
    if hostile_registry.layer not in str(raised.value):
        # Refused on the manifest alone: no blob was asked for.
        assert not [p for p in hostile_registry.requested if "/blobs/" in p]
    assert await runtime.images.list() == []
    # The config arrived intact before the layer failed; it goes with the failed pull.
    assert_cache_clean(home)
    assert hostile_registry.sent < 1 << 30, "the endless blob was not cut off"
    print(f"{hostile_registry.reference}: the registry got {hostile_registry.sent} bytes out before it was cut off")


# --- docker save archives --------------------------------------------------------------------


def docker_archive(path: Path, tags: list[str], content: bytes) -> Path:
    """A minimal `docker save` archive: one image of one layer holding ``/marker``."""
    layer = tar_layer([regular("marker", content)])
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": tags, "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in [(config_name, config), ("layer/layer.tar", layer), ("manifest.json", manifest)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def blob_names(home: Path) -> set[str]:
    return {p.name for p in (home / "images" / "blobs" / "sha256").iterdir()}


async def test_an_archive_never_rebinds_a_cached_name(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    [genuine] = await runtime.images.import_archive(
        docker_archive(tmp_path / "genuine.tar", ["python:slim"], b"genuine")
    )
    blobs = blob_names(home)

    hostile = docker_archive(tmp_path / "hostile.tar", ["python:slim"], b"hostile")
    with pytest.raises(boxlite.ImageError, match=r"docker.io/library/python:slim, which the cache already holds"):
        await runtime.images.import_archive(hostile)
    with pytest.raises(boxlite.ImageError, match=r"already holds .*remove it first"):
        await runtime.images.import_archive(hostile, reference="python:slim")
    assert [(i.reference, i.manifest_digest) for i in await runtime.images.list()] == [
        ("docker.io/library/python:slim", genuine.manifest_digest)
    ]
    assert blob_names(home) == blobs, "the refused archive's blobs stayed in the cache"
    # Importing the same content again is no rebinding.
    [again] = await runtime.images.import_archive(docker_archive(tmp_path / "same.tar", ["python:slim"], b"genuine"))
    assert again.manifest_digest == genuine.manifest_digest


async def test_a_digest_pinned_name_only_names_content_with_that_digest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    wrong = "sha256:" + "0" * 64
    archive = docker_archive(tmp_path / "pinned.tar", [f"busybox@{wrong}"], b"pinned")
    with pytest.raises(boxlite.ImageError, match=r"manifest hashes to sha256:[0-9a-f]{64}: a digest-pinned name"):
        await runtime.images.import_archive(archive)
    unnamed = docker_archive(tmp_path / "unnamed.tar", [], b"pinned")
    with pytest.raises(boxlite.ImageError, match="a digest-pinned name"):
        await runtime.images.import_archive(unnamed, reference=f"busybox@{wrong}")
    assert await runtime.images.list() == []
    assert_cache_clean(home)
