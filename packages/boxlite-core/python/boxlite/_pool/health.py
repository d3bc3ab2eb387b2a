"""The default health check a pool runs on a box before every lease."""

from __future__ import annotations

from ..runtime import Box

#: Seconds the default health check allows its ``true`` execution.
HEALTH_CHECK_TIMEOUT = 10.0


async def default_health_check(box: Box) -> bool:
    """The box is running and a quick ``true`` execution succeeds."""
    if box.info().status != "running":
        return False
    result = await box.run("true", timeout=HEALTH_CHECK_TIMEOUT)
    return result.exit_code == 0


__all__ = ["HEALTH_CHECK_TIMEOUT", "default_health_check"]
