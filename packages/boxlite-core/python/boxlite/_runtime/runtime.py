"""``Boxlite``: the runtime, a home directory (``BOXLITE_HOME``) and the boxes in it: creating,
finding, listing and removing boxes, its metrics, and stopping every box at interpreter exit."""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from .. import _bridge, _engine
from ..images import Images
from ..options import BoxOptions, Options
from ..snapshots import Snapshots
from .box import Box
from .info import BoxInfo, RuntimeMetrics
from .progress import ProgressReporter, StartProgress

logger = logging.getLogger("boxlite")

#: Where the wheel keeps the guest kernel and initramfs (``boxlite/_guest``).
GUEST_DIR = Path(__file__).parent.parent / "_guest"

#: Seconds allowed at interpreter exit to stop boxes cleanly before their VMs are killed.
EXIT_STOP_TIMEOUT = 20.0

#: The program of a kept box's egress supervisor process (the engine's ``egress::detached``), which
#: keeps its network checked after this process exits: this interpreter in isolated mode, with no
#: site packages, loading only the engine extension by its path (argv: extension, box spec).
EGRESS_SUPERVISOR_PROGRAM = """\
import importlib.util, sys
spec = importlib.util.spec_from_file_location("boxlite._engine", sys.argv[1])
engine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(engine)
engine.supervise_egress(3, sys.argv[2])
"""

if sys.executable and _engine.__file__:
    _engine.set_egress_supervisor_command(
        [sys.executable, "-I", "-S", "-c", EGRESS_SUPERVISOR_PROGRAM, _engine.__file__]
    )


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
        #: The snapshots of this home: ``list()``, ``get()``, ``remove()``.
        self.snapshots = Snapshots(self._inner)
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

    async def create(self, options: BoxOptions, *, progress: Callable[[StartProgress], None] | None = None) -> Box:
        """Creates a box from ``options`` and boots it (or restores it, with ``options.snapshot``).

        ``progress`` is called on the event loop's thread with a :class:`StartProgress` as each
        stage starts and ends: the image's pull when the cache lacks it (with the pull's own
        events), the base disk (built once per image: the first box of an image waits for it),
        and the boot or restore. An exception in the callback is logged, never raised.
        """
        payload = options.model_dump_json()
        if progress is not None:
            reporter = ProgressReporter(progress)
            await self._prepare_reporting(options, payload, reporter)
            reporter.start("restore" if options.snapshot else "boot")
            box = Box(await _bridge.call(lambda c: self._inner.create(c, payload)), self)
            reporter.done(timings=box.info().timings)
            return box
        return Box(await _bridge.call(lambda c: self._inner.create(c, payload)), self)

    async def _prepare_reporting(self, options: BoxOptions, payload: str, reporter: ProgressReporter) -> None:
        """The stages before the boot, each reported: what ``create`` would do silently first."""
        if options.snapshot:
            return  # a snapshot carries its disk: nothing to pull or build
        if self._inner.image_needs_pull(payload):
            assert options.image is not None
            reporter.start("pull")
            await self.images.pull(options.image, progress=reporter.pulled)
            reporter.done()
        reporter.start("base_disk")
        prepared = json.loads(await _bridge.call(lambda c: self._inner.prepare_image(c, payload)))
        reporter.done(built=bool(prepared["built"]))

    async def restore(
        self,
        snapshot: str,
        options: BoxOptions | None = None,
        *,
        progress: Callable[[StartProgress], None] | None = None,
    ) -> Box:
        """Starts a new box restored from ``snapshot`` (name or id): the shortcut for
        ``create(BoxOptions(snapshot=snapshot, ...))``, with ``options`` for the rest (name,
        env, ports, ``auto_remove``, ...).

        Raises:
            SnapshotNotFoundError: no snapshot has that name or id.
            SnapshotError: the snapshot must not run (other kernel, agent or QEMU; damaged).
        """
        options = (options or BoxOptions()).model_copy(update={"snapshot": snapshot})
        return await self.create(options, progress=progress)

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


__all__ = ["EXIT_STOP_TIMEOUT", "GUEST_DIR", "Boxlite"]
