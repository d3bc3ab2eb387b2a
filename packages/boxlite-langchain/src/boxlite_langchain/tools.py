"""LangChain tools that run code, commands and file operations in a BoxLite VM."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Literal, TypeVar

from boxlite import run_sync
from boxlite.tools import (
    ActionResult,
    SandboxBoundTool,
    ToolResult,
    ToolSandbox,
    descriptions,
    guard_sandbox,
)
from boxlite.tools import ListFilesInput as ListFilesInput
from boxlite.tools import PythonInput as PythonInput
from boxlite.tools import ReadFileInput as ReadFileInput
from boxlite.tools import ShellInput as ShellInput
from boxlite.tools import WriteFileInput as WriteFileInput
from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.messages.content import create_image_block
from langchain_core.tools import BaseTool, BaseToolkit, ToolException
from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

#: What the model receives: the result text, plus one image content block per image.
ToolContent = str | list[str | dict[str, Any]]


def to_content(result: ToolResult | ActionResult) -> ToolContent:
    """The result text, with the images as standard LangChain image content blocks."""
    if not result.images:
        return result.to_text()
    blocks: list[str | dict[str, Any]] = [{"type": "text", "text": result.to_text()}]
    blocks.extend(dict(create_image_block(base64=image.base64(), mime_type=image.mime_type)) for image in result.images)
    return blocks


class BoxLiteBaseTool(SandboxBoundTool, BaseTool):
    """A tool bound to a :class:`~boxlite.tools.ToolSandbox`.

    Without ``sandbox=`` the tool makes its own from ``image`` (default ``BOXLITE_DEFAULT_IMAGE``
    or ``python:slim``), ``pool``, ``persistent`` and ``memory_mib``. Sandbox failures (the VM or
    its interpreter) raise :class:`~langchain_core.tools.ToolException`; code that fails is an
    ordinary result the model can read.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sandbox: ToolSandbox = Field(default=None, exclude=True)  # type: ignore[assignment]

    @staticmethod
    async def _guard(call: Awaitable[T]) -> T:
        return await guard_sandbox(call, ToolException)


class BoxLitePythonTool(BoxLiteBaseTool):
    """Runs model-written Python in a local VM: ``BoxLitePythonTool()`` works as is.

    Returns ``(content, artifact)``: the content is the result text (exit code, stdout,
    stderr, timed out) plus an image content block per figure; the artifact is the
    :class:`~boxlite.tools.ToolResult` (with the PNG bytes).
    """

    name: str = descriptions.PYTHON_TOOL_NAME
    description: str = ""
    args_schema: type[BaseModel] = PythonInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        if not self.description:
            self.description = descriptions.python_tool_description(self.sandbox.persistent)

    def _run(
        self, code: str, timeout: float | None = None, run_manager: CallbackManagerForToolRun | None = None
    ) -> tuple[ToolContent, ToolResult]:
        return run_sync(self._arun(code, timeout))

    async def _arun(
        self, code: str, timeout: float | None = None, run_manager: AsyncCallbackManagerForToolRun | None = None
    ) -> tuple[ToolContent, ToolResult]:
        result = await self._guard(self.sandbox.run_python(code, timeout))
        return to_content(result), result


class BoxLiteShellTool(BoxLiteBaseTool):
    """Runs a shell command in a local VM; returns the result text and the ToolResult."""

    name: str = descriptions.SHELL_TOOL_NAME
    description: str = descriptions.SHELL_TOOL_DESCRIPTION
    args_schema: type[BaseModel] = ShellInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"

    def _run(
        self, command: str, timeout: float | None = None, run_manager: CallbackManagerForToolRun | None = None
    ) -> tuple[ToolContent, ToolResult]:
        return run_sync(self._arun(command, timeout))

    async def _arun(
        self, command: str, timeout: float | None = None, run_manager: AsyncCallbackManagerForToolRun | None = None
    ) -> tuple[ToolContent, ToolResult]:
        result = await self._guard(self.sandbox.run_shell(command, timeout))
        return result.to_text(), result


class BoxLiteReadFileTool(BoxLiteBaseTool):
    """Reads a text file from the VM."""

    name: str = descriptions.READ_FILE_TOOL_NAME
    description: str = descriptions.READ_FILE_TOOL_DESCRIPTION
    args_schema: type[BaseModel] = ReadFileInput

    def _run(self, path: str, run_manager: CallbackManagerForToolRun | None = None) -> str:
        return run_sync(self._arun(path))

    async def _arun(self, path: str, run_manager: AsyncCallbackManagerForToolRun | None = None) -> str:
        return await self._guard(self.sandbox.read_file_report(path))


class BoxLiteWriteFileTool(BoxLiteBaseTool):
    """Writes a text file in the VM."""

    name: str = descriptions.WRITE_FILE_TOOL_NAME
    description: str = descriptions.WRITE_FILE_TOOL_DESCRIPTION
    args_schema: type[BaseModel] = WriteFileInput

    def _run(self, path: str, content: str, run_manager: CallbackManagerForToolRun | None = None) -> str:
        return run_sync(self._arun(path, content))

    async def _arun(self, path: str, content: str, run_manager: AsyncCallbackManagerForToolRun | None = None) -> str:
        return await self._guard(self.sandbox.write_file_report(path, content))


class BoxLiteListFilesTool(BoxLiteBaseTool):
    """Lists a directory in the VM."""

    name: str = descriptions.LIST_FILES_TOOL_NAME
    description: str = descriptions.LIST_FILES_TOOL_DESCRIPTION
    args_schema: type[BaseModel] = ListFilesInput

    def _run(self, path: str = ".", run_manager: CallbackManagerForToolRun | None = None) -> str:
        return run_sync(self._arun(path))

    async def _arun(self, path: str = ".", run_manager: AsyncCallbackManagerForToolRun | None = None) -> str:
        return await self._guard(self.sandbox.list_files_report(path))


class BoxLiteToolkit(SandboxBoundTool, BaseToolkit):
    """Python, shell and file tools that share one sandbox: one box for the toolkit (created on
    first use; ``persistent=True`` keeps Python variables between calls), or with ``pool=`` a
    pool lease per call (concurrent agents never share a box).

    ``with BoxLiteToolkit() as toolkit: agent = create_react_agent(model, toolkit.get_tools())``
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sandbox: ToolSandbox = Field(default=None, exclude=True)  # type: ignore[assignment]

    def get_tools(self) -> list[BaseTool]:
        """The Python, shell, read, write and list tools, all on this toolkit's sandbox."""
        return [
            BoxLitePythonTool(sandbox=self.sandbox),
            BoxLiteShellTool(sandbox=self.sandbox),
            BoxLiteReadFileTool(sandbox=self.sandbox),
            BoxLiteWriteFileTool(sandbox=self.sandbox),
            BoxLiteListFilesTool(sandbox=self.sandbox),
        ]

    def __enter__(self) -> BoxLiteToolkit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> BoxLiteToolkit:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
