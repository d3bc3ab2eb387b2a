"""LlamaIndex tools that drive a web browser in a BoxLite VM (a ``BrowserBox``) and a desktop in
one (a ``ComputerBox``), sync and async, screenshots as ``ImageBlock``s. Their logic is
:mod:`boxlite.tools` (``BrowserToolSession``, ``ComputerToolSession``); this module only makes
LlamaIndex ``FunctionTool``s of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from boxlite import run_sync
from boxlite.pool import BoxPool
from boxlite.tools import (
    BROWSER_TOOLS,
    COMPUTER_TOOL,
    ActionResult,
    ActionTool,
    BrowserToolSession,
    ComputerToolSession,
)
from llama_index.core.tools import FunctionTool

from .tool_spec import PythonOutput, to_blocks


def _function_tool(session: BrowserToolSession | ComputerToolSession, tool: ActionTool) -> FunctionTool:
    method: Callable[..., Awaitable[ActionResult]] = getattr(session, tool.method)

    async def acall(**arguments: Any) -> PythonOutput:
        return to_blocks(await method(**arguments))

    def call(**arguments: Any) -> PythonOutput:
        return run_sync(acall(**arguments))

    return FunctionTool.from_defaults(
        fn=call, async_fn=acall, name=tool.name, description=tool.description, fn_schema=tool.args_schema
    )


class _SessionSpec:
    _session: BrowserToolSession | ComputerToolSession

    def close(self) -> None:
        """Ends the session: stops the box it started (or returns its lease; a given box is left to its owner)."""
        run_sync(self._session.close())

    async def aclose(self) -> None:
        """See :meth:`close`."""
        await self._session.close()


class BoxLiteBrowserToolSpec(_SessionSpec):
    """The browser tool set (``browser_navigate``, ``browser_click``, ``browser_type``,
    ``browser_read_text``, ``browser_screenshot``) on one browser whose pages stay open between
    calls: ``BoxLiteBrowserToolSpec().to_tool_list()``.

    Without arguments a ``BrowserBox`` is started on the first call (stop it with
    :meth:`close`); ``box=`` drives a started one (its owner stops it), ``pool=`` leases one for
    the spec's life, ``session=`` shares a :class:`~boxlite.tools.BrowserToolSession`.
    """

    def __init__(
        self, box: Any = None, *, session: BrowserToolSession | None = None, pool: BoxPool | None = None
    ) -> None:
        if session is not None and (box is not None or pool is not None):
            raise ValueError("pass either session= or box=/pool=, not both")
        self.session = session if session is not None else BrowserToolSession(box, pool=pool)
        self._session = self.session

    def to_tool_list(self) -> list[FunctionTool]:
        """The five browser tools, sync and async."""
        return [_function_tool(self.session, tool) for tool in BROWSER_TOOLS]


class BoxLiteComputerToolSpec(_SessionSpec):
    """The computer-use tool (``computer``: screenshot, clicks, mouse_move, left_click_drag,
    type, key, scroll, cursor_position) on a desktop in a VM: ``BoxLiteComputerToolSpec().to_tool_list()``.

    Without arguments a ``ComputerBox`` is started on the first call (stop it with
    :meth:`close`); ``box=`` drives a started one, ``session=`` a configured
    :class:`~boxlite.tools.ComputerToolSession`.
    """

    def __init__(
        self, box: Any = None, *, session: ComputerToolSession | None = None, pool: BoxPool | None = None
    ) -> None:
        if session is not None and (box is not None or pool is not None):
            raise ValueError("pass either session= or box=/pool=, not both")
        self.session = session if session is not None else ComputerToolSession(box, pool=pool)
        self._session = self.session

    def to_tool_list(self) -> list[FunctionTool]:
        """The computer tool, sync and async."""
        return [_function_tool(self.session, COMPUTER_TOOL)]


__all__ = ["BoxLiteBrowserToolSpec", "BoxLiteComputerToolSpec"]
