"""CrewAI tools that run code, commands and file operations in a BoxLite VM."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from boxlite import run_sync
from boxlite.pool import LeasingPool
from boxlite.tools import ListFilesInput as ListFilesInput
from boxlite.tools import PythonInput as PythonInput
from boxlite.tools import ReadFileInput as ReadFileInput
from boxlite.tools import (
    SandboxBoundTool,
    ToolResult,
    ToolSandbox,
    descriptions,
    guard_sandbox,
)
from boxlite.tools import ShellInput as ShellInput
from boxlite.tools import WriteFileInput as WriteFileInput
from crewai.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class BoxLiteSandboxFailure(RuntimeError):
    """The BoxLite sandbox itself failed (the VM or its interpreter), not the code it ran."""


def default_images_dir() -> Path:
    """Where images are saved when no ``images_dir`` is given: ``$TMPDIR/boxlite-crewai-images``."""
    return Path(tempfile.gettempdir()) / "boxlite-crewai-images"


class BoxLiteBaseTool(SandboxBoundTool, BaseTool):
    """A CrewAI tool bound to a :class:`~boxlite.tools.ToolSandbox`.

    Pass one ``sandbox`` to several tools (or use :func:`boxlite_tools`) to share one box across
    a crew; otherwise the tool makes its own from ``image`` (default ``BOXLITE_DEFAULT_IMAGE``
    or ``python:slim``), ``pool`` and ``persistent``. Works from sync and async crews and from
    inside running event loops.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sandbox: ToolSandbox = Field(default=None, exclude=True)  # type: ignore[assignment]

    @staticmethod
    async def _guard(call: Awaitable[T]) -> T:
        return await guard_sandbox(call, BoxLiteSandboxFailure)


class BoxLitePythonTool(BoxLiteBaseTool):
    """Runs model-written Python in a local VM. Images the code makes are saved as PNG files in
    ``images_dir`` on this machine, and the result text lists their paths."""

    name: str = descriptions.PYTHON_TOOL_NAME
    description: str = ""
    args_schema: type[BaseModel] = PythonInput
    images_dir: Path = Field(default_factory=default_images_dir)

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        if not self.description:
            self.description = descriptions.python_tool_description(self.sandbox.persistent)

    def _report(self, result: ToolResult) -> str:
        text = result.to_text()
        if result.images:
            saved = result.save_images(self.images_dir)
            text += "\nimages saved on the host: " + ", ".join(str(p) for p in saved)
        return text

    def _run(self, code: str, timeout: float | None = None) -> str:
        return run_sync(self._arun(code, timeout))

    async def _arun(self, code: str, timeout: float | None = None) -> str:
        return self._report(await self._guard(self.sandbox.run_python(code, timeout)))


class BoxLiteShellTool(BoxLiteBaseTool):
    """Runs a shell command in a local VM."""

    name: str = descriptions.SHELL_TOOL_NAME
    description: str = descriptions.SHELL_TOOL_DESCRIPTION
    args_schema: type[BaseModel] = ShellInput

    def _run(self, command: str, timeout: float | None = None) -> str:
        return run_sync(self._arun(command, timeout))

    async def _arun(self, command: str, timeout: float | None = None) -> str:
        return (await self._guard(self.sandbox.run_shell(command, timeout))).to_text()


class BoxLiteReadFileTool(BoxLiteBaseTool):
    """Reads a text file from the VM."""

    name: str = descriptions.READ_FILE_TOOL_NAME
    description: str = descriptions.READ_FILE_TOOL_DESCRIPTION
    args_schema: type[BaseModel] = ReadFileInput

    def _run(self, path: str) -> str:
        return run_sync(self._arun(path))

    async def _arun(self, path: str) -> str:
        return await self._guard(self.sandbox.read_file_report(path))


class BoxLiteWriteFileTool(BoxLiteBaseTool):
    """Writes a text file in the VM."""

    name: str = descriptions.WRITE_FILE_TOOL_NAME
    description: str = descriptions.WRITE_FILE_TOOL_DESCRIPTION
    args_schema: type[BaseModel] = WriteFileInput

    def _run(self, path: str, content: str) -> str:
        return run_sync(self._arun(path, content))

    async def _arun(self, path: str, content: str) -> str:
        return await self._guard(self.sandbox.write_file_report(path, content))


class BoxLiteListFilesTool(BoxLiteBaseTool):
    """Lists a directory in the VM."""

    name: str = descriptions.LIST_FILES_TOOL_NAME
    description: str = descriptions.LIST_FILES_TOOL_DESCRIPTION
    args_schema: type[BaseModel] = ListFilesInput

    def _run(self, path: str = ".") -> str:
        return run_sync(self._arun(path))

    async def _arun(self, path: str = ".") -> str:
        return await self._guard(self.sandbox.list_files_report(path))


def boxlite_tools(
    sandbox: ToolSandbox | None = None,
    *,
    image: str | os.PathLike[str] | None = None,
    pool: LeasingPool | None = None,
    persistent: bool = False,
    memory_mib: int = 1024,
    images_dir: str | os.PathLike[str] | None = None,
) -> list[BaseTool]:
    """Python, shell, read, write and list tools sharing one sandbox (one box for the crew, or a
    pool lease per call). Close it with ``tools[0].close()`` or ``sandbox.close_sync()``."""
    sandbox = ToolSandbox.given_or_new(sandbox, image, pool=pool, persistent=persistent, memory_mib=memory_mib)
    python = (
        BoxLitePythonTool(sandbox=sandbox, images_dir=Path(images_dir))
        if images_dir is not None
        else BoxLitePythonTool(sandbox=sandbox)
    )
    return [
        python,
        BoxLiteShellTool(sandbox=sandbox),
        BoxLiteReadFileTool(sandbox=sandbox),
        BoxLiteWriteFileTool(sandbox=sandbox),
        BoxLiteListFilesTool(sandbox=sandbox),
    ]
