"""How a coroutine method gets its blocking twin: :func:`blocking` and :class:`AsyncProxy`.

The sync API is written once, as coroutines; every blocking method is one line naming the
coroutine it runs (``run = blocking(Box.run)``), never a copy of its signature and body. A
twin looks the coroutine method up by name on the object's async target (the ``Sync*``
proxy's wrapped object, or the object itself, as for ``ToolSandbox.run_python_sync``), runs
it on the library loop with :func:`~boxlite._loop.run_sync`, and optionally wraps the result
(``create = blocking(Boxlite.create, SyncBox)``).

Why a typed proxy rather than a generated file (httpcore's unasync): our sync classes are not
the async ones with ``await`` removed. They wrap results in other ``Sync*`` classes, keep some
methods synchronous (``info()``, ``stdout()``), add a ``timeout`` to ``wait()`` and return
``self`` from ``start()``. A generator would need a table of these exceptions plus a staleness
check; here the exceptions stay ordinary hand-written methods next to the one-liners. mypy
--strict still sees every twin's exact signature: :func:`blocking` is typed with a
``ParamSpec``, so ``SyncBox.run`` takes what ``Box.run`` takes and returns what it returns
(or the wrapper's type), and a changed async signature changes the twin's with it. The twin
carries the coroutine's docstring and signature (``help()``, ``inspect.signature``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from ._loop import run_sync

P = ParamSpec("P")
R = TypeVar("R")
W = TypeVar("W")
T = TypeVar("T")


class AsyncProxy(Generic[T]):
    """Base of the ``Sync*`` classes: the async object their :func:`blocking` methods call."""

    def __init__(self, target: T) -> None:
        self._target = target


@overload
def blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Any, P], R]: ...


@overload
def blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
    wrap: Callable[[R], W],
) -> Callable[Concatenate[Any, P], W]: ...


def blocking(
    method: Callable[..., Coroutine[Any, Any, Any]],
    wrap: Callable[[Any], Any] | None = None,
) -> Callable[..., Any]:
    """The blocking twin of the coroutine method ``method``, for a class body.

    Called on an :class:`AsyncProxy`, it runs the method of that name of the proxy's target;
    on any other object, the object's own (so overrides in subclasses are honoured). The result
    goes through ``wrap`` when given.
    """
    name = method.__name__

    @functools.wraps(method)
    def twin(self: object, /, *args: Any, **kwargs: Any) -> Any:
        target = self._target if isinstance(self, AsyncProxy) else self
        result = run_sync(getattr(target, name)(*args, **kwargs))
        return result if wrap is None else wrap(result)

    # functools.wraps points __wrapped__ at the coroutine: inspect would call the twin async.
    del twin.__wrapped__
    twin.__qualname__ = f"blocking({method.__qualname__})"
    signature = inspect.signature(method)
    returns = wrap.__name__ if isinstance(wrap, type) else signature.return_annotation
    twin.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
    return twin


__all__ = ["AsyncProxy", "blocking"]
