"""The tools' arguments, defined once for every framework adapter.

The pydantic input schemas are what a model sees of a tool's arguments (LangChain's and
CrewAI's ``args_schema``: the same names, descriptions and limits everywhere).
:func:`call_timeout` is the tool core's one check of a call's timeout, on every path (Python
and shell, a shared box or a pool lease); the schemas' ``gt=0`` tells the model the same rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from . import descriptions


class PythonInput(BaseModel):
    code: str = Field(description=descriptions.CODE_ARG)
    timeout: float | None = Field(default=None, gt=0, description=descriptions.TIMEOUT_ARG)


class ShellInput(BaseModel):
    command: str = Field(description=descriptions.COMMAND_ARG)
    timeout: float | None = Field(default=None, gt=0, description=descriptions.TIMEOUT_ARG)


class ReadFileInput(BaseModel):
    path: str = Field(description=descriptions.PATH_ARG)


class WriteFileInput(BaseModel):
    path: str = Field(description=descriptions.PATH_ARG)
    content: str = Field(description=descriptions.CONTENT_ARG)


class ListFilesInput(BaseModel):
    path: str = Field(default=".", description=descriptions.DIR_ARG)


class BrowserNavigateInput(BaseModel):
    url: str = Field(description=descriptions.URL_ARG)
    timeout: float | None = Field(default=None, gt=0, description=descriptions.BROWSER_TIMEOUT_ARG)


class BrowserClickInput(BaseModel):
    selector: str | None = Field(default=None, description=descriptions.SELECTOR_ARG)
    text: str | None = Field(default=None, description=descriptions.CLICK_TEXT_ARG)
    timeout: float | None = Field(default=None, gt=0, description=descriptions.BROWSER_TIMEOUT_ARG)


class BrowserTypeInput(BaseModel):
    selector: str = Field(description=descriptions.SELECTOR_ARG)
    text: str = Field(description=descriptions.TYPE_TEXT_ARG)
    submit: bool = Field(default=False, description=descriptions.SUBMIT_ARG)
    timeout: float | None = Field(default=None, gt=0, description=descriptions.BROWSER_TIMEOUT_ARG)


class BrowserReadTextInput(BaseModel):
    selector: str | None = Field(default=None, description=descriptions.READ_SELECTOR_ARG)
    timeout: float | None = Field(default=None, gt=0, description=descriptions.BROWSER_TIMEOUT_ARG)


class BrowserScreenshotInput(BaseModel):
    full_page: bool = Field(default=False, description=descriptions.FULL_PAGE_ARG)


#: The computer-use tool's actions (the names model providers' computer tools use).
ComputerActionName = Literal[
    "screenshot",
    "left_click",
    "right_click",
    "middle_click",
    "double_click",
    "triple_click",
    "mouse_move",
    "left_click_drag",
    "type",
    "key",
    "scroll",
    "cursor_position",
]

#: ``[x, y]`` in screen pixels.
Coordinate = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]


class ComputerInput(BaseModel):
    """One computer-use action, in the shape of model providers' computer tools (Anthropic's
    ``computer``: ``action`` plus ``coordinate``, ``text``, ``scroll_direction``, ``scroll_amount``)."""

    action: ComputerActionName = Field(description=descriptions.ACTION_ARG)
    coordinate: Coordinate | None = Field(default=None, description=descriptions.COORDINATE_ARG)
    start_coordinate: Coordinate | None = Field(default=None, description=descriptions.START_COORDINATE_ARG)
    text: str | None = Field(default=None, description=descriptions.COMPUTER_TEXT_ARG)
    scroll_direction: Literal["up", "down", "left", "right"] | None = Field(
        default=None, description=descriptions.SCROLL_DIRECTION_ARG
    )
    scroll_amount: int | None = Field(default=None, ge=1, le=100, description=descriptions.SCROLL_AMOUNT_ARG)


def call_timeout(timeout: float | None, default: float) -> float:
    """The seconds a tool call may run: ``default`` when no ``timeout`` is given, else the
    ``timeout``, which must be a positive, finite number (:class:`ValueError` otherwise)."""
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout={timeout} must be a positive number of seconds")
    return float(timeout)


__all__ = [
    "BROWSER_TOOLS",
    "COMPUTER_TOOL",
    "ActionTool",
    "BrowserClickInput",
    "BrowserNavigateInput",
    "BrowserReadTextInput",
    "BrowserScreenshotInput",
    "BrowserTypeInput",
    "ComputerActionName",
    "ComputerInput",
    "Coordinate",
    "ListFilesInput",
    "PythonInput",
    "ReadFileInput",
    "ShellInput",
    "WriteFileInput",
    "call_timeout",
]


@dataclass(frozen=True)
class ActionTool:
    """One tool of the browser set or the computer-use tool, as data every adapter builds its
    framework's tool from: the name and description the model sees, the argument schema, and
    the session method a call runs (with the schema's fields as keyword arguments)."""

    name: str
    description: str
    args_schema: type[BaseModel]
    method: str


#: The browser tool set, on a :class:`~boxlite.tools.BrowserToolSession`.
BROWSER_TOOLS: tuple[ActionTool, ...] = (
    ActionTool(
        descriptions.BROWSER_NAVIGATE_TOOL_NAME,
        descriptions.BROWSER_NAVIGATE_TOOL_DESCRIPTION,
        BrowserNavigateInput,
        "navigate",
    ),
    ActionTool(
        descriptions.BROWSER_CLICK_TOOL_NAME, descriptions.BROWSER_CLICK_TOOL_DESCRIPTION, BrowserClickInput, "click"
    ),
    ActionTool(
        descriptions.BROWSER_TYPE_TOOL_NAME, descriptions.BROWSER_TYPE_TOOL_DESCRIPTION, BrowserTypeInput, "type"
    ),
    ActionTool(
        descriptions.BROWSER_READ_TEXT_TOOL_NAME,
        descriptions.BROWSER_READ_TEXT_TOOL_DESCRIPTION,
        BrowserReadTextInput,
        "read_text",
    ),
    ActionTool(
        descriptions.BROWSER_SCREENSHOT_TOOL_NAME,
        descriptions.BROWSER_SCREENSHOT_TOOL_DESCRIPTION,
        BrowserScreenshotInput,
        "screenshot",
    ),
)

#: The computer-use tool, on a :class:`~boxlite.tools.ComputerToolSession`.
COMPUTER_TOOL = ActionTool(
    descriptions.COMPUTER_TOOL_NAME, descriptions.computer_tool_description(), ComputerInput, "act"
)
