"""The tool core every framework adapter is built on.

:class:`BoxSandbox` runs Python, shell commands and file operations in one box, with a warm
interpreter (see ``_interpreter.py``), per-call timeouts that kill every process the call
started, capped output and image collection. :class:`ToolSandbox` is what a set of tools
shares: one box started on first use, or a :class:`~boxlite.pool.BoxPool` lease per call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import secrets
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, TypeVar

from ..codebox import default_image
from ..errors import BoxliteError
from ..options import BoxOptions
from ..pool import BoxPool
from ..runtime import Box, Boxlite, ExecOutputStream, ExecResult, ExecStdin, Execution
from ..sync_api import run_in_library_loop, run_sync
from .result import DEFAULT_MAX_OUTPUT_CHARS, FileEntry, ImageOutput, ToolResult, format_listing, truncate_output

logger = logging.getLogger("boxlite.tools")

T = TypeVar("T")

#: Seconds a tool call may run when the caller gives no timeout.
DEFAULT_TIMEOUT = 60.0
#: Seconds the warm interpreter may take to start (a cold Python under emulation is slow).
INTERPRETER_START_TIMEOUT = 120.0
#: Seconds a health check waits for the interpreter's answer.
PING_TIMEOUT = 10.0
#: Where images written by the code are collected from, in the box.
DEFAULT_OUTPUT_DIR = "/output"
#: Where the interpreters keep their pid file and each call's output files, in the box.
SESSION_ROOT = "/tmp/.boxlite-tools"
#: The most images one call returns, and the largest one collected (bytes).
MAX_IMAGES = 10
MAX_IMAGE_BYTES = 16 * 1024 * 1024
#: The most image bytes one call returns, all images together.
MAX_TOTAL_IMAGE_BYTES = 32 * 1024 * 1024
#: The longest protocol line the interpreter may send (``READY``, ``PONG``, an answer's header).
MAX_HEADER_BYTES = 256
#: Bytes of a file write sent per exec (base64 in an argument).
_WRITE_CHUNK = 64 * 1024

_PARTIAL_OUTPUT_SCRIPT = 'head -c "$2" "$1/out" 2>/dev/null; head -c "$2" "$1/err" >&2 2>/dev/null; true'

_LIST_SCRIPT = """
[ -e "$1" ] || { echo "no such file or directory: $1" >&2; exit 2; }
[ -d "$1" ] || { echo "not a directory: $1" >&2; exit 20; }
find "$1" -mindepth 1 -maxdepth 1 -printf '%y\\t%s\\t%f\\n' 2>/dev/null && exit 0
cd "$1" && for f in * .*; do
  [ "$f" = . ] || [ "$f" = .. ] || { [ -e "$f" ] || [ -L "$f" ]; } || continue
  if [ -L "$f" ]; then t=l; elif [ -d "$f" ]; then t=d; elif [ -f "$f" ]; then t=f; else t=o; fi
  s=0; [ "$t" = f ] && s=$(wc -c < "$f")
  printf '%s\\t%s\\t%s\\n' "$t" "$s" "$f"
done
"""

_WRITE_SCRIPT = """
mkdir -p "$(dirname "$1")" || exit 1
if [ "$3" = append ]; then printf '%s' "$2" | base64 -d >> "$1"; else printf '%s' "$2" | base64 -d > "$1"; fi
"""


class ToolSandboxError(BoxliteError):
    """The sandbox itself failed (the box or its interpreter), not the code it ran."""


class _ProtocolViolation(Exception):
    """The interpreter sent something the protocol does not allow (too long, malformed, or not
    the answer to the request in flight): the box is not to be trusted with another call."""


_HEADER = re.compile(rb"(DONE|PONG) ([0-9a-f]{1,64})(?: ([0-9]{1,20}))?\n")


def _max_answer_bytes(byte_cap: int) -> int:
    """The largest answer the interpreter can honestly send: two capped streams as JSON text
    (an escape takes at most 6 bytes per byte), the images in base64, and room for the rest."""
    images = MAX_TOTAL_IMAGE_BYTES * 4 // 3 + 4 + MAX_IMAGES * (4096 + 64)
    return 2 * 6 * byte_cap + images + 4096


def _parse_answer(payload: bytes, byte_cap: int) -> dict[str, Any]:
    """The interpreter's JSON answer, checked field by field."""
    try:
        answer = json.loads(payload)
    except ValueError as e:
        raise _ProtocolViolation(f"its answer is not JSON ({e})") from None
    fields = {"exit_code": int, "stdout": str, "stdout_size": int, "stderr": str, "stderr_size": int, "images": list}
    if not isinstance(answer, dict) or set(answer) != set(fields):
        raise _ProtocolViolation(f"its answer does not have the fields {sorted(fields)}")
    for name, kind in fields.items():
        value = answer[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _ProtocolViolation(f"its answer's {name} is not {kind.__name__}")
    if not 0 <= answer["exit_code"] <= 255 or answer["stdout_size"] < 0 or answer["stderr_size"] < 0:
        raise _ProtocolViolation("its answer has an exit code or a size out of range")
    if len(answer["stdout"]) > byte_cap or len(answer["stderr"]) > byte_cap:
        raise _ProtocolViolation(f"its answer carries more than the {byte_cap} bytes of output asked for")
    if len(answer["images"]) > MAX_IMAGES:
        raise _ProtocolViolation(f"its answer has more than {MAX_IMAGES} images")
    images = []
    for image in answer["images"]:
        if not (isinstance(image, dict) and isinstance(image.get("path"), str) and isinstance(image.get("data"), str)):
            raise _ProtocolViolation("its answer has an image without a path or data")
        try:
            data = base64.b64decode(image["data"], validate=True)
        except ValueError:
            raise _ProtocolViolation("its answer has an image that is not base64") from None
        images.append(ImageOutput(path=image["path"][:4096], data=data))
    answer["images"] = tuple(images)
    return answer


def interpreter_source() -> str:
    """The program of the warm interpreter that runs in the box."""
    return resources.files(__package__).joinpath("_interpreter.py").read_text()


def resolve_image(image: str | os.PathLike[str] | None = None) -> str:
    """The image tools boot: ``image`` if given, else :func:`boxlite.codebox.default_image`
    (``BOXLITE_DEFAULT_IMAGE`` or ``python:slim``). A reference or an OCI image layout path."""
    return os.fspath(image) if image is not None else default_image()


def _check_limits(max_output_chars: int, default_timeout: float) -> None:
    if max_output_chars < 100:
        raise ValueError(f"max_output_chars={max_output_chars} is too small to be useful: use at least 100")
    if default_timeout <= 0:
        raise ValueError(f"default_timeout={default_timeout} must be a positive number of seconds")


class BoxSandbox:
    """Python, shell and file operations in one box, as agent tools need them.

    ``persistent=True`` keeps one interpreter (one namespace) for every :meth:`run_python`
    call; otherwise each call runs in a fresh child forked from a pre-started interpreter.
    A call that times out kills every process it started; a persistent interpreter is then
    started anew (its variables are gone, and the result says so).
    """

    def __init__(
        self,
        box: Box,
        *,
        persistent: bool = False,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        default_timeout: float = DEFAULT_TIMEOUT,
        output_dir: str = DEFAULT_OUTPUT_DIR,
        env: Mapping[str, str] | None = None,
    ) -> None:
        _check_limits(max_output_chars, default_timeout)
        self.box = box
        self.persistent = persistent
        self.max_output_chars = max_output_chars
        self.default_timeout = default_timeout
        self.output_dir = output_dir
        self._env = {"MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "BOXLITE_OUTPUT_DIR": output_dir}
        self._env.update(env or {})
        self._session_dir = f"{SESSION_ROOT}/{uuid.uuid4().hex[:12]}"
        self._interpreter: Execution | None = None
        self._requests: ExecStdin | None = None
        self._answers: ExecOutputStream | None = None
        # Bytes of each stream the interpreter sends back: enough for the head and the tail.
        self._byte_cap = max_output_chars * 4
        self._lock = asyncio.Lock()
        self._restarted_note: str | None = None

    # -- the warm interpreter ------------------------------------------------------------

    @property
    def interpreter_running(self) -> bool:
        """Whether an interpreter was started and not (knowingly) lost since."""
        return self._interpreter is not None

    async def start(self) -> BoxSandbox:
        """Starts the warm interpreter now (it is otherwise started by the first call)."""
        async with self._lock:
            await self._ensure_interpreter()
        return self

    async def _ensure_interpreter(self) -> None:
        if self._interpreter is not None:
            return
        mode = "persistent" if self.persistent else "fresh"
        limits = (self._byte_cap, MAX_IMAGES, MAX_IMAGE_BYTES, MAX_TOTAL_IMAGE_BYTES)
        args = [self._session_dir, mode, self.output_dir, *map(str, limits)]
        execution = await self.box.exec("python3", ["-u", "-c", interpreter_source(), *args], self._env)
        stdout = execution.stdout()
        try:
            ready = await asyncio.wait_for(stdout.readline(MAX_HEADER_BYTES), INTERPRETER_START_TIMEOUT)
        except (asyncio.TimeoutError, ValueError):
            ready = b""
        if ready != b"READY\n":
            await execution.kill()
            ended = await execution.wait()
            if ended.exit_code == 127:
                raise ToolSandboxError(
                    "this image has no python3: use an image with Python (e.g. python:slim, the default)"
                )
            raise ToolSandboxError(
                f"the Python interpreter did not start within {INTERPRETER_START_TIMEOUT:g} s "
                f"(exit code {ended.exit_code}): {ended.stderr.strip()[-2000:] or ended.error or 'no output'}"
            )
        self._interpreter = execution
        self._requests, self._answers = execution.stdin(), stdout
        logger.debug("warm %s interpreter ready in box %s", mode, self.box.id)

    async def _discard_interpreter(self) -> ExecResult | None:
        """Kills the interpreter and everything it started; returns how it ended."""
        execution, self._interpreter = self._interpreter, None
        self._requests = self._answers = None
        if execution is None:
            return None
        try:
            await execution.kill()
            return await execution.wait()
        except BoxliteError:
            logger.warning("could not kill the interpreter in box %s", self.box.id, exc_info=True)
            return None

    async def is_healthy(self) -> bool:
        """Whether the interpreter answers a ping within :data:`PING_TIMEOUT` (a round trip of
        about a millisecond; no process is started). A box without one is checked with ``true``.
        An interpreter that does not answer in time, or answers anything but the pong asked
        for, is stopped."""
        async with self._lock:
            if self._interpreter is None:
                try:
                    return (await self.box.run("true", timeout=PING_TIMEOUT)).exit_code == 0
                except BoxliteError:
                    return False
            try:
                await asyncio.wait_for(self._ping(), PING_TIMEOUT)
                return True
            except (asyncio.TimeoutError, EOFError, BoxliteError, _ProtocolViolation) as e:
                why = str(e) or f"no answer within {PING_TIMEOUT:g} s"
                logger.warning("the interpreter in box %s failed its health check: %s", self.box.id, why)
                await self._discard_interpreter()
                return False

    async def _ping(self) -> None:
        assert self._requests is not None
        nonce = secrets.token_hex(16)
        await self._requests.send_input(b"PING %s\n" % nonce.encode())
        kind, answered, _ = await self._read_header()
        if (kind, answered) != (b"PONG", nonce):
            raise _ProtocolViolation(f"it answered {kind.decode()} {answered} to PING {nonce}")

    async def _read_header(self) -> tuple[bytes, str, int | None]:
        """The interpreter's next protocol line: kind, nonce and payload size (``DONE`` only).
        Raises :class:`EOFError` when the interpreter is gone."""
        assert self._answers is not None
        try:
            line = await self._answers.readline(MAX_HEADER_BYTES)
        except ValueError as e:
            raise _ProtocolViolation(str(e)) from None
        if not line:
            raise EOFError
        match = _HEADER.fullmatch(line)
        if match is None:
            raise _ProtocolViolation(f"it sent {line[:80]!r} where an answer header was expected")
        kind, nonce, size = match.groups()
        if (kind == b"DONE") != (size is not None):
            raise _ProtocolViolation(f"it sent a malformed header {line[:80]!r}")
        return kind, nonce.decode(), int(size) if size is not None else None

    # -- tool operations -------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        if timeout is None:
            return self.default_timeout
        if timeout <= 0:
            raise ValueError(f"timeout={timeout} must be a positive number of seconds")
        return float(timeout)

    def _cap(
        self, stdout: str, stderr: str, out_total: int | None = None, err_total: int | None = None
    ) -> dict[str, Any]:
        out, out_dropped = truncate_output(stdout, self.max_output_chars, total_chars=out_total)
        err, err_dropped = truncate_output(stderr, self.max_output_chars, total_chars=err_total)
        return {"stdout": out, "stderr": err, "stdout_truncated": out_dropped, "stderr_truncated": err_dropped}

    async def run_python(self, code: str, timeout: float | None = None) -> ToolResult:
        """Runs ``code`` and returns its exit code, capped output and images.

        Like a notebook cell, the value of a final expression is printed. Code that fails
        (an exception, ``sys.exit(3)``) is an ordinary result; :class:`ToolSandboxError` means
        the sandbox itself failed.
        """
        seconds = self._timeout(timeout)
        async with self._lock:
            await self._ensure_interpreter()
            note, self._restarted_note = self._restarted_note, None
            try:
                answer = await asyncio.wait_for(self._exchange(code.encode()), seconds)
            except asyncio.TimeoutError:
                return await self._timed_out(seconds, note)
            except _ProtocolViolation as e:
                await self._discard_interpreter()
                if self.persistent:
                    self._restarted_note = "the Python session was restarted: variables from earlier calls are gone"
                raise ToolSandboxError(
                    f"the Python interpreter in box {self.box.id} broke the tool protocol ({e}); it was stopped "
                    "and the next call starts a new one (code that writes to the interpreter's own channel does this)"
                ) from None
            except BaseException:
                # Cancelled mid-request (or the channel failed): the interpreter's answer would
                # reach the next caller, so it goes, with everything it started.
                await self._discard_interpreter()
                if self.persistent:
                    self._restarted_note = (
                        "the Python session was restarted (a call was cancelled): variables from earlier calls are gone"
                    )
                raise
            if answer is None:
                # The interpreter is gone (killed, crashed, out of memory): start a new one next time.
                ended = await self._discard_interpreter()
                if self.persistent:
                    self._restarted_note = "the Python session was restarted: variables from earlier calls are gone"
                partial = await self._partial_output()
                return ToolResult(
                    exit_code=ended.exit_code if ended is not None else 1,
                    timeout=seconds,
                    note="the Python interpreter died during this call; the next call starts a new one",
                    **self._cap(partial.stdout, partial.stderr),
                )
            out, err = answer["stdout"], answer["stderr"]
            return ToolResult(
                exit_code=answer["exit_code"],
                timeout=seconds,
                images=answer["images"],
                note=note,
                **self._cap(
                    out,
                    err,
                    # What never left the box counts as dropped (bytes ~ characters).
                    out_total=len(out) + max(0, answer["stdout_size"] - len(out.encode())),
                    err_total=len(err) + max(0, answer["stderr_size"] - len(err.encode())),
                ),
            )

    async def _exchange(self, code: bytes) -> dict[str, Any] | None:
        """Sends one request to the interpreter and reads its answer (None: it died).

        Every request carries a fresh random nonce that its answer must repeat, and every size
        the interpreter announces is checked against what it may honestly send, so anything
        written into the channel by other means is refused (:class:`_ProtocolViolation`)."""
        assert self._requests is not None and self._answers is not None
        nonce = secrets.token_hex(16)
        await self._requests.send_input(b"RUN %s %d\n" % (nonce.encode(), len(code)) + code)
        try:
            kind, answered, size = await self._read_header()
        except EOFError:
            return None
        limit = _max_answer_bytes(self._byte_cap)
        if kind != b"DONE" or size is None:
            raise _ProtocolViolation(f"it sent {kind.decode()} where an answer was expected")
        if size > limit:
            raise _ProtocolViolation(f"its answer announces {size} bytes, more than the limit of {limit} bytes")
        if answered != nonce:
            raise _ProtocolViolation(f"its answer is for request {answered}, not for request {nonce}")
        try:
            payload = await self._answers.readexactly(size)
        except asyncio.IncompleteReadError:
            return None
        return _parse_answer(payload, self._byte_cap)

    async def _partial_output(self) -> ExecResult:
        """What the last request wrote before it was stopped (its output files stay in the box)."""
        return await self.box.run(
            "sh", ["-c", _PARTIAL_OUTPUT_SCRIPT, "sh", self._session_dir, str(self._byte_cap)], timeout=30
        )

    async def _timed_out(self, seconds: float, note: str | None) -> ToolResult:
        await self._discard_interpreter()
        partial = await self._partial_output()
        lost = " The Python session was restarted: variables from earlier calls are gone." if self.persistent else ""
        if self.persistent:
            self._restarted_note = (
                "the Python session was restarted after a timeout: variables from earlier calls are gone"
            )
        return ToolResult(
            exit_code=124,
            timed_out=True,
            timeout=seconds,
            note=((note + "; ") if note else "") + f"the code was stopped after {seconds:g} s.{lost}",
            **self._cap(partial.stdout, partial.stderr),
        )

    async def run_shell(self, command: str, timeout: float | None = None) -> ToolResult:
        """Runs ``command`` with ``sh -c``; on timeout every process it started is killed."""
        seconds = self._timeout(timeout)
        result = await self.box.run("sh", ["-c", command], self._env, timeout=seconds)
        return self._shell_result(result, seconds)

    def _shell_result(self, result: ExecResult, seconds: float) -> ToolResult:
        return ToolResult(
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            timeout=seconds,
            note=result.error,
            # Output beyond the box's max_output_bytes never reached the host: it counts as dropped.
            **self._cap(
                result.stdout,
                result.stderr,
                out_total=len(result.stdout) + result.stdout_dropped,
                err_total=len(result.stderr) + result.stderr_dropped,
            ),
        )

    async def read_file(self, path: str) -> bytes:
        """The content of ``path`` in the box; :class:`FileNotFoundError` (with the box's
        message) when it cannot be read."""
        result = await self.box.run("cat", ["--", path], timeout=self.default_timeout)
        if result.exit_code != 0:
            raise FileNotFoundError(result.stderr.strip() or f"cannot read {path}")
        if result.stdout_dropped:
            raise ValueError(
                f"{path} is larger than the {len(result.stdout_bytes)} bytes a read keeps "
                "(the box's max_output_bytes): copy it out with copy_out instead"
            )
        return result.stdout_bytes

    async def read_text(self, path: str) -> str:
        """``path`` as text, capped like other output (a binary file is described, not dumped)."""
        data = await self.read_file(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return f"{path} is a binary file of {len(data)} bytes (not shown)"
        return truncate_output(text, self.max_output_chars)[0]

    async def write_file(self, path: str, content: str | bytes) -> int:
        """Writes ``content`` to ``path`` (parent directories are created); returns the byte count."""
        data = content.encode() if isinstance(content, str) else content
        await self._write_bytes(path, data)
        return len(data)

    async def _write_bytes(self, path: str, data: bytes) -> None:
        chunks = [data[i : i + _WRITE_CHUNK] for i in range(0, len(data), _WRITE_CHUNK)] or [b""]
        for index, chunk in enumerate(chunks):
            encoded = base64.b64encode(chunk).decode("ascii")
            result = await self.box.run(
                "sh",
                ["-c", _WRITE_SCRIPT, "sh", path, encoded, "append" if index else "truncate"],
                timeout=self.default_timeout,
            )
            if result.exit_code != 0:
                raise PermissionError(result.stderr.strip() or f"cannot write {path}")

    async def list_files(self, path: str = ".") -> list[FileEntry]:
        """The entries of directory ``path``, sorted by name; :class:`FileNotFoundError` or
        :class:`NotADirectoryError` otherwise."""
        result = await self.box.run("sh", ["-c", _LIST_SCRIPT, "sh", path], timeout=self.default_timeout)
        if result.exit_code == 20:
            raise NotADirectoryError(result.stderr.strip())
        if result.exit_code != 0:
            raise FileNotFoundError(result.stderr.strip() or f"cannot list {path}")
        kinds = {"f": "file", "d": "directory", "l": "symlink"}
        entries = []
        for line in result.stdout.splitlines():
            kind, size, name = line.split("\t", 2)
            entries.append(FileEntry(name=name, kind=kinds.get(kind, "other"), size=int(size)))
        return sorted(entries, key=lambda e: e.name)

    async def close(self) -> None:
        """Stops the interpreter (the box itself belongs to whoever created it)."""
        async with self._lock:
            await self._discard_interpreter()


def _box_options(
    image: str | os.PathLike[str] | None, options: BoxOptions | None, memory_mib: int, cpus: int
) -> BoxOptions:
    """``options`` (when given: security, network, volumes…) with the image filled in, or
    options made from ``image``, ``memory_mib`` and ``cpus``."""
    if options is None:
        return BoxOptions(memory_mib=memory_mib, cpus=cpus, image=resolve_image(image))
    if image is not None or (options.image is None and options.rootfs_path is None):
        return options.model_copy(update={"image": resolve_image(image), "rootfs_path": None})
    return options


class ToolSandbox:
    """The box (or pool of boxes) a set of tools shares.

    * default: one box, created from ``image`` on first use and kept until :meth:`close`
      (or interpreter exit); ``persistent=True`` keeps Python variables between calls;
      ``options`` (a :class:`~boxlite.BoxOptions`) sets anything else about the box
      (security, network, …), ``memory_mib`` and ``cpus`` then being ignored;
    * ``box=``: tools run in a box you created (you stop it);
    * ``pool=``: every call leases a box from a :class:`~boxlite.pool.BoxPool` (see
      :func:`create_tool_pool`, which keeps a warm interpreter in every pooled box), so
      concurrent agents never share a box and each call starts from a fresh box.

    Every operation exists as a coroutine and as a blocking ``*_sync`` method that is safe to
    call from inside a running event loop.
    """

    def __init__(
        self,
        image: str | os.PathLike[str] | None = None,
        *,
        pool: BoxPool | None = None,
        box: Box | None = None,
        persistent: bool = False,
        runtime: Boxlite | None = None,
        memory_mib: int = 1024,
        cpus: int = 1,
        env: Mapping[str, str] | None = None,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        default_timeout: float = DEFAULT_TIMEOUT,
        output_dir: str = DEFAULT_OUTPUT_DIR,
        options: BoxOptions | None = None,
    ) -> None:
        _check_limits(max_output_chars, default_timeout)
        if pool is not None and box is not None:
            raise ValueError("pass either pool= or box=, not both")
        if pool is not None and persistent:
            raise ValueError(
                "persistent=True needs one box kept for the whole session, but pool= leases a box per call: "
                "drop pool= (the toolkit then keeps one box), or create the pool with create_tool_pool(persistent=True)"
            )
        self._options = _box_options(image, options, memory_mib, cpus) if box is None else None
        self._pool = pool
        self._runtime = runtime
        self._sandbox_kwargs: dict[str, Any] = {
            "persistent": persistent,
            "max_output_chars": max_output_chars,
            "default_timeout": default_timeout,
            "output_dir": output_dir,
            "env": dict(env or {}),
        }
        self._box = box
        self._owns_box = box is None
        self._shared: BoxSandbox | None = BoxSandbox(box, **self._sandbox_kwargs) if box is not None else None
        self._start_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def given_or_new(
        cls,
        sandbox: ToolSandbox | None,
        image: str | os.PathLike[str] | None = None,
        *,
        pool: BoxPool | None = None,
        persistent: bool = False,
        memory_mib: int = 1024,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> ToolSandbox:
        """What an adapter's tool runs on: ``sandbox`` when given (shared with other tools),
        else a new one from the other arguments; both at once is an error."""
        if sandbox is not None:
            if image is not None or pool is not None or persistent:
                raise ValueError("pass either sandbox= or image=/pool=/persistent=, not both")
            return sandbox
        return cls(
            image,
            pool=pool,
            persistent=persistent,
            memory_mib=memory_mib,
            max_output_chars=max_output_chars,
            default_timeout=default_timeout,
        )

    @property
    def options(self) -> BoxOptions | None:
        """The options of the box this sandbox creates (None when given a box)."""
        return self._options

    @property
    def pool(self) -> BoxPool | None:
        return self._pool

    @property
    def persistent(self) -> bool:
        """Whether Python variables survive between calls (one session in the shared box)."""
        return bool(self._sandbox_kwargs["persistent"])

    @asynccontextmanager
    async def session(self) -> AsyncIterator[BoxSandbox]:
        """The :class:`BoxSandbox` one call runs in: the shared one, or a pool lease's."""
        if self._closed:
            raise ToolSandboxError("this tool sandbox is closed: create a new one")
        if self._pool is None:
            yield await self._shared_sandbox()
            return
        async with self._pool.lease() as lease:
            # A pool from create_tool_pool() prepared a warm sandbox in each box; for any other
            # pool, this call gets a sandbox of its own, whose interpreter goes with the lease.
            prepared = lease.resource if isinstance(lease.resource, BoxSandbox) else None
            sandbox = prepared or BoxSandbox(lease.box, **self._sandbox_kwargs)
            try:
                yield sandbox
            except BaseException:
                lease.mark_broken()
                raise
            finally:
                if prepared is None:
                    await sandbox.close()
            if prepared is not None and not prepared.interpreter_running:
                # Its interpreter died or timed out: no later lease may get this box.
                lease.mark_broken()

    async def _shared_sandbox(self) -> BoxSandbox:
        if self._shared is not None:
            return self._shared
        async with self._start_lock:
            if self._shared is None:
                assert self._options is not None
                runtime = self._runtime or Boxlite.default()
                self._box = await runtime.create(self._options)
                self._shared = BoxSandbox(self._box, **self._sandbox_kwargs)
            return self._shared

    async def _call(self, operation: Callable[[BoxSandbox], Awaitable[T]]) -> T:
        return await run_in_library_loop(self._call_here(operation))

    async def _call_here(self, operation: Callable[[BoxSandbox], Awaitable[T]]) -> T:
        try:
            async with self.session() as sandbox:
                return await operation(sandbox)
        except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError):
            raise
        except BoxliteError:
            raise
        except OSError as e:
            raise ToolSandboxError(f"the sandbox failed: {e}") from e

    async def run_python(self, code: str, timeout: float | None = None) -> ToolResult:
        """See :meth:`BoxSandbox.run_python`."""
        return await self._call(lambda s: s.run_python(code, timeout))

    async def run_shell(self, command: str, timeout: float | None = None) -> ToolResult:
        """See :meth:`BoxSandbox.run_shell`."""
        return await self._call(lambda s: s.run_shell(command, timeout))

    async def read_file(self, path: str) -> bytes:
        return await self._call(lambda s: s.read_file(path))

    async def read_text(self, path: str) -> str:
        return await self._call(lambda s: s.read_text(path))

    async def write_file(self, path: str, content: str | bytes) -> int:
        return await self._call(lambda s: s.write_file(path, content))

    async def list_files(self, path: str = ".") -> list[FileEntry]:
        return await self._call(lambda s: s.list_files(path))

    # What file tools show the model: a missing file or a bad path is the model's mistake, so
    # it is reported as ordinary output, not raised.

    async def read_file_report(self, path: str) -> str:
        """The file's text (capped), or why it cannot be read."""
        try:
            return await self.read_text(path)
        except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
            return f"error: {e}"

    async def write_file_report(self, path: str, content: str) -> str:
        """Writes the file; says how much was written, or why it could not be."""
        try:
            written = await self.write_file(path, content)
        except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
            return f"error: {e}"
        return f"wrote {written} bytes to {path}"

    async def list_files_report(self, path: str = ".") -> str:
        """The directory listing, or why it cannot be listed."""
        try:
            return format_listing(path, await self.list_files(path))
        except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
            return f"error: {e}"

    def read_file_report_sync(self, path: str) -> str:
        return run_sync(self.read_file_report(path))

    def write_file_report_sync(self, path: str, content: str) -> str:
        return run_sync(self.write_file_report(path, content))

    def list_files_report_sync(self, path: str = ".") -> str:
        return run_sync(self.list_files_report(path))

    def run_python_sync(self, code: str, timeout: float | None = None) -> ToolResult:
        return run_sync(self.run_python(code, timeout))

    def run_shell_sync(self, command: str, timeout: float | None = None) -> ToolResult:
        return run_sync(self.run_shell(command, timeout))

    def read_file_sync(self, path: str) -> bytes:
        return run_sync(self.read_file(path))

    def read_text_sync(self, path: str) -> str:
        return run_sync(self.read_text(path))

    def write_file_sync(self, path: str, content: str | bytes) -> int:
        return run_sync(self.write_file(path, content))

    def list_files_sync(self, path: str = ".") -> list[FileEntry]:
        return run_sync(self.list_files(path))

    async def close(self) -> None:
        """Stops the shared interpreter and, if this sandbox created it, the box. A pool is
        left to its owner."""
        await run_in_library_loop(self._close_here())

    async def _close_here(self) -> None:
        self._closed = True
        shared, self._shared = self._shared, None
        if shared is not None:
            await shared.close()
            if self._owns_box:
                await shared.box.stop()

    def close_sync(self) -> None:
        run_sync(self.close())


async def _prepare_sandbox(box: Box, kwargs: dict[str, Any]) -> BoxSandbox:
    return await BoxSandbox(box, **kwargs).start()


def create_tool_pool(
    image: str | os.PathLike[str] | None = None,
    *,
    persistent: bool = False,
    memory_mib: int = 1024,
    cpus: int = 1,
    runtime: Boxlite | None = None,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    default_timeout: float = DEFAULT_TIMEOUT,
    output_dir: str = DEFAULT_OUTPUT_DIR,
    env: Mapping[str, str] | None = None,
    options: BoxOptions | None = None,
    **pool_options: Any,
) -> BoxPool:
    """A :class:`~boxlite.pool.BoxPool` whose boxes each hold a warm interpreter, ready before
    they are leased (so a pooled call costs milliseconds, not an interpreter start).

    ``pool_options`` go to ``BoxPool`` (``min_idle``, ``max_size``, ``max_uses``, …); pass the
    pool as ``ToolSandbox(pool=...)`` or to an adapter's ``pool=`` argument.
    """
    kwargs: dict[str, Any] = {
        "persistent": persistent,
        "max_output_chars": max_output_chars,
        "default_timeout": default_timeout,
        "output_dir": output_dir,
        "env": dict(env or {}),
    }

    # The pool's boxes and their sandboxes (the health check gets only the box).
    sandboxes: weakref.WeakValueDictionary[str, BoxSandbox] = weakref.WeakValueDictionary()

    async def prepare(box: Box) -> BoxSandbox:
        sandbox = await _prepare_sandbox(box, kwargs)
        sandboxes[box.id] = sandbox
        return sandbox

    async def health_check(box: Box) -> bool:
        sandbox = sandboxes.get(box.id)
        return sandbox is not None and await sandbox.is_healthy()

    return BoxPool(
        _box_options(image, options, memory_mib, cpus),
        runtime=runtime,
        prepare=prepare,
        health_check=health_check,
        **pool_options,
    )
