"""The test images, one recipe module each (see ``tests/images/README.md``).

A recipe module defines ``SPEC``, an :class:`imagebuild.spec.ImageSpec`. Add a new image by adding a
module here and its name to :data:`RECIPES`.
"""

from __future__ import annotations

import dataclasses
import importlib

from imagebuild.spec import ImageSpec

#: Recipe modules, in the order images are listed.
RECIPES = ("busybox", "layered", "python", "python_plot", "desktop", "browser")


def load_images() -> dict[str, ImageSpec]:
    """``{image name: spec}`` of every recipe."""
    images: dict[str, ImageSpec] = {}
    for name in RECIPES:
        module = importlib.import_module(f"{__name__}.{name}")
        spec: ImageSpec = module.SPEC
        images[spec.name] = dataclasses.replace(spec, module=module.__name__)
    return images
