"""The runtime and the low-level box API (``Boxlite``, ``Box``, ``Execution``, ``ExecResult``)."""

from __future__ import annotations

import asyncio
import atexit
import codecs
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from . import _bridge, _engine
from .errors import OutputLimitError
from .images import Images
from .options import BoxOptions, Options, normalize_env

logger = logging.getLogger("boxlite")

#: Where the wheel keeps the guest kernel and initramfs.
GUEST_DIR = Path(__file__).parent / "_guest"

#: Terminal size of a ``tty=True`` execution until it is resized (rows, columns).
DEFAULT_TTY_SIZE = (24, 80)

#: Seconds allowed at interpreter exit to stop boxes cleanly before their VMs are killed.
EXIT_STOP_TIMEOUT = 20.0

#: Longest line :meth:`ExecOutputStream.readline` returns unless given a ``limit``.
DEFAULT_LINE_LIMIT = 1024 * 1024

#: Most bytes :meth:`ExecOutputStream.read` and :meth:`~ExecOutputStream.readexactly` return
#: unless given a ``limit``.
DEFAULT_READ_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class ExecResult:
    """How an execution ended, with its output.

    ``exit_code`` follows the shell convention: 128 + N when signal N killed the process,
    127 when the command was not found in the box, 126 when it could not be executed.
    Each stream keeps at most ``max_output_bytes`` (``BoxOptions``, or the call's); beyond
    that the output is read and dropped, ``truncated`` is true and ``stdout_dropped`` /
    ``stderr_dropped`` count the bytes dropped.
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
    #: Bytes of stdout / stderr dropped beyond the output limit.
    stdout_dropped: int = 0
    stderr_dropped: int = 0

    @property
    def truncated(self) -> bool:
        """Part of the output was dropped: a stream wrote more than the output limit."""
        return self.stdout_dropped > 0 or self.stderr_dropped > 0

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
            stdout_dropped=output.stdout_dropped,
            stderr_dropped=output.stderr_dropped,
        )


class ExecStdin:
    """The standard input of an execution (``execution.stdin()``)."""

    def __init__(self, inner: _engine.Execution) -> None:
        self._inner = inner

    async def send_input(self, data: bytes | str) -> None:
        """Sends ``data`` (``str`` is encoded as UTF-8). Waits while the box has a window's
        worth of earlier input not yet delivered to the process."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        await _bridge.call(lambda c: self._inner.write_stdin(c, payload))

    #: Alias of :meth:`send_input`.
    write = send_input

    async def close(self) -> None:
        """End of input for the process (``^D`` on a terminal)."""
        await _bridge.call(self._inner.close_stdin)


class ExecOutputStream:
    """One output stream of an execution, read as it arrives.

    ``async for line in stream`` yields text lines (newline kept, invalid UTF-8 replaced);
    :meth:`chunks` yields raw bytes as they come; :meth:`readline`, :meth:`readexactly` and
    :meth:`read` read bytes. Output read this way is not part of ``wait()``'s result, and only
    a bounded amount of it (about 1 MiB) is ever held on the host, however much the process
    writes: a process whose output nobody reads waits, as with a pipe. The reads that gather
    bytes (:meth:`readline`, :meth:`readexactly`, :meth:`read`) each take a ``limit`` and
    raise :class:`~boxlite.errors.OutputLimitError` rather than hold more.
    """

    def __init__(self, inner: _engine.Execution, name: str) -> None:
        self._inner = inner
        self._name = name
        self._buffer = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        """Reads one more chunk into the buffer; False at the end of the stream."""
        if self._eof:
            return False
        chunk: bytes | None = await _bridge.call(lambda c: self._inner.read_output(c, self._name))
        if chunk is None:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raw output chunks as they arrive."""
        while True:
            if self._buffer:
                data = bytes(self._buffer)
                self._buffer.clear()
                yield data
            if not await self._fill():
                return

    async def readline(self, limit: int = DEFAULT_LINE_LIMIT) -> bytes:
        """The next line, newline included; what is left without one at the end; ``b""`` at EOF.

        :class:`~boxlite.errors.OutputLimitError` when ``limit`` bytes arrive without a newline
        (they stay buffered: :meth:`chunks` or :meth:`readexactly` can still take them).
        """
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0 and end < limit:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if end >= 0 or len(self._buffer) > limit:
                raise OutputLimitError(
                    f"the {self._name} line is longer than readline's limit of {limit} bytes: "
                    "pass a larger limit=, or read chunks()"
                )
            searched = len(self._buffer)
            if not await self._fill():
                line = bytes(self._buffer)
                self._buffer.clear()
                return line

    async def readexactly(self, n: int, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        """Exactly ``n`` bytes; :class:`asyncio.IncompleteReadError` if the stream ends first.

        ``n`` often comes from the box (a length header): more than ``limit`` is refused with
        :class:`~boxlite.errors.OutputLimitError` before anything is read.
        """
        if n < 0 or n > limit:
            raise OutputLimitError(f"readexactly({n}) on {self._name}: use 0 to {limit} bytes (the limit= argument)")
        while len(self._buffer) < n:
            if not await self._fill():
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise asyncio.IncompleteReadError(partial, n)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read(self, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        """Everything up to the end of the stream; :class:`~boxlite.errors.OutputLimitError`
        once more than ``limit`` bytes arrived (read :meth:`chunks` for output of any size)."""
        while await self._fill():
            if len(self._buffer) > limit:
                raise OutputLimitError(
                    f"{self._name} holds more than read's limit of {limit} bytes: "
                    "pass a larger limit=, or read chunks()"
                )
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            line = await self.readline()
            if not line:
                tail = decoder.decode(b"", final=True)
                if tail:
                    yield tail
                return
            yield decoder.decode(line)


class Execution:
    """A process started with :meth:`Box.exec`.

    Its stdin is open: take it with :meth:`stdin`; if you never do, :meth:`wait` closes it
    first, so a program reading stdin sees end-of-file.
    """

    def __init__(self, inner: _engine.Execution) -> None:
        self._inner = inner
        self._stdin: ExecStdin | None = None
        self._streams: dict[str, ExecOutputStream] = {}

    @property
    def id(self) -> int:
        return self._inner.id

    @property
    def tty(self) -> bool:
        """Started with ``tty=True`` (stdout then carries stderr too)."""
        return self._inner.tty

    def stdin(self) -> ExecStdin:
        """The process's standard input."""
        if self._stdin is None:
            self._inner.claim_stdin()
            self._stdin = ExecStdin(self._inner)
        return self._stdin

    def _stream(self, name: str) -> ExecOutputStream:
        if name not in self._streams:
            self._streams[name] = ExecOutputStream(self._inner, name)
        return self._streams[name]

    def stdout(self) -> ExecOutputStream:
        """Standard output as it arrives (see :class:`ExecOutputStream`)."""
        return self._stream("stdout")

    def stderr(self) -> ExecOutputStream:
        """Standard error as it arrives (empty for a TTY execution)."""
        return self._stream("stderr")

    async def wait(self) -> ExecResult:
        """Waits for the process to end and returns its exit code and the output not read
        through :meth:`stdout` / :meth:`stderr`.

        If the waiting is cancelled (``asyncio.wait_for`` timing out, a cancelled task), every
        process the execution started is killed before the cancellation propagates.
        """
        try:
            return ExecResult._from_engine(await _bridge.call(self._inner.wait))
        except asyncio.CancelledError:
            await _bridge.call(self._inner.kill)
            raise

    def set_deadline(self, seconds: float | None) -> bool:
        """From now, the execution's timeout is ``seconds`` (``None`` disarms it), in place of
        the ``timeout`` it was started with. When it runs out, the engine does what it does
        for that timeout: it kills every process the execution started, and :meth:`wait`
        returns a result with ``timed_out=True`` and exit code
        :data:`~boxlite.contract.TIMEOUT_EXIT_CODE`.

        ``seconds`` must be a positive, finite number
        (:class:`~boxlite.errors.InvalidOptionError` otherwise, checked by the engine as
        ``timeout`` is). Returns whether the execution was still running with its timeout not
        fired; ``False`` means this did nothing (for a disarm: the timeout fired first).
        """
        return self._inner.set_deadline(seconds)

    async def kill(self) -> None:
        """Kills every process the execution started (its cgroup in the guest), including
        descendants that left its process group or daemonised."""
        await _bridge.call(self._inner.kill)

    async def signal(self, signal: int) -> None:
        """Sends ``signal`` to the process group."""
        await _bridge.call(lambda c: self._inner.signal(c, signal))

    async def resize_tty(self, rows: int, cols: int) -> None:
        """Sets the terminal size of a ``tty=True`` execution (its programs get ``SIGWINCH``);
        :class:`~boxlite.errors.InvalidOptionError` for any other execution."""
        await _bridge.call(lambda c: self._inner.resize_tty(c, rows, cols))


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
        tty: bool = False,
        max_output_bytes: int | None = None,
    ) -> Execution:
        """Starts ``cmd`` with ``args`` in the box; ``await execution.wait()`` for the result,
        or read its :meth:`~Execution.stdout` / :meth:`~Execution.stderr` as they arrive.

        ``env`` adds to the box's and the image's environment. ``user`` is ``uid[:gid]``.
        With ``timeout`` (seconds), every process the execution started is killed once it runs
        longer, and ``wait()`` returns a result with ``timed_out=True`` and exit code 124.
        ``tty=True`` runs it on a pseudo-terminal (24x80 until :meth:`~Execution.resize_tty`).
        ``max_output_bytes`` caps each stream in ``wait()``'s result (default: the box's).
        """
        argv, pairs = _exec_args(args), normalize_env(env)
        size = DEFAULT_TTY_SIZE if tty else None
        inner = await _bridge.call(
            lambda c: self._inner.exec(
                c, str(cmd), argv, pairs, working_dir, user, True, timeout, size, False, max_output_bytes
            )
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
        max_output_bytes: int | None = None,
    ) -> ExecResult:
        """Runs ``cmd`` to its end and returns its result: :meth:`exec` and ``wait()`` in one
        call, with stdin reading ``/dev/null``. A cancelled call kills the execution's processes.
        Each stream keeps at most ``max_output_bytes`` (default: the box's); see :class:`ExecResult`.
        """
        argv, pairs = _exec_args(args), normalize_env(env)
        output = await _bridge.call(
            lambda c: self._inner.exec(
                c, str(cmd), argv, pairs, working_dir, user, False, timeout, None, True, max_output_bytes
            )
        )
        return ExecResult._from_engine(output)

    async def metrics(self) -> BoxMetrics:
        """Resource use: guest memory and CPU, the VMM's host memory and CPU, executions, and
        the durations of the stages of the last start."""
        return BoxMetrics._from_json(await _bridge.call(self._inner.metrics))

    async def copy_in(self, host_path: str | os.PathLike[str], guest_path: str) -> None:
        """Copies a host file or directory tree into the box (as ``docker cp`` does: into
        ``guest_path`` when it is an existing directory, else as ``guest_path``), keeping modes."""
        source = os.fspath(host_path)
        await _bridge.call(lambda c: self._inner.copy_in(c, source, guest_path))

    async def copy_out(self, guest_path: str, host_path: str | os.PathLike[str]) -> None:
        """Copies a file or directory tree out of the box (into ``host_path`` when it is an
        existing directory, else as ``host_path``), keeping modes."""
        target = os.fspath(host_path)
        await _bridge.call(lambda c: self._inner.copy_out(c, guest_path, target))

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
            **options.model_dump(mode="json", include={"image_max_bytes", "image_max_entries"}, exclude_none=True),
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

    async def metrics(self) -> RuntimeMetrics:
        """Totals over this runtime's boxes."""
        return RuntimeMetrics.model_validate_json(self._inner.metrics())

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
