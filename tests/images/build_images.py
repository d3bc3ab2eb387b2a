#!/usr/bin/env python3
"""Build BoxLite's test images as OCI image layouts, from Debian packages, cached outside git.

Each image is a recipe module in ``recipes/`` (its docstring says what is in it; ``RECIPES``
lists them); the machinery they share is the package ``imagebuild/``: layer entries
(``entries``), OCI layouts (``layout``), debootstrap (``debian``) and the cache (``cache``).
Heavy images (``default=False`` in their spec) are built only when named.

Every image is built into a temporary directory and renamed into the cache as
``<cache>/<name>-<key>``, where the key hashes what decides its content (the shared code that
writes images, the image's recipe module, the busybox binary, the debootstrap version, the Debian suite, mirror and
packages), so an image is rebuilt only when one of those changes. ``<cache>/<name>`` is a
symlink to the newest one. The default cache is
``${BOXLITE_BUILD_CACHE:-~/.cache/boxlite-build}/test-images``.

Layers are written with :mod:`tarfile` from explicitly stated headers (owners, modes, links,
device nodes; no root needed for that), sorted, with fixed timestamps and a gzip header with
no name or time, so busybox and layered rebuild to identical digests, and so does python as
long as the Debian archive serves the same package versions.

Usage::

    python tests/images/build_images.py [--cache DIR] [--rebuild] [--verify] [--prune] [names...]

The last line on stdout is a JSON object mapping each requested image to its layout
directory. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from imagebuild import cache
from imagebuild.cache import prune
from imagebuild.common import BuildError, LayoutError, default_cache_dir
from imagebuild.layout import verify_layout
from recipes import load_images

__all__ = ["IMAGES", "BuildError", "LayoutError", "build_images", "main", "prune", "verify_layout"]

log = logging.getLogger("build_images")

#: Every test image, by name.
IMAGES = load_images()


def build_images(
    names: Iterable[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    rebuild: bool = False,
) -> dict[str, Path]:
    """Builds (or finds in the cache) the named images; the default ones when ``names`` is None
    (heavy images such as ``browser`` and ``desktop`` are built only when named).

    Returns ``{name: OCI layout directory}`` for the requested images. ``rebuild`` rebuilds
    the requested ones (not their dependencies) even when cached. Raises :class:`BuildError`
    when an image cannot be built and :class:`ValueError` for an unknown name.
    """
    return cache.build_images(IMAGES, names, cache_dir, rebuild=rebuild)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; prints ``{name: layout path}`` as JSON on the last stdout line."""
    parser = argparse.ArgumentParser(description="Build BoxLite's test images as cached OCI image layouts.")
    defaults = ", ".join(n for n, spec in IMAGES.items() if spec.default)
    others = ", ".join(n for n, spec in IMAGES.items() if not spec.default) or "none"
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"images to build (default: {defaults}; also: {others})"
    )
    parser.add_argument("--cache", type=Path, metavar="DIR", help=f"cache directory (default: {default_cache_dir()})")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the named images even when cached")
    parser.add_argument("--verify", action="store_true", help="verify each layout (digests, diff_ids), log a summary")
    parser.add_argument("--prune", action="store_true", help="delete older cached builds of the named images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="build_images: %(message)s", stream=sys.stderr)
    try:
        paths = build_images(args.names or None, args.cache, rebuild=args.rebuild)
        if args.verify:
            for name, path in paths.items():
                summary = verify_layout(path)
                log.info("%s: verified %s", name, json.dumps(summary))
        if args.prune:
            for path in prune(paths):
                log.info("pruned %s", path)
    except (BuildError, LayoutError, ValueError) as e:
        print(f"build_images: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({name: str(path) for name, path in paths.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
