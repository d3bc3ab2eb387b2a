"""What the engine reports about boxes, as frozen models: ``BoxInfo`` (a box's snapshot),
``BoxMetrics`` (a running box's resource use) and ``RuntimeMetrics`` (totals of a runtime)."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict


class BoxMetrics(BaseModel):
    """Resource use of a running box (``await box.metrics()``)."""

    model_config = ConfigDict(frozen=True)

    #: Guest memory in use (total minus available), in bytes.
    mem: int
    mem_total: int
    mem_available: int
    #: Memory charged to the box's executions, in bytes.
    mem_used_by_executions: int
    #: CPU time of all vCPUs since boot, in milliseconds, as the guest counts it.
    cpu_user_ms: int
    cpu_system_ms: int
    cpu_idle_ms: int
    #: Processes alive in the guest (its agent included).
    processes: int
    guest_uptime_ms: int
    execs_started: int
    execs_running: int
    #: The VMM process on the host: resident memory (bytes) and CPU time (ms).
    vmm_rss: int
    vmm_cpu_ms: int
    #: Durations of the stages of the last start (image, disk, spawn, boot), in milliseconds.
    timings: dict[str, int]

    @classmethod
    def _from_json(cls, payload: str) -> BoxMetrics:
        raw = json.loads(payload)
        guest = raw["guest"]
        return cls(
            mem=guest["mem_total"] - guest["mem_available"],
            mem_total=guest["mem_total"],
            mem_available=guest["mem_available"],
            mem_used_by_executions=guest["mem_used_by_executions"],
            cpu_user_ms=guest["cpu_user_ms"],
            cpu_system_ms=guest["cpu_system_ms"],
            cpu_idle_ms=guest["cpu_idle_ms"],
            processes=guest["processes"],
            guest_uptime_ms=guest["uptime_ms"],
            execs_started=raw["execs_started"],
            execs_running=guest["execs_running"],
            vmm_rss=raw["vmm_rss_bytes"],
            vmm_cpu_ms=raw["vmm_cpu_ms"],
            timings=raw["timings"],
        )


class RuntimeMetrics(BaseModel):
    """Totals over a runtime's boxes (``runtime.metrics()``)."""

    model_config = ConfigDict(frozen=True)

    boxes_total: int
    boxes_running: int
    boxes_created: int
    execs_started: int
    #: Resident memory of all running VMM processes, in bytes.
    vmm_rss_bytes: int


class BoxInfo(BaseModel):
    """A snapshot of a box (as the engine reports it)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str | None
    #: ``created``, ``running``, ``paused``, ``stopping``, ``stopped``, ``crashed`` or ``removed``.
    status: str
    image: str
    image_digest: str
    cpus: int
    memory_mib: int
    auto_remove: bool
    #: The accelerator the VM runs on: ``kvm``, ``hvf``, ``whpx`` or ``tcg`` (emulation).
    accel: str
    accel_reason: str
    #: ``uname -r`` of the guest kernel, while running.
    kernel_release: str | None
    #: Host process id of the VMM, while running.
    vmm_pid: int | None
    created_at: str
    dir: str
    #: Durations of the stages of the last start, in milliseconds.
    timings: dict[str, int]
    last_error: str | None
    #: A stopped box that holds the state ``stop(keep_state=True)`` saved: its next
    #: ``start()`` resumes it where it was instead of booting.
    hibernated: bool = False


__all__ = ["BoxInfo", "BoxMetrics", "RuntimeMetrics"]
