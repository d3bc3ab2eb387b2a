"""boxlite-crewai without a VM: the tools' names, descriptions, argument schemas, argument
checks, constructor keywords, ``boxlite_tools`` and the error guard. No test here boots a box
(a tool's box is created on its first call; these tests never make a call that reaches one)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

import pytest
from boxlite.tools import ImageOutput, ToolResult, ToolSandbox, descriptions
from boxlite_crewai import (
    BoxLiteListFilesTool,
    BoxLitePythonTool,
    BoxLiteReadFileTool,
    BoxLiteSandboxFailure,
    BoxLiteShellTool,
    BoxLiteWriteFileTool,
    boxlite_tools,
    default_images_dir,
)
from crewai.tools import BaseTool
from pydantic import ValidationError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai")

IMAGE = "python:slim"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8

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
    schema = tool.args_schema.model_json_schema()
    assert set(schema["properties"]) == arguments
    assert set(schema.get("required", [])) == required
    assert all(prop.get("description") for prop in schema["properties"].values()), schema
    assert len(tool.description) > 20


def test_descriptions_come_from_boxlite_tools() -> None:
    assert descriptions.SHELL_TOOL_DESCRIPTION in BoxLiteShellTool(image=IMAGE).description
    assert descriptions.READ_FILE_TOOL_DESCRIPTION in BoxLiteReadFileTool(image=IMAGE).description
    fresh, kept = BoxLitePythonTool(image=IMAGE), BoxLitePythonTool(image=IMAGE, persistent=True)
    assert descriptions.python_tool_description(False) in fresh.description
    assert descriptions.python_tool_description(True) in kept.description


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        (BoxLitePythonTool, {}, "code"),
        (BoxLitePythonTool, {"code": 5}, "code"),
        (BoxLitePythonTool, {"code": "1", "timeout": 0}, "timeout"),
        (BoxLiteShellTool, {"command": "ls", "timeout": -1}, "timeout"),
        (BoxLiteWriteFileTool, {"path": "/a"}, "content"),
    ],
)
def test_bad_arguments_are_refused_by_the_schema(tool: type[BaseTool], args: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        tool(image=IMAGE).args_schema(**args)


def test_constructor_keywords_make_the_sandbox(tmp_path: Path) -> None:
    tool = BoxLitePythonTool(image="example/image:1", memory_mib=256, default_timeout=7, images_dir=tmp_path)
    assert tool.sandbox.options is not None
    assert tool.sandbox.options.image == "example/image:1" and tool.sandbox.options.memory_mib == 256
    assert tool.sandbox.default_timeout == 7 and tool.images_dir == tmp_path
    assert BoxLitePythonTool(image=IMAGE).images_dir == default_images_dir()


def test_default_image_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXLITE_DEFAULT_IMAGE", "example/from-env:2")
    tool = BoxLiteShellTool()
    assert tool.sandbox.options is not None and tool.sandbox.options.image == "example/from-env:2"


def test_a_given_sandbox_excludes_the_other_keywords() -> None:
    sandbox = ToolSandbox(IMAGE)
    assert BoxLiteShellTool(sandbox=sandbox).sandbox is sandbox
    with pytest.raises(ValueError, match="either sandbox= or image="):
        BoxLiteShellTool(sandbox=sandbox, image=IMAGE)
    with pytest.raises(ValueError, match="max_output_chars=10 is too small"):
        BoxLitePythonTool(image=IMAGE, max_output_chars=10)


def test_boxlite_tools_share_one_sandbox(tmp_path: Path) -> None:
    tools = boxlite_tools(image=IMAGE, persistent=True, images_dir=tmp_path)
    assert [t.name for t in tools] == [
        descriptions.PYTHON_TOOL_NAME,
        descriptions.SHELL_TOOL_NAME,
        descriptions.READ_FILE_TOOL_NAME,
        descriptions.WRITE_FILE_TOOL_NAME,
        descriptions.LIST_FILES_TOOL_NAME,
    ]
    sandbox = tools[0].sandbox  # type: ignore[attr-defined]
    assert sandbox.persistent and all(t.sandbox is sandbox for t in tools)  # type: ignore[attr-defined]
    assert tools[0].images_dir == tmp_path  # type: ignore[attr-defined]


def test_a_closed_sandbox_is_a_sandbox_failure() -> None:
    tool = BoxLiteShellTool(image=IMAGE)
    tool.close()
    with pytest.raises(BoxLiteSandboxFailure, match="the BoxLite sandbox failed: this tool sandbox is closed"):
        tool.run(command="true")


def test_images_are_saved_on_the_host_and_listed(tmp_path: Path) -> None:
    tool = BoxLitePythonTool(image=IMAGE, images_dir=tmp_path)
    result = ToolResult(exit_code=0, stdout="", stderr="", images=(ImageOutput(path="/o/fig.png", data=PNG),))
    report = tool._report(result)
    [saved] = list(tmp_path.iterdir())
    assert saved.read_bytes() == PNG and str(saved) in report and report.startswith(result.to_text())
