"""``python``: Debian bookworm made by ``debootstrap --variant=minbase`` with python3, one layer.
Building it needs root (debootstrap does) and the Debian archive."""

from __future__ import annotations

from imagebuild.debian import build_debian_image, debian_inputs
from imagebuild.spec import ImageSpec

PACKAGES = ("python3", "python-is-python3", "ca-certificates")

SPEC = ImageSpec(
    "python",
    "bookworm-python3",
    inputs=lambda: debian_inputs(PACKAGES),
    build=lambda ctx: build_debian_image(ctx, PACKAGES, cmd=["python3"]),
)
