"""``layered``: the busybox layer (the very same blob) and two more layers that exercise the
layer-unpacking rules: whiteouts, an opaque directory, a directory replaced by a file, owners,
modes, links, special files and a write through an absolute symlink (``layered_expected.json``
states the file system a correct unpacker produces)."""

from __future__ import annotations

from typing import Any

from imagebuild.common import DEFAULT_PATH, oci_arch
from imagebuild.entries import (
    Entry,
    char_device,
    directory,
    entry_members,
    fifo,
    hardlink,
    opaque_whiteout,
    regular,
    symlink,
    whiteout,
)
from imagebuild.spec import BuildContext, ImageSpec


def layered_inputs() -> dict[str, Any]:
    """The layered image's own inputs are all in its code (the busybox layer is a dependency)."""
    return {"arch": oci_arch()}


def layered_layer_2() -> list[Entry]:
    """Files of every kind, owners and modes; what layer 3 then hides, replaces or rewrites."""
    keep = regular("data/keep.txt", b"keep\n", mode=0o640, uid=1000, gid=1000)
    return [
        directory("data"),
        keep,
        hardlink("data/hard.txt", keep.path, like=keep),
        regular("data/remove-me.txt", b"remove me\n"),
        regular("data/modified.txt", b"v1\n"),
        directory("data/opaque"),
        regular("data/opaque/old.txt", b"old\n"),
        directory("data/dir-to-replace"),
        regular("data/dir-to-replace/x", b"x\n"),
        symlink("data/link-rel", "keep.txt"),
        symlink("data/link-abs", "/data/keep.txt"),
        directory("data/private", mode=0o700, uid=1000, gid=1000),
        regular("data/private/note.txt", b"private\n", mode=0o600, uid=1000, gid=1000),
        directory("data/readonly", mode=0o555),
        regular("data/readonly/file.txt", b"ro\n", mode=0o444),
        regular("data/nobody-can-read", b"secret\n", mode=0o000),
        fifo("data/fifo"),
        char_device("data/null-dev", 1, 3, mode=0o666),
        regular("data/with space.txt", b"space\n"),
        directory("opt"),
        symlink("opt/escape", "/"),
        directory("usr"),
        directory("usr/local"),
        directory("usr/local/bin"),
        regular("usr/local/bin/setuid-tool", b"#!/bin/sh\nid\n", mode=0o4755),
    ]


def layered_layer_3() -> list[Entry]:
    """Whiteouts, an opaque directory, a directory replaced by a file, an overwritten file
    (new content, owner and mode) and a file written through the absolute symlink ``/opt/escape``."""
    return [
        directory("data"),
        whiteout("data/remove-me.txt"),
        directory("data/opaque"),
        opaque_whiteout("data/opaque"),
        regular("data/opaque/new.txt", b"new\n"),
        whiteout("data/dir-to-replace"),
        regular("data/dir-to-replace", b"replaced\n"),
        regular("data/modified.txt", b"v2\n", mode=0o600, uid=1000, gid=1000),
        regular("opt/escape/tmp/boxlite-escape-canary", b"canary\n"),
    ]


def build_layered(ctx: BuildContext) -> dict[str, Any]:
    """The busybox layer (copied, byte-identical) plus layers 2 and 3 (see layered_expected.json)."""
    base = ctx.out.copy_layer(ctx.deps["busybox"], 0)
    layer_2 = ctx.out.write_layer(entry_members(layered_layer_2()), "boxlite layered test: files of every kind")
    layer_3 = ctx.out.write_layer(
        entry_members(layered_layer_3()), "boxlite layered test: whiteouts, opaque dir, write through /opt/escape"
    )
    ctx.out.write_image(
        [base, layer_2, layer_3],
        ref_name=ctx.ref_name,
        env=[f"PATH={DEFAULT_PATH}", "BOXLITE_TEST_IMAGE=layered"],
        cmd=["sh"],
        working_dir="/data",
    )
    return {"base_layer": base.digest}


SPEC = ImageSpec("layered", "latest", layered_inputs, build_layered, depends_on=("busybox",))
