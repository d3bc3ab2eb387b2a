"""``langchain-tests``' ``ToolsIntegrationTests`` for every boxlite-langchain tool: each is
invoked with and without a tool call, sync and async, on one real box shared by the module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from boxlite.tools import ToolSandbox
from boxlite_langchain import (
    BoxLiteListFilesTool,
    BoxLitePythonTool,
    BoxLiteReadFileTool,
    BoxLiteShellTool,
    BoxLiteWriteFileTool,
)
from langchain_core.tools import BaseTool
from langchain_tests.integration_tests import ToolsIntegrationTests


@pytest.fixture(scope="module")
def shared_sandbox(python_image: str) -> Iterator[ToolSandbox]:
    sandbox = ToolSandbox(python_image, memory_mib=512)
    yield sandbox
    sandbox.close_sync()


class BoxLiteToolsIntegration(ToolsIntegrationTests):
    """The suite with the tool on the module's box (``tool_constructor`` is the class; the
    ``tool`` fixture binds it to the shared sandbox instead of booting a box per test)."""

    @pytest.fixture
    def tool(self, shared_sandbox: ToolSandbox) -> BaseTool:
        constructor = self.tool_constructor
        assert isinstance(constructor, type)
        return constructor(sandbox=shared_sandbox)


class TestPythonToolIntegration(BoxLiteToolsIntegration):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return BoxLitePythonTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"code": "print(6 * 7)", "timeout": 60}


class TestShellToolIntegration(BoxLiteToolsIntegration):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return BoxLiteShellTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"command": "echo hello; ls /", "timeout": 60}


class TestWriteFileToolIntegration(BoxLiteToolsIntegration):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return BoxLiteWriteFileTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"path": "/work/standard/notes.txt", "content": "hello\n"}


class TestReadFileToolIntegration(BoxLiteToolsIntegration):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return BoxLiteReadFileTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"path": "/etc/os-release"}


class TestListFilesToolIntegration(BoxLiteToolsIntegration):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return BoxLiteListFilesTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"path": "/"}
