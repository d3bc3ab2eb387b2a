"""Runtime and box options.

Pydantic checks types and shapes here; ranges and semantics are checked once, by the engine
(``crates/engine/src/options.rs``), so the rules live in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from .images import ImageRegistry


def normalize_env(env: Mapping[str, str] | list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """Accepts a mapping or ``(key, value)`` pairs; returns pairs."""
    if env is None:
        return []
    if isinstance(env, Mapping):
        return [(str(k), str(v)) for k, v in env.items()]
    return [(str(k), str(v)) for k, v in env]


class Options(BaseModel):
    """Options of a :class:`boxlite.Boxlite` runtime.

    Attributes:
        home_dir: Where images, boxes and state live. Default: ``BOXLITE_HOME`` or ``~/.boxlite``.
        registry_mirrors: Mirrors per registry, tried in order before it, e.g.
            ``{"docker.io": ["http://127.0.0.1:5000"]}``. ``BOXLITE_REGISTRY_MIRRORS``
            (``docker.io=http://127.0.0.1:5000,ghcr.io=https://mirror.example``) adds more.
        image_registries: Credentials and settings per registry host (:class:`ImageRegistry`).
    """

    model_config = ConfigDict(extra="forbid")

    home_dir: str | None = None
    registry_mirrors: dict[str, list[str]] = {}
    image_registries: list[ImageRegistry] = []

    @field_validator("registry_mirrors", mode="before")
    @classmethod
    def _mirror_lists(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("home_dir", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value


class BoxOptions(BaseModel):
    """Configuration of one box.

    Attributes:
        image: An image reference, or the path of an OCI image layout.
        rootfs_path: The path of an OCI image layout (``path`` or ``path:tag``).
        name: Optional unique name to find the box by.
        cpus: Virtual CPUs (1 to the host's CPU count).
        memory_mib: Guest memory in MiB (128 to 65536).
        working_dir: Working directory of executions (absolute; created if missing).
        env: Environment of every execution, as a mapping or ``(key, value)`` pairs.
        auto_remove: Delete the box's disk and state when it stops. ``False`` keeps the box:
            its whole file system survives ``stop()``/``start()`` and the Python process.
        disk_size_gb: Free space of the box's root file system in GiB (default 4; sparse on
            the host).
    """

    model_config = ConfigDict(extra="forbid")

    image: str | None = None
    rootfs_path: str | None = None
    name: str | None = None
    cpus: int = 1
    memory_mib: int = 2048
    working_dir: str | None = None
    env: list[tuple[str, str]] = []
    auto_remove: bool = True
    disk_size_gb: int | None = None

    @field_validator("env", mode="before")
    @classmethod
    def _env_pairs(cls, value: Any) -> list[tuple[str, str]]:
        return normalize_env(value)

    @field_validator("image", "rootfs_path", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value
