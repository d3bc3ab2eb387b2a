"""The driver's side of a box leased on another node: :class:`RemoteBox` and
:class:`RemoteExecution` offer what :class:`~boxlite.Box` and :class:`~boxlite.Execution`
offer (``exec``/``run``, streamed output, stdin, ``kill``, ``copy_in``/``copy_out``,
``metrics``, the file operations), each a call to the node's actor (``_actor.py``).

Output streams pull one chunk per call, as the local stream pulls from the engine, so the
node never holds more than the engine's bounded buffer of unread output. Every error raised on
the node arrives as itself (a ``FileNotFoundError`` stays one); a node or actor that died
raises :class:`~boxlite.ray.BoxLostError` naming the box and the node.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from .._runtime.files import DEFAULT_READ_MAX_BYTES, _check_path
from ..options import normalize_args, normalize_env
from ..runtime import BoxMetrics, ExecOutputStream, ExecResult, ExecStdin, FileInfo
from . import _transfer
from ._errors import BoxLostError

#: Seconds a blocking call to a node's actor (``set_deadline``, ``stats``) waits for its answer.
BLOCKING_CALL_TIMEOUT = 30.0


class NodeLink:
    """One node's actor as the driver reaches it: every call goes through :meth:`call`, which
    turns a dead actor into :class:`BoxLostError` and reports the loss once (``on_lost``)."""

    def __init__(self, node_id: str, actor: Any, on_lost: Callable[[NodeLink, BaseException], None]) -> None:
        self.node_id = node_id
        self.actor = actor
        self.lost: BaseException | None = None
        self._on_lost = on_lost

    def _lost_error(self, box_id: str | None, cause: BaseException) -> BoxLostError:
        what = f"box {box_id}" if box_id else "the box being leased"
        return BoxLostError(
            f"{what} was lost with Ray node {self.node_id}: its actor died ({type(cause).__name__}); "
            "the call failed and the lease is never handed out again: lease another box",
            node_id=self.node_id,
            box_id=box_id,
        )

    def _fail(self, box_id: str | None, cause: BaseException) -> BoxLostError:
        if self.lost is None:
            self.lost = cause
            self._on_lost(self, cause)
        return self._lost_error(box_id, cause)

    async def call(self, box_id: str | None, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.lost is not None:
            raise self._lost_error(box_id, self.lost)
        try:
            return await getattr(self.actor, method).remote(*args, **kwargs)
        except RayActorError as e:
            raise self._fail(box_id, e) from None
        except RayTaskError as e:
            raise _cause(e) from None

    def call_blocking(self, box_id: str | None, method: str, *args: Any) -> Any:
        if self.lost is not None:
            raise self._lost_error(box_id, self.lost)
        try:
            return ray.get(getattr(self.actor, method).remote(*args), timeout=BLOCKING_CALL_TIMEOUT)
        except RayActorError as e:
            raise self._fail(box_id, e) from None
        except RayTaskError as e:
            raise _cause(e) from None


def _cause(error: RayTaskError) -> BaseException:
    """The exception raised on the node, as it was raised there (when Ray could carry it)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


class _RemoteStdin(ExecStdin):
    def __init__(self, execution: RemoteExecution) -> None:
        self._execution = execution

    async def send_input(self, data: bytes | str) -> None:
        payload = data.encode() if isinstance(data, str) else bytes(data)
        await self._execution._call("write_stdin", payload)

    write = send_input

    async def close(self) -> None:
        await self._execution._call("close_stdin")


class _RemoteOutputStream(ExecOutputStream):
    """An output stream read chunk by chunk from the node (the reads are the local stream's)."""

    def __init__(self, execution: RemoteExecution, name: str) -> None:
        self._execution = execution
        self._name = name
        self._buffer = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        chunk: bytes | None = await self._execution._call("read_output", self._name)
        if chunk is None:
            self._eof = True
            return False
        self._buffer += chunk
        return True


class RemoteExecution:
    """A process started with :meth:`RemoteBox.exec`: the methods of :class:`~boxlite.Execution`."""

    def __init__(self, box: RemoteBox, key: str, tty: bool) -> None:
        self._box = box
        self._key = key
        self._tty = tty
        self._stdin: _RemoteStdin | None = None
        self._streams: dict[str, _RemoteOutputStream] = {}

    async def _call(self, method: str, *args: Any) -> Any:
        return await self._box._link.call(self._box.id, method, self._key, *args)

    @property
    def id(self) -> str:
        """The execution's key on its node."""
        return self._key

    @property
    def tty(self) -> bool:
        return self._tty

    def stdin(self) -> ExecStdin:
        if self._stdin is None:
            self._stdin = _RemoteStdin(self)
        return self._stdin

    def _stream(self, name: str) -> ExecOutputStream:
        if name not in self._streams:
            self._streams[name] = _RemoteOutputStream(self, name)
        return self._streams[name]

    def stdout(self) -> ExecOutputStream:
        return self._stream("stdout")

    def stderr(self) -> ExecOutputStream:
        return self._stream("stderr")

    async def wait(self) -> ExecResult:
        """As :meth:`boxlite.Execution.wait`; a cancelled wait kills the execution on its node."""
        try:
            result: ExecResult = await self._call("wait")
        except asyncio.CancelledError:
            await asyncio.shield(self._call("kill"))
            raise
        return result

    def set_deadline(self, seconds: float | None) -> bool:
        """As :meth:`boxlite.Execution.set_deadline`, enforced by the engine on the box's node
        (a blocking round trip to the node: milliseconds on a healthy cluster)."""
        return bool(self._box._link.call_blocking(self._box.id, "set_deadline", self._key, seconds))

    async def kill(self) -> None:
        await self._call("kill")

    async def signal(self, signal: int) -> None:
        await self._call("signal", signal)


class RemoteBox:
    """A box leased from a :class:`~boxlite.ray.RayBoxPool`, running on another node (or this
    one): the operations of :class:`~boxlite.Box` a lease uses, run by the node's actor."""

    def __init__(self, link: NodeLink, lease_id: str, box_id: str) -> None:
        self._link = link
        self._lease_id = lease_id
        self._id = box_id

    @property
    def id(self) -> str:
        return self._id

    @property
    def node_id(self) -> str:
        """The Ray node the box runs on."""
        return self._link.node_id

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._link.call(self._id, method, self._lease_id, *args, **kwargs)

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
    ) -> RemoteExecution:
        """As :meth:`boxlite.Box.exec`; ``timeout`` is enforced by the engine on the box's node."""
        key = await self._call(
            "exec",
            str(cmd),
            normalize_args(args),
            normalize_env(env),
            working_dir=working_dir,
            user=user,
            timeout=timeout,
            tty=tty,
            max_output_bytes=max_output_bytes,
        )
        return RemoteExecution(self, key, tty)

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
        """As :meth:`boxlite.Box.run`; ``timeout`` is enforced by the engine on the box's node."""
        result: ExecResult = await self._call(
            "run",
            str(cmd),
            normalize_args(args),
            normalize_env(env),
            working_dir=working_dir,
            user=user,
            timeout=timeout,
            max_output_bytes=max_output_bytes,
        )
        return result

    async def metrics(self) -> BoxMetrics:
        metrics: BoxMetrics = await self._call("metrics")
        return metrics

    async def copy_in(self, host_path: str | os.PathLike[str], guest_path: str) -> None:
        """As :meth:`boxlite.Box.copy_in`, from this (the driver's) machine; the tree travels
        packed, up to :data:`~boxlite.ray.MAX_TRANSFER_BYTES`."""
        source = Path(host_path)
        archive = _transfer.pack(source)
        await self._call("copy_in", archive, source.resolve().name, guest_path)

    async def copy_out(self, guest_path: str, host_path: str | os.PathLike[str]) -> None:
        """As :meth:`boxlite.Box.copy_out`, onto this (the driver's) machine: into ``host_path``
        when it is an existing directory, else as ``host_path``."""
        archive: bytes = await self._call("copy_out", guest_path)
        target = Path(host_path)
        if target.is_dir():
            target = target / (Path(guest_path.rstrip("/")).name or "root")
        with tempfile.TemporaryDirectory(prefix="boxlite-ray-", dir=target.parent) as scratch:
            tree = _transfer.unpack(archive, scratch)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            tree.replace(target)

    async def read_file(
        self, path: str, *, offset: int = 0, length: int | None = None, max_bytes: int = DEFAULT_READ_MAX_BYTES
    ) -> bytes:
        """As :meth:`boxlite.Box.read_file`."""
        _check_path(path)
        data: bytes = await self._call("read_file", path, offset=offset, length=length, max_bytes=max_bytes)
        return data

    async def read_text(
        self, path: str, *, encoding: str = "utf-8", errors: str = "strict", max_bytes: int = DEFAULT_READ_MAX_BYTES
    ) -> str:
        return (await self.read_file(path, max_bytes=max_bytes)).decode(encoding, errors)

    async def write_file(
        self, path: str, data: bytes | str, *, mode: int = 0o644, parents: bool = False, exclusive: bool = False
    ) -> None:
        """As :meth:`boxlite.Box.write_file`."""
        _check_path(path)
        payload = data.encode() if isinstance(data, str) else bytes(data)
        await self._call("write_file", path, payload, mode=mode, parents=parents, exclusive=exclusive)

    async def list_dir(self, path: str = ".") -> list[FileInfo]:
        """As :meth:`boxlite.Box.list_dir`."""
        _check_path(path)
        entries: list[FileInfo] = await self._call("list_dir", path)
        return entries

    async def stat(self, path: str, *, follow_symlinks: bool = True) -> FileInfo:
        """As :meth:`boxlite.Box.stat`."""
        _check_path(path)
        info: FileInfo = await self._call("stat", path, follow_symlinks)
        return info

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def __repr__(self) -> str:
        return f"<boxlite.ray.RemoteBox id={self._id} node={self.node_id}>"


__all__ = ["BLOCKING_CALL_TIMEOUT", "NodeLink", "RemoteBox", "RemoteExecution"]
