"""The synchronous API: ``SyncBoxlite``, ``SyncBox``, ``SyncSimpleBox``, ``SyncCodeBox``,
``SyncInteractiveBox``, ``SyncComputerBox``.

Every sync call runs its coroutine on one event loop owned by the library, in a daemon thread
started on first use (:func:`run_sync`). The calling thread only blocks on the result, so the
sync API works from plain scripts and threads *and* from code that already runs inside an event
loop (Jupyter cells, FastAPI handlers), where ``asyncio.run`` would fail. At interpreter exit the
boxes are stopped first, then the loop.

    with SyncSimpleBox(rootfs_path=...) as box:
        print(box.exec("echo", "hi").stdout)

Each blocking method that only runs its async twin is one line, ``run = blocking(Box.run)``
(``_blocking.py`` says how, and why a typed proxy rather than a generated file): a new async
method gets its sync twin by naming it here, and mypy sees the twin's signature. The methods
written out below do more (wrap a result, keep a call synchronous, add ``wait()``'s timeout).

The loop itself (``run_sync``, ``run_in_library_loop``, ``at_exit``, fork and exit handling) is
in ``_loop.py``; its functions are re-exported here, where callers have always found them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

from typing_extensions import Self, Unpack

from ._blocking import AsyncProxy, blocking
from ._loop import EXIT_CALLBACK_TIMEOUT as EXIT_CALLBACK_TIMEOUT
from ._loop import at_exit as at_exit
from ._loop import forget_at_exit as forget_at_exit
from ._loop import in_library_loop as in_library_loop
from ._loop import iterate_sync as iterate_sync
from ._loop import loop as loop
from ._loop import run_in_library_loop as run_in_library_loop
from ._loop import run_sync as run_sync
from .browserbox import BrowserBox, BrowserBoxArgs, BrowserBoxOptions
from .codebox import CodeBox
from .computerbox import ComputerBox, ComputerBoxArgs
from .images import Images
from .interactivebox import DEFAULT_SHELL, InteractiveBox
from .options import BoxOptions, NetworkSpec, Options
from .runtime import Box, BoxInfo, Boxlite, ExecOutputStream, ExecResult, ExecStdin, Execution
from .simplebox import SimpleBox, SimpleBoxArgs
from .snapshots import Snapshots

if TYPE_CHECKING:
    from playwright.sync_api import Browser as SyncPlaywrightBrowser
    from playwright.sync_api import Playwright as SyncPlaywright


class SyncExecStdin(AsyncProxy[ExecStdin]):
    """The standard input of a :class:`SyncExecution`."""

    def __init__(self, execution: Execution) -> None:
        super().__init__(execution.stdin())

    send_input = blocking(ExecStdin.send_input)
    write = send_input
    close = blocking(ExecStdin.close)


class SyncOutputStream(AsyncProxy[ExecOutputStream]):
    """An output stream of a :class:`SyncExecution`: iterate it for text lines, or use
    :meth:`chunks`, :meth:`readline` and :meth:`read` (see :class:`boxlite.runtime.ExecOutputStream`)."""

    def __init__(self, stream: ExecOutputStream) -> None:
        super().__init__(stream)

    def __iter__(self) -> Iterator[str]:
        return iterate_sync(self._target)

    def chunks(self) -> Iterator[bytes]:
        """Raw output chunks as they arrive."""
        return iterate_sync(self._target.chunks())

    readline = blocking(ExecOutputStream.readline)
    readexactly = blocking(ExecOutputStream.readexactly)
    read = blocking(ExecOutputStream.read)


class SyncExecution(AsyncProxy[Execution]):
    """A process started with :meth:`SyncBox.exec` (sync :class:`~boxlite.Execution`)."""

    def __init__(self, execution: Execution) -> None:
        super().__init__(execution)

    @property
    def id(self) -> int:
        return self._target.id

    @property
    def execution(self) -> Execution:
        """The async execution this wraps."""
        return self._target

    def wait(self, timeout: float | None = None) -> ExecResult:
        """Waits for the process to end. With ``timeout``, raises ``TimeoutError`` after that
        many seconds and kills every process the execution started."""
        return run_sync(self._target.wait(), timeout)

    def set_deadline(self, seconds: float | None) -> bool:
        """Sets the execution's timeout from now (see :meth:`Execution.set_deadline`).

        Not a :func:`blocking` twin: the async method is not a coroutine (it only hands the
        deadline to the engine), so the sync class calls it directly."""
        return self._target.set_deadline(seconds)

    kill = blocking(Execution.kill)
    signal = blocking(Execution.signal)

    def stdin(self) -> SyncExecStdin:
        """The process's standard input."""
        return SyncExecStdin(self._target)

    def stdout(self) -> SyncOutputStream:
        """Standard output as it arrives."""
        return SyncOutputStream(self._target.stdout())

    def stderr(self) -> SyncOutputStream:
        """Standard error as it arrives."""
        return SyncOutputStream(self._target.stderr())

    resize_tty = blocking(Execution.resize_tty)


class SyncBox(AsyncProxy[Box]):
    """A box (sync :class:`~boxlite.Box`)."""

    def __init__(self, box: Box) -> None:
        super().__init__(box)

    @property
    def box(self) -> Box:
        """The async box this wraps."""
        return self._target

    @property
    def id(self) -> str:
        return self._target.id

    @property
    def name(self) -> str | None:
        return self._target.name

    def info(self) -> BoxInfo:
        """A snapshot of the box's state."""
        return self._target.info()

    exec = blocking(Box.exec, SyncExecution)
    run = blocking(Box.run)
    metrics = blocking(Box.metrics)
    copy_in = blocking(Box.copy_in)
    copy_out = blocking(Box.copy_out)
    read_file = blocking(Box.read_file)
    read_text = blocking(Box.read_text)
    write_file = blocking(Box.write_file)
    list_dir = blocking(Box.list_dir)
    stat = blocking(Box.stat)
    exists = blocking(Box.exists)
    start = blocking(Box.start)
    stop = blocking(Box.stop)
    pause = blocking(Box.pause)
    resume = blocking(Box.resume)
    snapshot = blocking(Box.snapshot)
    # fork: the forks of issue 12 (sync twins of Box.fork and SimpleBox.fork).
    fork = blocking(Box.fork, lambda boxes: [SyncBox(b) for b in boxes])

    def __repr__(self) -> str:
        return f"<boxlite.SyncBox id={self.id}>"


class SyncImages(AsyncProxy[Images]):
    """:class:`~boxlite.images.Images` with blocking methods (``SyncBoxlite.images``)."""

    def __init__(self, images: Images) -> None:
        super().__init__(images)

    pull = blocking(Images.pull)
    import_archive = blocking(Images.import_archive)
    list = blocking(Images.list)
    remove = blocking(Images.remove)
    prune = blocking(Images.prune)


class SyncBoxlite(AsyncProxy[Boxlite]):
    """The runtime (sync :class:`~boxlite.Boxlite`)."""

    def __init__(self, options: Options | None = None, *, runtime: Boxlite | None = None) -> None:
        super().__init__(runtime if runtime is not None else Boxlite(options))

    @classmethod
    def default(cls) -> SyncBoxlite:
        """The process-wide runtime on the default home directory."""
        return cls(runtime=Boxlite.default())

    @property
    def runtime(self) -> Boxlite:
        """The async runtime this wraps."""
        return self._target

    @property
    def home(self) -> Path:
        return self._target.home

    @property
    def snapshots(self) -> Snapshots:
        """The snapshots of this home (``list``, ``get``, ``remove``; already blocking)."""
        return self._target.snapshots

    @property
    def images(self) -> SyncImages:
        """The image cache: ``pull``, ``import_archive``, ``list``, ``remove``, ``prune``."""
        return SyncImages(self._target.images)

    create = blocking(Boxlite.create, SyncBox)
    restore = blocking(Boxlite.restore, SyncBox)
    get = blocking(Boxlite.get, SyncBox)
    get_info = blocking(Boxlite.get_info)
    list_info = blocking(Boxlite.list_info)
    remove = blocking(Boxlite.remove)
    accelerator = blocking(Boxlite.accelerator)
    metrics = blocking(Boxlite.metrics)
    shutdown = blocking(Boxlite.shutdown)


class SyncSimpleBox(AsyncProxy[SimpleBox]):
    """:class:`~boxlite.SimpleBox` with blocking methods: ``with SyncSimpleBox(...) as box:``.

    Takes the same arguments as :class:`~boxlite.SimpleBox`, aliases (``cpu``, ``memory``,
    ``disk_size``, ``mounts``) included; ``exec(..., background=True)`` returns a
    :class:`SyncExecution`.
    """

    _async_class: type[SimpleBox] = SimpleBox

    def __init__(self, image: str | None = None, **options: Unpack[SimpleBoxArgs]) -> None:
        super().__init__(self._async_class(image, **options))

    @property
    def simple_box(self) -> SimpleBox:
        """The async box this wraps."""
        return self._target

    @property
    def options(self) -> BoxOptions:
        return self._target.options

    @property
    def box(self) -> SyncBox:
        """The underlying low-level box (once started)."""
        return SyncBox(self._target.box)

    @property
    def id(self) -> str:
        return self._target.id

    def start(self) -> Self:
        """Creates and boots the box (no-op when already started); for the subclasses, also
        what their ``start()`` adds (the desktop, the browser, the attached shell)."""
        run_sync(self._target.start())
        return self

    shutdown = blocking(SimpleBox.shutdown)

    @overload
    def exec(
        self,
        cmd: str,
        *args: str,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        max_output_bytes: int | None = None,
        background: Literal[False] = False,
    ) -> ExecResult: ...

    @overload
    def exec(
        self,
        cmd: str,
        *args: str,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        max_output_bytes: int | None = None,
        background: Literal[True],
    ) -> SyncExecution: ...

    def exec(
        self,
        cmd: str,
        *args: str,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        max_output_bytes: int | None = None,
        background: bool = False,
    ) -> ExecResult | SyncExecution:
        """Runs ``cmd`` with ``args`` and returns its result; with ``background=True``, starts
        it and returns its running :class:`SyncExecution` at once (see :meth:`SimpleBox.exec`).

        Written out rather than a :func:`blocking` twin: the background handle is wrapped."""
        target = self._target
        if background:
            execution = run_sync(
                target.exec(
                    cmd,
                    *args,
                    env=env,
                    working_dir=working_dir,
                    user=user,
                    timeout=timeout,
                    max_output_bytes=max_output_bytes,
                    background=True,
                )
            )
            return SyncExecution(execution)
        result = target.exec(
            cmd, *args, env=env, working_dir=working_dir, user=user, timeout=timeout, max_output_bytes=max_output_bytes
        )
        return run_sync(result)

    copy_in = blocking(SimpleBox.copy_in)
    copy_out = blocking(SimpleBox.copy_out)
    read_file = blocking(SimpleBox.read_file)
    write_file = blocking(SimpleBox.write_file)
    list_dir = blocking(SimpleBox.list_dir)
    stat = blocking(SimpleBox.stat)
    metrics = blocking(SimpleBox.metrics)
    pause = blocking(SimpleBox.pause)
    resume = blocking(SimpleBox.resume)
    snapshot = blocking(SimpleBox.snapshot)
    fork = blocking(SimpleBox.fork, lambda boxes: [SyncSimpleBox._of(b) for b in boxes])

    @classmethod
    def _of(cls, simple_box: SimpleBox) -> SyncSimpleBox:
        """The blocking twin of the started ``simple_box`` (a fork)."""
        twin = cls.__new__(cls)
        AsyncProxy.__init__(twin, simple_box)
        return twin

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


class SyncCodeBox(SyncSimpleBox):
    """:class:`~boxlite.CodeBox` with blocking methods: ``with SyncCodeBox() as box:``.

    Takes the same arguments as :class:`~boxlite.CodeBox` (the image defaults to
    ``BOXLITE_DEFAULT_IMAGE`` or ``python:slim``).
    """

    _async_class = CodeBox

    @property
    def code_box(self) -> CodeBox:
        """The async box this wraps."""
        assert isinstance(self._target, CodeBox)
        return self._target

    run = blocking(CodeBox.run)
    run_script = blocking(CodeBox.run_script)
    install_package = blocking(CodeBox.install_package)
    install_packages = blocking(CodeBox.install_packages)


class SyncComputerBox(SyncSimpleBox):
    """:class:`~boxlite.ComputerBox` with blocking methods: ``with SyncComputerBox() as desktop:``.

    Takes the same arguments as :class:`~boxlite.ComputerBox`.
    """

    def __init__(
        self,
        cpu: int = 2,
        memory: int = 2048,
        gui_http_port: int | None = None,
        gui_https_port: int | None = None,
        runtime: Boxlite | None = None,
        *,
        image: str | None = None,
        **kw: Unpack[ComputerBoxArgs],
    ) -> None:
        AsyncProxy.__init__(self, ComputerBox(cpu, memory, gui_http_port, gui_https_port, runtime, image=image, **kw))

    @property
    def computer_box(self) -> ComputerBox:
        """The async box this wraps."""
        assert isinstance(self._target, ComputerBox)
        return self._target

    @property
    def gui_url(self) -> str:
        """Where a person's browser shows the live desktop."""
        return self.computer_box.gui_url

    wait_until_ready = blocking(ComputerBox.wait_until_ready)
    screenshot = blocking(ComputerBox.screenshot)
    mouse_move = blocking(ComputerBox.mouse_move)
    left_click = blocking(ComputerBox.left_click)
    right_click = blocking(ComputerBox.right_click)
    middle_click = blocking(ComputerBox.middle_click)
    double_click = blocking(ComputerBox.double_click)
    triple_click = blocking(ComputerBox.triple_click)
    left_click_drag = blocking(ComputerBox.left_click_drag)
    cursor_position = blocking(ComputerBox.cursor_position)
    type = blocking(ComputerBox.type)
    key = blocking(ComputerBox.key)
    scroll = blocking(ComputerBox.scroll)
    get_screen_size = blocking(ComputerBox.get_screen_size)


class SyncInteractiveBox(SyncSimpleBox):
    """:class:`~boxlite.InteractiveBox` with blocking methods: ``with SyncInteractiveBox(image=...)
    as box: box.wait()``.

    Takes the same arguments as :class:`~boxlite.InteractiveBox`. The shell's output is copied
    on the library's event loop thread, and the window size is polled there (``SIGWINCH`` is
    only delivered to the main thread).
    """

    _async_class = InteractiveBox

    def __init__(
        self,
        image: str | None = None,
        shell: str = DEFAULT_SHELL,
        tty: bool | None = None,
        **options: Unpack[SimpleBoxArgs],
    ) -> None:
        AsyncProxy.__init__(self, InteractiveBox(image, shell, tty, **options))

    @property
    def interactive_box(self) -> InteractiveBox:
        """The async box this wraps."""
        assert isinstance(self._target, InteractiveBox)
        return self._target

    @property
    def shell(self) -> str:
        """The shell started in the box."""
        return self.interactive_box.shell

    @property
    def tty(self) -> bool:
        """The shell runs on a pseudo-terminal in the box."""
        return self.interactive_box.tty

    @property
    def exit_code(self) -> int | None:
        """The shell's exit code once :meth:`wait` returned, else None."""
        return self.interactive_box.exit_code

    wait = blocking(InteractiveBox.wait)


# BrowserBox (issue 11)
class SyncBrowserBox(SyncSimpleBox):
    """:class:`~boxlite.BrowserBox` with blocking methods: ``with SyncBrowserBox() as box:``.

    Takes the same arguments as :class:`~boxlite.BrowserBox`. :meth:`connect` returns
    Playwright's *sync* ``Browser``: the box's own calls run on the library's event loop thread
    (as every sync call does), while Playwright's sync API runs in the calling thread, which
    therefore must not be running an event loop (Playwright's rule: in a Jupyter cell or an
    async handler, use :class:`~boxlite.BrowserBox` and its async ``connect()``).
    """

    _async_class = BrowserBox

    def __init__(
        self,
        options: BrowserBoxOptions | None = None,
        runtime: Boxlite | None = None,
        *,
        image: str | None = None,
        network: NetworkSpec | list[str] | None = None,
        **box_options: Unpack[BrowserBoxArgs],
    ) -> None:
        AsyncProxy.__init__(self, BrowserBox(options, runtime, image=image, network=network, **box_options))
        self._sync_playwright: SyncPlaywright | None = None
        self._sync_browsers: list[SyncPlaywrightBrowser] = []

    @property
    def browser_box(self) -> BrowserBox:
        """The async box this wraps."""
        assert isinstance(self._target, BrowserBox)
        return self._target

    @property
    def browser(self) -> str:
        """The browser's name (``"chromium"``, ``"firefox"`` or ``"webkit"``)."""
        return self.browser_box.browser

    @property
    def cdp_port(self) -> int:
        """The host port (on 127.0.0.1) of the DevTools protocol."""
        return self.browser_box.cdp_port

    @property
    def port(self) -> int:
        """The host port (on 127.0.0.1) of the Playwright server."""
        return self.browser_box.port

    endpoint = blocking(BrowserBox.endpoint)
    playwright_endpoint = blocking(BrowserBox.playwright_endpoint)

    def connect(self, timeout: float = 60) -> SyncPlaywrightBrowser:
        """A Playwright sync ``Browser`` connected to the box's browser (see the class notes)."""
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as e:
            raise ImportError(
                "SyncBrowserBox.connect() needs Playwright for Python: pip install 'boxlite-core[browser]'"
            ) from e
        box = self.browser_box
        ws = self.endpoint(timeout) if box.browser == "chromium" else self.playwright_endpoint(timeout)
        if self._sync_playwright is None:
            self._sync_playwright = sync_playwright().start()
        kind: Any = getattr(self._sync_playwright, box.browser)
        if box.browser == "chromium":
            browser: SyncPlaywrightBrowser = kind.connect_over_cdp(ws, timeout=timeout * 1000)
        else:
            browser = kind.connect(ws, timeout=timeout * 1000)
        self._sync_browsers.append(browser)
        return browser

    def shutdown(self) -> None:
        """Disconnects Playwright, then stops the box (and the browser in it)."""
        for browser in self._sync_browsers:
            with contextlib.suppress(Exception):
                browser.close()
        self._sync_browsers.clear()
        if self._sync_playwright is not None:
            playwright, self._sync_playwright = self._sync_playwright, None
            with contextlib.suppress(Exception):
                playwright.stop()
        run_sync(self._target.shutdown())


__all__ = [
    "SyncBox",
    "SyncBoxlite",
    "SyncBrowserBox",
    "SyncCodeBox",
    "SyncComputerBox",
    "SyncExecution",
    "SyncImages",
    "SyncInteractiveBox",
    "SyncSimpleBox",
    "iterate_sync",
    "run_sync",
]
