"""What every framework adapter's base tool shares, so each adapter keeps only what is
framework-specific: :class:`SandboxBoundTool` takes the constructor keywords that make (or
take) the tool's :class:`~boxlite.tools.ToolSandbox`, and closes it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..pool import LeasingPool
from ._sandbox import ToolSandbox
from ._session import DEFAULT_TIMEOUT
from .result import DEFAULT_MAX_OUTPUT_CHARS


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


__all__ = ["SandboxBoundTool"]
