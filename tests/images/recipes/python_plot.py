"""``python-plot``: the python image plus matplotlib (Debian's build, with numpy and pillow), for the
tests of image collection by the agent tools; kept apart so the plain python image stays small."""

from __future__ import annotations

from pathlib import Path

from imagebuild.common import DEFAULT_PATH, BuildError, run_tool
from imagebuild.debian import build_debian_image, debian_inputs
from imagebuild.spec import ImageSpec

from recipes import python

PACKAGES = (*python.PACKAGES, "python3-matplotlib")


def build_font_cache(root: Path) -> None:
    """Writes matplotlib's font list into root's home, as image authors do: without it each new
    box's first plot spends ~10 s under TCG scanning the fonts."""
    env = {"HOME": "/root", "PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
    run_tool(["chroot", str(root), "python3", "-c", "import matplotlib.font_manager"], env=env)
    if not list((root / "root/.cache/matplotlib").glob("fontlist-*.json")):
        raise BuildError("matplotlib wrote no font list under /root/.cache/matplotlib")


SPEC = ImageSpec(
    "python-plot",
    "bookworm-python3-matplotlib",
    inputs=lambda: debian_inputs(PACKAGES),
    build=lambda ctx: build_debian_image(ctx, PACKAGES, cmd=["python3"], customize=build_font_cache),
)
