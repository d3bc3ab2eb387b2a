"""What every framework adapter's base tool shares, so each adapter keeps only what is
framework-specific: :class:`SandboxBoundTool` takes the constructor keywords that make (or
take) the tool's :class:`~boxlite.tools.ToolSandbox`, and closes it."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .._loop import run_sync
from ..pool import BoxPool, LeasingPool
from ._sandbox import ToolSandbox
from ._session import DEFAULT_TIMEOUT
from .browser import BrowserToolSession
from .computer import ComputerToolSession
from .result import DEFAULT_MAX_OUTPUT_CHARS, ActionResult
from .schemas import ActionTool


class SandboxBoundTool:
    """Mixed in before a framework's ``BaseTool`` (a pydantic model that declares a ``sandbox``
    field): without ``sandbox=`` the tool makes its own from ``image`` (default
    ``BOXLITE_DEFAULT_IMAGE`` or ``python:slim``), ``pool``, ``persistent``, ``memory_mib``,
    ``max_output_chars`` and ``default_timeout``; with it, the tool shares that sandbox, and
    passing both is an error. Other keywords go to the framework's tool."""

    if TYPE_CHECKING:
        # Declared by the framework's model (a pydantic field); not a field of this mixin.
        sandbox: ToolSandbox

    def __init__(
        self,
        *,
        sandbox: ToolSandbox | None = None,
        image: str | os.PathLike[str] | None = None,
        pool: LeasingPool | None = None,
        persistent: bool = False,
        memory_mib: int = 1024,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        default_timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        sandbox = ToolSandbox.given_or_new(
            sandbox,
            image,
            pool=pool,
            persistent=persistent,
            memory_mib=memory_mib,
            max_output_chars=max_output_chars,
            default_timeout=default_timeout,
        )
        super().__init__(sandbox=sandbox, **kwargs)  # type: ignore[call-arg]  # the framework's model

    def close(self) -> None:
        """Stops the tool's box (if its sandbox created one)."""
        self.sandbox.close_sync()

    async def aclose(self) -> None:
        """Stops the tool's box (if its sandbox created one)."""
        await self.sandbox.close()


class ActionBoundTool:
    """Mixed in before a framework's ``BaseTool`` (a pydantic model that declares a ``session``
    field) for the browser and computer-use tools: the tool runs :attr:`action_tool`'s method of
    its session (a :class:`~boxlite.tools.BrowserToolSession` or
    :class:`~boxlite.tools.ComputerToolSession`). Without ``session=`` the tool makes one of
    :attr:`session_class` from ``box`` (a started box to drive) or ``pool``; passing a session
    and either of those is an error. Other keywords go to the framework's tool."""

    #: The session the tool makes when not given one.
    session_class: ClassVar[Callable[..., BrowserToolSession | ComputerToolSession]]

    if TYPE_CHECKING:
        # Declared by the framework's model (pydantic fields); not fields of this mixin.
        session: BrowserToolSession | ComputerToolSession
        action_tool: ActionTool

    def __init__(
        self,
        *,
        session: BrowserToolSession | ComputerToolSession | None = None,
        box: Any = None,
        pool: BoxPool | None = None,
        **kwargs: Any,
    ) -> None:
        if session is None:
            session = self.session_class(box, pool=pool)
        elif box is not None or pool is not None:
            raise ValueError("pass either session= or box=/pool=, not both")
        super().__init__(session=session, **kwargs)  # type: ignore[call-arg]  # the framework's model

    async def _perform(self, arguments: dict[str, Any]) -> ActionResult:
        """Runs the tool's session method with the call's arguments (a failed action is a result;
        a failure of the box raises :class:`~boxlite.errors.BoxliteError`)."""
        method: Callable[..., Awaitable[ActionResult]] = getattr(self.session, self.action_tool.method)
        return await method(**arguments)

    def close(self) -> None:
        """Ends the tool's session (stops the box it started, or returns its lease)."""
        run_sync(self.session.close())

    async def aclose(self) -> None:
        """Ends the tool's session (stops the box it started, or returns its lease)."""
        await self.session.close()


__all__ = ["ActionBoundTool", "SandboxBoundTool"]
