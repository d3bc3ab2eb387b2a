"""``python-plot``: the python image plus matplotlib (Debian's build, with numpy and pillow), for the
tests of image collection by the agent tools; kept apart so the plain python image stays small."""

from __future__ import annotations

from imagebuild.debian import build_debian_image, debian_inputs
from imagebuild.spec import ImageSpec

from recipes import python

PACKAGES = (*python.PACKAGES, "python3-matplotlib")

SPEC = ImageSpec(
    "python-plot",
    "bookworm-python3-matplotlib",
    inputs=lambda: debian_inputs(PACKAGES),
    build=lambda ctx: build_debian_image(ctx, PACKAGES, cmd=["python3"]),
)
