"""Runtime and box options.

Pydantic checks types and shapes here; ranges and semantics are checked once, by the engine
(``crates/engine/src/options.rs``), so the rules live in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from .contract import DEFAULT_COPY_OUT_MAX_BYTES, DEFAULT_MAX_OUTPUT_BYTES
from .images import ImageRegistry


def normalize_env(env: Mapping[str, str] | list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """Accepts a mapping or ``(key, value)`` pairs; returns pairs."""
    if env is None:
        return []
    if isinstance(env, Mapping):
        return [(str(k), str(v)) for k, v in env.items()]
    return [(str(k), str(v)) for k, v in env]


def normalize_args(args: Sequence[str] | str | None) -> list[str]:
    """Accepts a command's arguments as a sequence, one string (one argument) or None; returns a list."""
    if args is None:
        return []
    if isinstance(args, str):
        return [args]
    return [str(a) for a in args]


class Options(BaseModel):
    """Options of a :class:`boxlite.Boxlite` runtime.

    Attributes:
        home_dir: Where images, boxes and state live. Default: ``BOXLITE_HOME`` or ``~/.boxlite``.
        registry_mirrors: Mirrors per registry, tried in order before it, e.g.
            ``{"docker.io": ["http://127.0.0.1:5000"]}``. ``BOXLITE_REGISTRY_MIRRORS``
            (``docker.io=http://127.0.0.1:5000,ghcr.io=https://mirror.example``) adds more.
        image_registries: Credentials and settings per registry host (:class:`ImageRegistry`).
        image_max_bytes: Most bytes of file content one image may unpack to (all layers; also
            the most its layers may state on a pull). Images are untrusted: a gzip or
            sparse-file bomb fails with an :class:`ImageError` naming this limit. Default 16 GiB.
        image_max_entries: Most files, directories and other entries one image may hold (all
            layers). Default 1,000,000.
    """

    model_config = ConfigDict(extra="forbid")

    home_dir: str | None = None
    registry_mirrors: dict[str, list[str]] = {}
    image_registries: list[ImageRegistry] = []
    image_max_bytes: int | None = None
    image_max_entries: int | None = None

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


class SecurityOptions(BaseModel):
    """How tightly a box is confined (import it from ``boxlite.boxlite``).

    The box is a VM, so its own kernel is the main boundary; these options add limits inside
    the guest for every command the box runs, and confine the VMM process on the host.

    Attributes:
        jailer_enabled: Confine the VMM: when the engine runs as root, QEMU chroots into an
            empty directory and drops to uid/gid 65534 once its files are open. Unprivileged,
            QEMU already runs as the calling user and cannot chroot; the flag adds nothing then,
            nor for a box with volumes (QEMU's 9p server reaches them by path).
        seccomp_enabled: QEMU's seccomp filter (``-sandbox on``): obsolete system calls,
            spawning processes, changing resource controls and raising privileges are denied.
        max_open_files: ``RLIMIT_NOFILE`` of every process the box runs.
        max_file_size: Largest file (bytes) a process of the box may write (``RLIMIT_FSIZE``).
        max_processes: Processes and threads one execution may have alive at once (its
            cgroup's ``pids.max``): a fork bomb hits it and the box stays responsive.
        max_memory: Virtual memory (bytes) of every process (``RLIMIT_AS``). The box's total is
            ``BoxOptions.memory_mib``.
        max_cpu_time: CPU seconds of every process (``RLIMIT_CPU``).
        network_enabled: Give the box a network device. ``False`` means none at all.
        close_fds: Start the VMM with none of the calling process's file descriptors.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    jailer_enabled: bool = True
    seccomp_enabled: bool = True
    max_open_files: int | None = None
    max_file_size: int | None = None
    max_processes: int | None = None
    max_memory: int | None = None
    max_cpu_time: int | None = None
    network_enabled: bool = True
    close_fds: bool = True

    @classmethod
    def development(cls) -> SecurityOptions:
        """No jailer, no seccomp filter, no limits: for debugging sandbox issues."""
        return cls(jailer_enabled=False, seccomp_enabled=False)

    @classmethod
    def standard(cls) -> SecurityOptions:
        """Jailer and seccomp filter on, no resource limits (the default)."""
        return cls()

    @classmethod
    def maximum(cls) -> SecurityOptions:
        """Jailer and seccomp on, plus limits for untrusted code: 1024 open files, 1 GiB
        files, 100 processes per execution."""
        return cls(max_open_files=1024, max_file_size=1 << 30, max_processes=100)


class NetworkSpec(BaseModel):
    """What a box's network may reach (upstream's ``boxlite.NetworkSpec``).

    A box never reaches the host by any of its addresses (IPv4 or IPv6, every interface) nor
    link-local addresses such as the cloud metadata service at 169.254.169.254, whatever
    this says; host services are reachable only through forwarded ports (``BoxOptions.ports``).

    Attributes:
        mode: ``"enabled"`` (default) or ``"disabled"`` (no network device at all, as
            ``network_enabled=False``).
        allow_net: Host names (``example.com``), wildcards (``*.example.com``: every name below
            it), addresses and CIDR networks (``10.0.0.0/8``) the box may reach; everything else
            is refused, and DNS queries for names not listed get no answer. Empty (default):
            every destination but the host's and link-local ones.
    """

    model_config = ConfigDict(extra="forbid")

    mode: str = "enabled"
    allow_net: list[str] = []


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
        security: Confinement and limits (:class:`SecurityOptions`; default ``standard()``).
        network_enabled: Give the box a network device (outbound traffic and DNS through
            passt). ``False``, or ``security.network_enabled=False``, means no device at all.
        ports: ``(host_port, guest_port)`` or ``(host_port, guest_port, "tcp"|"udp")``:
            127.0.0.1:host_port on the host reaches guest_port in the box. The box cannot reach
            the host's own services otherwise.
        network: A :class:`NetworkSpec`, or a list of ``allow_net`` entries as a shorthand for
            ``NetworkSpec(allow_net=[...])``.
        volumes: ``(host_dir, guest_path)`` or ``(host_dir, guest_path, "ro"|"rw")`` (default
            ``rw``): a host directory shared into the box; ``ro`` is read-only for the box.
            Owners, modes and special files the box sets stay box-side (extended attributes):
            on the host, what the box creates is plain 0600/0700 files of the host user.
            At most 4 (5 without the network): each is a device of the VM.
        copy_out_max_bytes: The most bytes one ``copy_out`` may write on the host (the box's
            archive: file contents plus 512 bytes per entry; default 4 GiB, at least 64 KiB).
            A larger copy fails with :class:`~boxlite.errors.CopyError` naming this option.
        max_output_bytes: Bytes of stdout (and, separately, of stderr) a result of ``run()``,
            ``wait()`` or ``SimpleBox.exec()`` keeps (default 4 MiB, at most 1 GiB). The process
            is never held up: the rest is read and dropped, and the result has
            ``truncated=True``. Read more through ``execution.stdout()`` or ``copy_out``.
        snapshot: Restore the box from this snapshot (name or id, see ``runtime.snapshots``)
            instead of booting it: its memory, processes and files as they were when it was
            taken. The VM's shape (image, cpus, memory, network device, disk size) is the
            snapshot's and overrides those options here; volumes are refused. A snapshot taken
            with another guest kernel, agent or QEMU, or whose state file changed, is refused
            (:class:`~boxlite.errors.SnapshotError`).
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
    security: SecurityOptions = SecurityOptions()
    network_enabled: bool = True
    ports: list[tuple[int, int, str]] = []
    network: NetworkSpec = NetworkSpec()
    volumes: list[tuple[str, str, str]] = []
    copy_out_max_bytes: int = DEFAULT_COPY_OUT_MAX_BYTES
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    snapshot: str | None = None

    @field_validator("network", mode="before")
    @classmethod
    def _allow_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return NetworkSpec(allow_net=list(value))
        return value

    @field_validator("volumes", mode="before")
    @classmethod
    def _volume_triples(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        out = []
        for v in value:
            if isinstance(v, list | tuple):
                v = (str(Path(v[0]).resolve()) if isinstance(v[0], str | Path) else v[0], *v[1:])
                if len(v) == 2:
                    v = (*v, "rw")
            out.append(v)
        return out

    @field_validator("ports", mode="before")
    @classmethod
    def _port_triples(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        return [(*p, "tcp") if isinstance(p, list | tuple) and len(p) == 2 else p for p in value]

    @field_validator("env", mode="before")
    @classmethod
    def _env_pairs(cls, value: Any) -> list[tuple[str, str]]:
        return normalize_env(value)

    @field_validator("image", "rootfs_path", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value
