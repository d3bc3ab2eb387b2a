"""The checks of a pool's settings, shared by :class:`~boxlite.pool.BoxPool` and
:class:`~boxlite.ray.RayBoxPool` so both refuse the same things with the same words."""

from __future__ import annotations

from ..codebox import default_image
from ..errors import InvalidOptionError
from ..options import BoxOptions


def checked_pool_settings(
    pool: str,
    options: BoxOptions | None,
    *,
    size_name: str,
    max_size: int,
    min_idle: int,
    max_uses: int,
    acquire_timeout: float,
) -> BoxOptions:
    """Raises :class:`InvalidOptionError` naming ``pool`` and the setting when one is out of range;
    returns the boxes' options (default: ``BoxOptions(image=default_image())``).

    ``size_name`` is what the pool calls its most boxes at once (``max_size``, ``per_node_max``).
    """
    if max_size < 1:
        raise InvalidOptionError(f"{pool} {size_name} must be at least 1, got {max_size}")
    if not 0 <= min_idle <= max_size:
        raise InvalidOptionError(f"{pool} min_idle must be between 0 and {size_name} ({max_size}), got {min_idle}")
    if max_uses < 1:
        raise InvalidOptionError(f"{pool} max_uses must be at least 1, got {max_uses}")
    if acquire_timeout < 0:
        raise InvalidOptionError(f"{pool} acquire_timeout must be >= 0 seconds, got {acquire_timeout}")
    options = options if options is not None else BoxOptions(image=default_image())
    if options.name is not None:
        raise InvalidOptionError(
            f"{pool} options must not set a name ({options.name!r}): the pool's boxes cannot share one"
        )
    return options
