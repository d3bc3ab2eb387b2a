"""What a recipe declares (:class:`ImageSpec`) and what its build function gets (:class:`BuildContext`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .layout import LayoutWriter


@dataclass
class BuildContext:
    """What an image's build function gets: where to write, its tag, dependencies, scratch space."""

    out: LayoutWriter
    ref_name: str
    deps: dict[str, Path]
    work: Path
    cache_dir: Path


@dataclass(frozen=True)
class ImageSpec:
    """How to build one image: what a recipe module (``recipes/<name>.py``) declares as ``SPEC``.

    ``inputs`` returns the cheap facts (besides code) that decide the image's content; they, the
    shared modules that write images and the recipe's own module(s) make the cache key, so editing
    one recipe rebuilds only its image. ``build`` writes the layout and returns details for the
    build record. ``default=False`` marks a heavy image built only when asked for by name.
    ``module`` is filled in by the loader.
    """

    name: str
    ref_name: str
    inputs: Callable[[], dict[str, Any]]
    build: Callable[[BuildContext], dict[str, Any]]
    depends_on: tuple[str, ...] = ()
    default: bool = True
    module: str = ""


def recipe_files(spec: ImageSpec) -> list[Path]:
    """The source files of ``spec``'s recipe module and of the other recipe modules it uses."""
    package = spec.module.rpartition(".")[0]
    found: dict[str, Path] = {}

    def visit(module: ModuleType) -> None:
        if module.__name__ in found or module.__file__ is None:
            return
        found[module.__name__] = Path(module.__file__)
        for value in vars(module).values():
            used = value if isinstance(value, ModuleType) else sys.modules.get(getattr(value, "__module__", "") or "")
            if used is not None and used.__name__.startswith(package + "."):
                visit(used)

    visit(sys.modules[spec.module])
    return [found[name] for name in sorted(found)]
