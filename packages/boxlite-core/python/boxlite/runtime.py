"""The runtime and the low-level box API (``Boxlite``, ``Box``, ``Execution``, ``ExecResult``)."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from . import _bridge, _engine
from .images import Images
from .options import BoxOptions, Options, normalize_env

logger = logging.getLogger("boxlite")

#: Where the wheel keeps the guest kernel and initramfs.
GUEST_DIR = Path(__file__).parent / "_guest"

#: Seconds allowed at interpreter exit to stop boxes cleanly before their VMs are killed.
EXIT_STOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class ExecResult:
    """How an execution ended, with its complete output.

    ``exit_code`` follows the shell convention: 128 + N when signal N killed the process,
    127 when the command was not found in the box, 126 when it could not be executed.
    """

    exit_code: int
    stdout: str
    stderr: str
    signal: int | None = None
    #: Why the process never started (exit codes 126 and 127), if it did not.
    error: str | None = None
    #: The timeout fired: every process the execution started was killed; ``exit_code`` is 124.
    timed_out: bool = False
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)

    @property
    def returncode(self) -> int:
        """Alias of :attr:`exit_code` (as in :mod:`subprocess`)."""
        return self.exit_code

    @property
    def success(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def _from_engine(cls, output: _engine.ExecOutput) -> ExecResult:
        out, err = output.stdout, output.stderr
        return cls(
            exit_code=output.exit_code,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            signal=output.signal,
            error=output.error,
            timed_out=output.timed_out,
            stdout_bytes=out,
            stderr_bytes=err,
        )


class Execution:
    """A process started with :meth:`Box.exec`."""

    def __init__(self, inner: _engine.Execution) -> None:
        self._inner = inner

    @property
    def id(self) -> int:
        return self._inner.id

    async def wait(self) -> ExecResult:
        """Waits for the process to end and returns its exit code and output.

        If the waiting is cancelled (``asyncio.wait_for`` timing out, a cancelled task), every
        process the execution started is killed before the cancellation propagates.
        """
        try:
            return ExecResult._from_engine(await _bridge.call(self._inner.wait))
        except asyncio.CancelledError:
            await _bridge.call(self._inner.kill)
            raise

    async def kill(self) -> None:
        """Kills every process the execution started (its cgroup in the guest), including
        descendants that left its process group or daemonised."""
        await _bridge.call(self._inner.kill)

    async def signal(self, signal: int) -> None:
        """Sends ``signal`` to the process group."""
        await _bridge.call(lambda c: self._inner.signal(c, signal))


class BoxInfo(BaseModel):
    """A snapshot of a box (as the engine reports it)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str | None
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


def _exec_args(args: Sequence[str] | str | None) -> list[str]:
    if args is None:
        return []
    if isinstance(args, str):
        return [args]
    return [str(a) for a in args]


class Box:
    """A box created by :meth:`Boxlite.create`: one VM with its own kernel."""

    def __init__(self, inner: _engine.Box, runtime: Boxlite) -> None:
        self._inner = inner
        self._runtime = runtime

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def name(self) -> str | None:
        return self._inner.name

    def info(self) -> BoxInfo:
        """A snapshot of the box's state."""
        return BoxInfo.model_validate_json(self._inner.info())

    async def exec(
        self,
        cmd: str,
        args: Sequence[str] | str | None = None,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        *,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
    ) -> Execution:
        """Starts ``cmd`` with ``args`` in the box; ``await execution.wait()`` for the result.

        ``env`` adds to the box's and the image's environment. ``user`` is ``uid[:gid]``.
        With ``timeout`` (seconds), ``wait()`` kills every process the execution started once
        it runs longer, and returns a result with ``timed_out=True`` and exit code 124.
        """
        argv, pairs = _exec_args(args), normalize_env(env)
        inner = await _bridge.call(
            lambda c: self._inner.exec(c, str(cmd), argv, pairs, working_dir, user, False, timeout)
        )
        return Execution(inner)

    async def run(
        self,
        cmd: str,
        args: Sequence[str] | str | None = None,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        *,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Runs ``cmd`` to its end and returns its result: :meth:`exec` and ``wait()`` in one call.

        ``timeout`` works as in :meth:`exec`; a cancelled call kills the execution's processes.
        """
        argv, pairs = _exec_args(args), normalize_env(env)
        output = await _bridge.call(lambda c: self._inner.run(c, str(cmd), argv, pairs, working_dir, user, timeout))
        return ExecResult._from_engine(output)

    async def start(self) -> None:
        """Starts a stopped box again (a kept box keeps its files)."""
        await _bridge.call(self._inner.start)

    async def stop(self) -> None:
        """Shuts the guest down; with ``auto_remove`` the box's files are deleted too."""
        await _bridge.call(self._inner.stop)

    def __repr__(self) -> str:
        return f"<boxlite.Box id={self.id} status={self.info().status}>"


class Boxlite:
    """The BoxLite runtime: a home directory (``BOXLITE_HOME``) and the boxes in it."""

    _default: Boxlite | None = None
    _default_lock = threading.Lock()

    def __init__(self, options: Options | None = None) -> None:
        options = options or Options()
        payload = {
            "home_dir": options.home_dir,
            "guest_dir": str(GUEST_DIR),
            **options.model_dump(mode="json", include={"registry_mirrors", "image_registries"}),
        }
        self._inner = _engine.Runtime(json.dumps(payload))
        #: The image cache: ``pull()``, ``list()``, ``remove()``, ``prune()``.
        self.images = Images(self._inner)
        _live_runtimes.append(self)

    @classmethod
    def default(cls) -> Boxlite:
        """The process-wide runtime on the default home directory."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    @property
    def home(self) -> Path:
        return Path(self._inner.home)

    async def create(self, options: BoxOptions) -> Box:
        """Creates a box from ``options`` and boots it."""
        payload = options.model_dump_json()
        return Box(await _bridge.call(lambda c: self._inner.create(c, payload)), self)

    async def get(self, id_or_name: str) -> Box:
        """The box with this id or name, also one created by another process (a kept box can be
        started again; one whose owner died is reattached); :class:`~boxlite.errors.BoxNotFoundError`
        otherwise."""
        return Box(await _bridge.call(lambda c: self._inner.get(c, id_or_name)), self)

    async def get_info(self, id_or_name: str) -> BoxInfo:
        """The info of a box of this home, without taking it over."""
        return BoxInfo.model_validate_json(self._inner.get_info(id_or_name))

    async def list_info(self) -> list[BoxInfo]:
        """Infos of every box of this home (``db/boxes.db``), whichever process created it."""
        return [BoxInfo.model_validate(d) for d in json.loads(self._inner.list_info())]

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        """Deletes a box and its files; ``force`` stops a running box first."""
        await _bridge.call(lambda c: self._inner.remove(c, id_or_name, force))

    async def accelerator(self) -> dict[str, str]:
        """The accelerator boxes run on (``accel``) and why (``reason``)."""
        result: dict[str, str] = json.loads(await _bridge.call(self._inner.accelerator))
        return result

    async def shutdown(self) -> None:
        """Stops every running box of this runtime."""
        await _bridge.call(self._inner.shutdown)

    async def bare_boot_ms(self) -> float:
        """Boots the guest kernel and agent alone (no disk); milliseconds to the agent's hello.

        The baseline the start-up benchmark compares ``create()`` against.
        """
        result: float = await _bridge.call(self._inner.bare_boot_ms)
        return result

    def _shutdown_at_exit(self) -> None:
        self._inner.shutdown_blocking(EXIT_STOP_TIMEOUT)


# Strong references: a runtime's boxes must be stopped at exit even if the caller dropped it.
_live_runtimes: list[Boxlite] = []


@atexit.register
def _stop_boxes_at_exit() -> None:
    """No VM outlives the interpreter that started it."""
    for runtime in list(_live_runtimes):
        try:
            runtime._shutdown_at_exit()
        except Exception:  # pragma: no cover - best effort at exit
            logger.exception("stopping boxes at exit failed")
