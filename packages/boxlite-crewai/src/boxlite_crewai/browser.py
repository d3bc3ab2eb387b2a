"""CrewAI tools that drive a web browser in a BoxLite VM (a ``BrowserBox``) and a desktop in one
(a ``ComputerBox``). Their logic is :mod:`boxlite.tools` (``BrowserToolSession``,
``ComputerToolSession``); this module only makes CrewAI tools of it.

CrewAI's tool results are text: a screenshot is saved as a PNG file on this machine and the
result carries its path and the image as a ``data:image/png;base64,…`` URL, which a multimodal
agent (``Agent(multimodal=True)``) can hand to CrewAI's "Add image to content" tool to look at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from boxlite import run_sync
from boxlite.pool import BoxPool
from boxlite.tools import (
    BROWSER_TOOLS,
    COMPUTER_TOOL,
    ActionBoundTool,
    ActionResult,
    ActionTool,
    BrowserToolSession,
    ComputerToolSession,
)
from crewai.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from .tools import BoxLiteBaseTool, default_images_dir


def to_text(result: ActionResult, images_dir: Path) -> str:
    """The result text; each image saved in ``images_dir``, with its path and a data URL (CrewAI
    tool results carry no image content, so the model gets the image as text)."""
    text = result.text
    for path, image in zip(result.save_images(images_dir), result.images, strict=True):
        text += (
            f"\nimage saved on the host: {path}"
            f"\nimage as a data URL (CrewAI tool results are text only; pass it to 'Add image to content' "
            f"to look at it): data:{image.mime_type};base64,{image.base64()}"
        )
    return text


class BoxLiteActionTool(ActionBoundTool, BaseTool):
    """A browser or computer-use tool: runs its action on its session. A failed action is a
    result the model reads; a failure of the box raises
    :class:`~boxlite_crewai.BoxLiteSandboxFailure`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    action_tool: ActionTool = Field(exclude=True)
    images_dir: Path = Field(default_factory=default_images_dir)

    def _run(self, **arguments: Any) -> str:
        return run_sync(self._arun(**arguments))

    async def _arun(self, **arguments: Any) -> str:
        return to_text(await BoxLiteBaseTool._guard(self._perform(arguments)), self.images_dir)


class BoxLiteBrowserTool(BoxLiteActionTool):
    """One tool of the browser set (use :func:`browser_tools` for the whole set on one browser)."""

    session_class: ClassVar[type[BrowserToolSession]] = BrowserToolSession
    session: BrowserToolSession = Field(exclude=True)


class BoxLiteComputerTool(BoxLiteActionTool):
    """The computer-use tool (``computer``: screenshot, clicks, mouse_move, left_click_drag,
    type, key, scroll, cursor_position) on a desktop in a VM. ``BoxLiteComputerTool()`` starts
    a ``ComputerBox`` on its first call (stop it with :meth:`close`); ``box=`` drives a started one."""

    session_class: ClassVar[type[ComputerToolSession]] = ComputerToolSession
    session: ComputerToolSession = Field(exclude=True)
    action_tool: ActionTool = Field(default=COMPUTER_TOOL, exclude=True)
    name: str = COMPUTER_TOOL.name
    description: str = COMPUTER_TOOL.description
    args_schema: type[BaseModel] = COMPUTER_TOOL.args_schema


def browser_tools(
    session: BrowserToolSession | None = None,
    *,
    box: Any = None,
    pool: BoxPool | None = None,
    images_dir: str | Path | None = None,
) -> list[BaseTool]:
    """The browser tool set (``browser_navigate``, ``browser_click``, ``browser_type``,
    ``browser_read_text``, ``browser_screenshot``) on one browser whose pages stay open between
    calls: a ``BrowserBox`` started on the first call, ``box=`` a started one, ``pool=`` a lease
    held until closed, or ``session=`` a shared :class:`~boxlite.tools.BrowserToolSession`.
    Close it with ``tools[0].close()``."""
    if session is None:
        session = BrowserToolSession(box, pool=pool)
    elif box is not None or pool is not None:
        raise ValueError("pass either session= or box=/pool=, not both")
    extra: dict[str, Any] = {"images_dir": Path(images_dir)} if images_dir is not None else {}
    return [
        BoxLiteBrowserTool(
            session=session,
            action_tool=tool,
            name=tool.name,
            description=tool.description,
            args_schema=tool.args_schema,
            **extra,
        )
        for tool in BROWSER_TOOLS
    ]


__all__ = ["BoxLiteActionTool", "BoxLiteBrowserTool", "BoxLiteComputerTool", "browser_tools", "to_text"]
