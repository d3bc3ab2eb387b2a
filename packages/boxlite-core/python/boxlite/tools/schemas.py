"""The tools' arguments, defined once for every framework adapter.

The pydantic input schemas are what a model sees of a tool's arguments (LangChain's and
CrewAI's ``args_schema``: the same names, descriptions and limits everywhere).
:func:`call_timeout` is the tool core's one check of a call's timeout, on every path (Python
and shell, a shared box or a pool lease); the schemas' ``gt=0`` tells the model the same rule.
"""

from __future__ import annotations

import math

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


def call_timeout(timeout: float | None, default: float) -> float:
    """The seconds a tool call may run: ``default`` when no ``timeout`` is given, else the
    ``timeout``, which must be a positive, finite number (:class:`ValueError` otherwise)."""
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout={timeout} must be a positive number of seconds")
    return float(timeout)


__all__ = ["ListFilesInput", "PythonInput", "ReadFileInput", "ShellInput", "WriteFileInput", "call_timeout"]
