"""The image cache: keys from inputs and code, locking, building what is missing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .common import canonical_json, default_cache_dir, locked, remove_tree
from .layout import LayoutWriter, verify_layout
from .spec import BuildContext, ImageSpec, recipe_files

#: Bump to invalidate every cached image (the code is part of each key anyway).
FORMAT_VERSION = 1
#: The modules of this package whose code decides what an image contains.
CONTENT_MODULES = ("common.py", "entries.py", "layout.py", "debian.py")

log = logging.getLogger("build_images")


def _code_fingerprint(spec: ImageSpec) -> str:
    """Hash of the code that decides ``spec``'s content: the shared modules that write images
    (not this cache module: bump :data:`FORMAT_VERSION` for that) and its recipe module(s)."""
    files = [Path(__file__).parent / name for name in CONTENT_MODULES]
    files += recipe_files(spec)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(spec: ImageSpec, dep_keys: dict[str, str]) -> str:
    """The cache key of ``spec``: its inputs, its code, its dependencies' keys."""
    material = {
        "format": FORMAT_VERSION,
        "name": spec.name,
        "ref_name": spec.ref_name,
        "inputs": spec.inputs(),
        "code": _code_fingerprint(spec),
        "deps": dep_keys,
    }
    return hashlib.sha256(canonical_json(material)).hexdigest()[:16]


def _point_symlink(cache: Path, name: str, target: str) -> None:
    """Atomically points ``cache/name`` at ``target`` (a convenience for people)."""
    link = cache / name
    if link.exists() and not link.is_symlink():
        return
    temp = cache / f".{name}.link-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    temp.symlink_to(target)
    os.replace(temp, link)


def _ensure_image(spec: ImageSpec, cache: Path, keys: dict[str, str], paths: dict[str, Path], rebuild: bool) -> Path:
    """Returns the cached layout of ``spec``, building it first if it is missing (or ``rebuild``)."""
    key = cache_key(spec, {d: keys[d] for d in spec.depends_on})
    keys[spec.name] = key
    final = cache / f"{spec.name}-{key}"
    with locked(cache / f".{spec.name}.lock"):
        if (final / "index.json").is_file() and not rebuild:
            log.info("%s: cached at %s", spec.name, final)
            _point_symlink(cache, spec.name, final.name)
            return final
        for stale in cache.glob(f".tmp-{spec.name}-*"):
            log.info("%s: removing %s, left by an interrupted build", spec.name, stale)
            remove_tree(stale)
        log.info("%s: building (key %s)", spec.name, key)
        started = time.monotonic()
        temp = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.name}-", dir=cache))
        try:
            (temp / "work").mkdir()
            deps = {d: paths[d] for d in spec.depends_on}
            details = spec.build(BuildContext(LayoutWriter(temp / "layout"), spec.ref_name, deps, temp / "work", cache))
            summary = verify_layout(temp / "layout")
            if final.exists():
                os.rename(final, temp / "replaced")
            os.rename(temp / "layout", final)
        finally:
            remove_tree(temp)
        seconds = round(time.monotonic() - started, 2)
        record = {"name": spec.name, "key": key, "inputs": spec.inputs(), "build_seconds": seconds}
        record |= summary | details
        record_path = cache / f"{spec.name}-{key}.json"
        record_path.with_suffix(".tmp").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.replace(record_path.with_suffix(".tmp"), record_path)
        _point_symlink(cache, spec.name, final.name)
        log.info("%s: built in %.1f s: %s (%d bytes gzipped)", spec.name, seconds, final, summary["compressed_bytes"])
        return final


def _with_dependencies(images: Mapping[str, ImageSpec], names: Iterable[str]) -> list[str]:
    """``names`` and what they depend on, dependencies first."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        for dep in images[name].depends_on:
            visit(dep)
        if name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def build_images(
    images: Mapping[str, ImageSpec],
    names: Iterable[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    rebuild: bool = False,
) -> dict[str, Path]:
    """Builds (or finds in the cache) the named ``images``; the default ones when ``names`` is None.

    Returns ``{name: OCI layout directory}`` for the requested images. ``rebuild`` rebuilds
    the requested ones (not their dependencies) even when cached. Raises :class:`BuildError`
    when an image cannot be built and :class:`ValueError` for an unknown name.
    """
    requested = list(dict.fromkeys(names)) if names else [n for n, spec in images.items() if spec.default]
    if unknown := [n for n in requested if n not in images]:
        raise ValueError(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(images)}")
    cache = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()).absolute()
    cache.mkdir(parents=True, exist_ok=True)
    keys: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for name in _with_dependencies(images, requested):
        paths[name] = _ensure_image(images[name], cache, keys, paths, rebuild and name in requested)
    return {name: paths[name] for name in requested}


def prune(paths: dict[str, Path]) -> list[Path]:
    """Deletes other cached builds of the images in ``paths`` (older keys); returns what went."""
    removed = []
    for name, keep in paths.items():
        cache = keep.parent
        with locked(cache / f".{name}.lock"):
            for candidate in cache.glob(f"{name}-*"):
                if candidate.name.removesuffix(".json") != keep.name and re.fullmatch(
                    rf"{re.escape(name)}-[0-9a-f]{{16}}(\.json)?", candidate.name
                ):
                    if candidate.is_dir():
                        shutil.rmtree(candidate)
                    else:
                        candidate.unlink()
                    removed.append(candidate)
    return removed
