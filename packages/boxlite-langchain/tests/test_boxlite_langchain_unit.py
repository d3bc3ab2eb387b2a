"""boxlite-langchain without a VM: ``langchain-tests``' ``ToolsUnitTests`` for every tool, and
the names, descriptions, schemas, argument checks, constructor keywords and error guards of the
tools, the toolkit and the Deep Agents backend. No test here boots a box (a tool's box is
created on its first call; these tests never make a call that reaches one)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from boxlite import BoxOptions
from boxlite.pool import BoxPool
from boxlite.tools import ImageOutput, ToolResult, ToolSandbox, descriptions
from boxlite_langchain import (
    BoxLiteListFilesTool,
    BoxLitePythonTool,
    BoxLiteReadFileTool,
    BoxLiteShellTool,
    BoxLiteToolkit,
    BoxLiteWriteFileTool,
    to_content,
)
from langchain_core.tools import BaseTool, ToolException
from langchain_tests.unit_tests import ToolsUnitTests
from pydantic import ValidationError

IMAGE = "python:slim"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8


# -- langchain-tests' standard unit tests, one class per tool --------------------------------


class TestPythonToolStandard(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return BoxLitePythonTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"image": IMAGE}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"code": "print(6 * 7)", "timeout": 30}


class TestShellToolStandard(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return BoxLiteShellTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"image": IMAGE}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"command": "echo hello", "timeout": 30}


class TestReadFileToolStandard(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return BoxLiteReadFileTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"image": IMAGE}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"path": "/etc/hostname"}


class TestWriteFileToolStandard(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return BoxLiteWriteFileTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"image": IMAGE}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"path": "/work/notes.txt", "content": "hello\n"}


class TestListFilesToolStandard(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return BoxLiteListFilesTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"image": IMAGE}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"path": "/work"}


# -- names, descriptions, schemas ------------------------------------------------------------

TOOLS: dict[type[BaseTool], tuple[str, set[str], set[str]]] = {
    # class: (name, arguments, required arguments)
    BoxLitePythonTool: (descriptions.PYTHON_TOOL_NAME, {"code", "timeout"}, {"code"}),
    BoxLiteShellTool: (descriptions.SHELL_TOOL_NAME, {"command", "timeout"}, {"command"}),
    BoxLiteReadFileTool: (descriptions.READ_FILE_TOOL_NAME, {"path"}, {"path"}),
    BoxLiteWriteFileTool: (descriptions.WRITE_FILE_TOOL_NAME, {"path", "content"}, {"path", "content"}),
    BoxLiteListFilesTool: (descriptions.LIST_FILES_TOOL_NAME, {"path"}, set()),
}


@pytest.mark.parametrize("cls", list(TOOLS), ids=lambda c: c.__name__)
def test_names_arguments_and_descriptions_are_the_shared_ones(cls: type[BaseTool]) -> None:
    name, arguments, required = TOOLS[cls]
    tool = cls(image=IMAGE)
    assert tool.name == name
    assert set(tool.args) == arguments
    schema = tool.tool_call_schema.model_json_schema()
    assert set(schema.get("required", [])) == required
    assert all(prop.get("description") for prop in schema["properties"].values()), schema
    assert len(tool.description) > 20


def test_descriptions_come_from_boxlite_tools() -> None:
    assert BoxLiteShellTool(image=IMAGE).description == descriptions.SHELL_TOOL_DESCRIPTION
    assert BoxLiteReadFileTool(image=IMAGE).description == descriptions.READ_FILE_TOOL_DESCRIPTION
    assert BoxLiteWriteFileTool(image=IMAGE).description == descriptions.WRITE_FILE_TOOL_DESCRIPTION
    assert BoxLiteListFilesTool(image=IMAGE).description == descriptions.LIST_FILES_TOOL_DESCRIPTION
    fresh, kept = BoxLitePythonTool(image=IMAGE), BoxLitePythonTool(image=IMAGE, persistent=True)
    assert fresh.description == descriptions.python_tool_description(False)
    assert kept.description == descriptions.python_tool_description(True)
    assert fresh.description != kept.description
    assert BoxLitePythonTool(image=IMAGE, description="mine").description == "mine"


def test_code_and_shell_tools_return_content_and_artifact() -> None:
    assert BoxLitePythonTool(image=IMAGE).response_format == "content_and_artifact"
    assert BoxLiteShellTool(image=IMAGE).response_format == "content_and_artifact"
    assert BoxLiteReadFileTool(image=IMAGE).response_format == "content"


# -- argument validation (before any box) ----------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        (BoxLitePythonTool, {}, "code"),
        (BoxLitePythonTool, {"code": 5}, "code"),
        (BoxLitePythonTool, {"code": "1", "timeout": 0}, "timeout"),
        (BoxLitePythonTool, {"code": "1", "timeout": -3}, "timeout"),
        (BoxLiteShellTool, {"command": ["ls"]}, "command"),
        (BoxLiteShellTool, {"command": "ls", "timeout": "soon"}, "timeout"),
        (BoxLiteReadFileTool, {}, "path"),
        (BoxLiteWriteFileTool, {"path": "/a"}, "content"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(tool: type[BaseTool], args: dict[str, Any], field: str) -> None:
    instance = tool(image=IMAGE)
    with pytest.raises(ValidationError, match=field):
        instance.invoke(args)
    assert instance.sandbox._shared is None  # refused before a box was created


# -- constructor keywords --------------------------------------------------------------------


def test_constructor_keywords_make_the_sandbox() -> None:
    tool = BoxLitePythonTool(image="example/image:1", memory_mib=256, max_output_chars=500, default_timeout=7)
    assert tool.sandbox.options is not None
    assert tool.sandbox.options.image == "example/image:1" and tool.sandbox.options.memory_mib == 256
    assert tool.sandbox.default_timeout == 7 and not tool.sandbox.persistent


def test_default_image_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXLITE_DEFAULT_IMAGE", "example/from-env:2")
    tool = BoxLitePythonTool()
    assert tool.sandbox.options is not None and tool.sandbox.options.image == "example/from-env:2"


def test_a_given_sandbox_is_shared_and_excludes_the_other_keywords() -> None:
    sandbox = ToolSandbox(IMAGE)
    assert BoxLiteShellTool(sandbox=sandbox).sandbox is sandbox
    with pytest.raises(ValueError, match="either sandbox= or image="):
        BoxLiteShellTool(sandbox=sandbox, image=IMAGE)
    with pytest.raises(ValueError, match="either sandbox= or image="):
        BoxLitePythonTool(sandbox=sandbox, persistent=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_output_chars": 10}, "max_output_chars=10 is too small"),
        ({"default_timeout": 0}, "default_timeout"),
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BoxLitePythonTool(image=IMAGE, **kwargs)


def test_toolkit_tools_share_one_sandbox() -> None:
    toolkit = BoxLiteToolkit(image=IMAGE, persistent=True)
    tools = toolkit.get_tools()
    assert [t.name for t in tools] == [
        descriptions.PYTHON_TOOL_NAME,
        descriptions.SHELL_TOOL_NAME,
        descriptions.READ_FILE_TOOL_NAME,
        descriptions.WRITE_FILE_TOOL_NAME,
        descriptions.LIST_FILES_TOOL_NAME,
    ]
    assert all(t.sandbox is toolkit.sandbox for t in tools)  # type: ignore[attr-defined]
    assert tools[0].description == descriptions.python_tool_description(True)


# -- error guards ----------------------------------------------------------------------------


def test_a_closed_sandbox_is_a_tool_exception_not_a_crash() -> None:
    tool = BoxLiteShellTool(image=IMAGE)
    tool.close()
    with pytest.raises(ToolException, match="the BoxLite sandbox failed: this tool sandbox is closed"):
        tool.invoke({"command": "true"})
    handled = BoxLiteShellTool(image=IMAGE, handle_tool_error=True)
    handled.close()
    assert "closed" in str(handled.invoke({"command": "true"}))


async def test_a_closed_sandbox_is_a_tool_exception_from_async_calls_too() -> None:
    tool = BoxLitePythonTool(image=IMAGE)
    await tool.aclose()
    with pytest.raises(ToolException, match="closed"):
        await tool.ainvoke({"code": "1"})


# -- content ---------------------------------------------------------------------------------


def test_to_content_is_text_or_text_and_image_blocks() -> None:
    plain = ToolResult(exit_code=0, stdout="42\n", stderr="")
    assert to_content(plain) == plain.to_text()
    with_image = ToolResult(exit_code=0, stdout="", stderr="", images=(ImageOutput(path="/o/fig.png", data=PNG),))
    blocks = to_content(with_image)
    assert isinstance(blocks, list) and blocks[0] == {"type": "text", "text": with_image.to_text()}
    assert isinstance(blocks[1], dict) and blocks[1]["type"] == "image" and blocks[1]["mime_type"] == "image/png"


# -- the Deep Agents backend -----------------------------------------------------------------

if sys.version_info >= (3, 11):
    from boxlite_langchain import deep_agents

    def test_deep_agents_backend_refuses_a_pooled_sandbox_and_tiny_caps() -> None:
        pool = BoxPool(BoxOptions(image=IMAGE), min_idle=0)  # boots nothing until a lease
        with pytest.raises(ValueError, match="leases a box per call from a pool"):
            deep_agents.BoxLiteSandbox(ToolSandbox(pool=pool))
        with pytest.raises(ValueError, match="max_output_bytes=10 is too small"):
            deep_agents.BoxLiteSandbox(image=IMAGE, max_output_bytes=10)

    def test_deep_agents_backend_refuses_relative_paths_before_any_box() -> None:
        backend = deep_agents.BoxLiteSandbox(image=IMAGE)
        assert [r.error for r in backend.upload_files([("rel.txt", b"x")])] == ["invalid_path"]
        assert [r.error for r in backend.download_files(["rel/x.txt"])] == ["invalid_path"]
        written = asyncio.run(backend.awrite("rel.txt", "x"))
        assert written.error is not None and "not an absolute path" in written.error
        assert backend.sandbox._shared is None  # no box was created

    def test_deep_agents_glob_script_still_edits_cleanly() -> None:
        # Each edit to Deep Agents' own glob script applied (else glob would report files only).
        assert deep_agents._GLOB_WITH_DIRECTORIES is not None
        assert "'is_dir': is_dir" in deep_agents._GLOB_WITH_DIRECTORIES
