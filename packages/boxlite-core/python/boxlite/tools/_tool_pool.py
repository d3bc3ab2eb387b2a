"""``create_tool_pool``: a :class:`~boxlite.pool.BoxPool` whose boxes each hold a warm
interpreter (a started :class:`~boxlite.tools.BoxSandbox`) before they are leased, and whose
health check pings that interpreter.

By default the pool refills from a snapshot (``BoxPool(from_snapshot=True)``): the interpreter
is started once, in the box that is snapshotted (serving on named pipes), and each restored box
attaches to it (``BoxSandbox.attach``) instead of starting its own, which under TCG here takes
about 0.7 s (see ``_session.py``). Measured with ``benchmarks/bench_pool.py``: a new warm box
from the snapshot in a fraction of the time of a boot plus an interpreter start.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from typing import Any

from .._pool.box_pool import snapshot_allowed
from ..options import BoxOptions
from ..pool import BoxPool
from ..runtime import Box, Boxlite
from ._sandbox import BoxSandbox, _box_options
from ._session import DEFAULT_OUTPUT_DIR, DEFAULT_TIMEOUT
from .result import DEFAULT_MAX_OUTPUT_CHARS


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
    from_snapshot: bool | None = None,
    **pool_options: Any,
) -> BoxPool:
    """A :class:`~boxlite.pool.BoxPool` whose boxes each hold a warm interpreter, ready before
    they are leased (so a pooled call costs milliseconds, not an interpreter start).

    ``pool_options`` go to ``BoxPool`` (``min_idle``, ``max_size``, ``max_uses``, …); pass the
    pool as ``ToolSandbox(pool=...)`` or to an adapter's ``pool=`` argument.

    ``from_snapshot`` (default: whenever the options allow it: no volumes, no ``snapshot``) fills the pool
    by restoring a snapshot of one prepared box, interpreter included, instead of booting every
    box and starting its interpreter; each lease still gets a box nobody used.
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

    box_options = _box_options(image, options, memory_mib, cpus)
    if from_snapshot is None:
        from_snapshot = snapshot_allowed(box_options)
    # The session directory of the interpreter started in the snapshotted box.
    snapshot_session: list[str] = []

    async def before_snapshot(box: Box) -> None:
        snapshot_session[:] = [await BoxSandbox(box, **kwargs).start_for_snapshot()]

    async def prepare(box: Box) -> BoxSandbox:
        if from_snapshot:
            sandbox = await BoxSandbox(box, **kwargs).attach(snapshot_session[0])
            # A restored box's emulator translates all code afresh: one throwaway call here,
            # while the box is not yet leased, keeps that off the first tool call.
            await sandbox.run_python("pass")
        else:
            sandbox = await _prepare_sandbox(box, kwargs)
        sandboxes[box.id] = sandbox
        return sandbox

    async def health_check(box: Box) -> bool:
        sandbox = sandboxes.get(box.id)
        return sandbox is not None and await sandbox.is_healthy()

    return BoxPool(
        box_options,
        runtime=runtime,
        prepare=prepare,
        health_check=health_check,
        from_snapshot=from_snapshot,
        before_snapshot=before_snapshot if from_snapshot else None,
        **pool_options,
    )
