"""What adapters do with a failure of the sandbox itself (the box or its interpreter, a
:class:`~boxlite.errors.BoxliteError`), as opposed to code that fails, which is an ordinary
result: :func:`guard_sandbox` raises it again as the framework's own tool error, with one
message for every framework."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import BoxliteError

T = TypeVar("T")


async def guard_sandbox(call: Awaitable[T], error: Callable[[str], Exception]) -> T:
    """Awaits ``call``; a :class:`~boxlite.errors.BoxliteError` becomes ``error(message)``
    (LangChain's ``ToolException``, CrewAI's ``BoxLiteSandboxFailure``), chained to it."""
    try:
        return await call
    except BoxliteError as e:
        raise error(f"the BoxLite sandbox failed: {e}") from e


__all__ = ["guard_sandbox"]
