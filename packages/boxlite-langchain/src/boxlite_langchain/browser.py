"""LangChain tools that drive a web browser in a BoxLite VM (a ``BrowserBox``) and a desktop in
one (a ``ComputerBox``). Their logic is :mod:`boxlite.tools` (``BrowserToolSession``,
``ComputerToolSession``); this module only makes LangChain tools of it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from boxlite import run_sync
from boxlite.tools import (
    BROWSER_TOOLS,
    COMPUTER_TOOL,
    ActionBoundTool,
    ActionResult,
    ActionTool,
    BrowserToolSession,
    ComputerToolSession,
)
from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.tools import BaseTool, BaseToolkit
from pydantic import BaseModel, ConfigDict, Field

from .tools import BoxLiteBaseTool, ToolContent, to_content


class BoxLiteActionTool(ActionBoundTool, BaseTool):
    """A browser or computer-use tool: runs its action on its session and returns
    ``(content, artifact)``, the content being the result text plus an image content block per
    screenshot, the artifact the :class:`~boxlite.tools.ActionResult` (with the PNG bytes). A
    failed action is a result the model reads; a failure of the box raises
    :class:`~langchain_core.tools.ToolException`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    action_tool: ActionTool = Field(exclude=True)
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"

    def _run(
        self, run_manager: CallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[ToolContent, ActionResult]:
        return run_sync(self._arun(**arguments))

    async def _arun(
        self, run_manager: AsyncCallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[ToolContent, ActionResult]:
        result = await BoxLiteBaseTool._guard(self._perform(arguments))
        return to_content(result), result


def _fields(tool: ActionTool) -> dict[str, Any]:
    return {"action_tool": tool, "name": tool.name, "description": tool.description, "args_schema": tool.args_schema}


class BoxLiteBrowserTool(BoxLiteActionTool):
    """One tool of the browser set, on a :class:`~boxlite.tools.BrowserToolSession` (use
    :class:`BoxLiteBrowserToolkit` for the whole set on one browser)."""

    session_class: ClassVar[type[BrowserToolSession]] = BrowserToolSession
    session: BrowserToolSession = Field(exclude=True)


class BoxLiteComputerTool(BoxLiteActionTool):
    """The computer-use tool (``computer``: screenshot, clicks, mouse_move, left_click_drag,
    type, key, scroll, cursor_position) on a desktop in a VM.

    ``BoxLiteComputerTool()`` starts a ``ComputerBox`` on its first call and holds it until
    :meth:`close`; ``BoxLiteComputerTool(box=desktop)`` drives a started one,
    ``session=ComputerToolSession(...)`` one configured as you like.
    """

    session_class: ClassVar[type[ComputerToolSession]] = ComputerToolSession
    session: ComputerToolSession = Field(exclude=True)
    action_tool: ActionTool = Field(default=COMPUTER_TOOL, exclude=True)
    name: str = COMPUTER_TOOL.name
    description: str = COMPUTER_TOOL.description
    args_schema: type[BaseModel] = COMPUTER_TOOL.args_schema


class BoxLiteBrowserToolkit(BaseToolkit):
    """The browser tool set (``browser_navigate``, ``browser_click``, ``browser_type``,
    ``browser_read_text``, ``browser_screenshot``) on one browser, whose pages stay open
    between calls.

    ``BoxLiteBrowserToolkit()`` starts a ``BrowserBox`` on the first call and stops it on
    :meth:`close`; ``box=`` drives a started one (its owner stops it), ``pool=`` leases one from
    a pool for the toolkit's life, ``session=`` shares a :class:`~boxlite.tools.BrowserToolSession`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    session: BrowserToolSession = Field(exclude=True)

    def __init__(
        self, *, session: BrowserToolSession | None = None, box: Any = None, pool: Any = None, **kwargs: Any
    ) -> None:
        if session is None:
            session = BrowserToolSession(box, pool=pool)
        elif box is not None or pool is not None:
            raise ValueError("pass either session= or box=/pool=, not both")
        super().__init__(session=session, **kwargs)  # type: ignore[call-arg]  # a pydantic field

    def get_tools(self) -> list[BaseTool]:
        """The five browser tools, all on this toolkit's browser."""
        return [BoxLiteBrowserTool(session=self.session, **_fields(tool)) for tool in BROWSER_TOOLS]

    def close(self) -> None:
        """Drops the browser connection and stops the box the toolkit started (or returns its lease)."""
        run_sync(self.session.close())

    async def aclose(self) -> None:
        """See :meth:`close`."""
        await self.session.close()

    def __enter__(self) -> BoxLiteBrowserToolkit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> BoxLiteBrowserToolkit:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["BoxLiteActionTool", "BoxLiteBrowserTool", "BoxLiteBrowserToolkit", "BoxLiteComputerTool"]
