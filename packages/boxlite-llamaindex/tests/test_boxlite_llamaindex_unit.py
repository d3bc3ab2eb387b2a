"""boxlite-llamaindex without a VM: the tool list (names, descriptions, sync and async
functions, argument schemas), constructor keywords, result blocks and the closed-sandbox error.
No test here boots a box (the spec's box is created on its first call; these tests never make a
call that reaches one)."""

from __future__ import annotations

from typing import Any

import pytest
from boxlite.tools import ImageOutput, ToolResult, ToolSandbox, ToolSandboxError
from boxlite_llamaindex import BoxLiteToolSpec
from boxlite_llamaindex.tool_spec import to_blocks
from llama_index.core.base.llms.types import ImageBlock, TextBlock

IMAGE = "python:slim"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8

TOOLS: dict[str, tuple[set[str], set[str]]] = {
    # name: (arguments, required arguments)
    "run_python": ({"code", "timeout"}, {"code"}),
    "run_shell": ({"command", "timeout"}, {"command"}),
    "read_file": ({"path"}, {"path"}),
    "write_file": ({"path", "content"}, {"path", "content"}),
    "list_files": ({"path"}, set()),
}


def test_tool_list_names_schemas_and_descriptions() -> None:
    tools = BoxLiteToolSpec(IMAGE).to_tool_list()
    assert [t.metadata.name for t in tools] == list(TOOLS)
    for tool in tools:
        name = tool.metadata.name
        assert name is not None
        arguments, required = TOOLS[name]
        schema = tool.metadata.get_parameters_dict()
        assert set(schema["properties"]) == arguments, schema
        assert set(schema.get("required", [])) == required, schema
        assert len(tool.metadata.description) > 40
        assert tool.async_fn is not None  # the async variant, for async agents


@pytest.mark.parametrize(
    ("name", "args", "field"),
    [("run_python", {}, "code"), ("run_shell", {"command": 3}, "command"), ("write_file", {"path": "/a"}, "content")],
)
def test_bad_arguments_are_refused_by_the_schema(name: str, args: dict[str, Any], field: str) -> None:
    [tool] = [t for t in BoxLiteToolSpec(IMAGE).to_tool_list() if t.metadata.name == name]
    assert tool.metadata.fn_schema is not None
    with pytest.raises(ValueError, match=field):
        tool.metadata.fn_schema(**args)


def test_constructor_keywords_make_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BoxLiteToolSpec("example/image:1", memory_mib=256, default_timeout=7, persistent=True)
    assert spec.sandbox.options is not None
    assert spec.sandbox.options.image == "example/image:1" and spec.sandbox.options.memory_mib == 256
    assert spec.sandbox.default_timeout == 7 and spec.sandbox.persistent
    monkeypatch.setenv("BOXLITE_DEFAULT_IMAGE", "example/from-env:2")
    default = BoxLiteToolSpec().sandbox.options
    assert default is not None and default.image == "example/from-env:2"


def test_a_given_sandbox_excludes_the_other_keywords() -> None:
    sandbox = ToolSandbox(IMAGE)
    assert BoxLiteToolSpec(sandbox=sandbox).sandbox is sandbox
    with pytest.raises(ValueError, match="either sandbox= or image="):
        BoxLiteToolSpec(IMAGE, sandbox=sandbox)
    with pytest.raises(ValueError, match="max_output_chars=10 is too small"):
        BoxLiteToolSpec(IMAGE, max_output_chars=10)


async def test_a_closed_sandbox_says_so() -> None:
    spec = BoxLiteToolSpec(IMAGE)
    await spec.aclose()
    with pytest.raises(ToolSandboxError, match="closed"):
        await spec.arun_shell("true")


def test_python_results_are_text_or_text_and_image_blocks() -> None:
    plain = ToolResult(exit_code=0, stdout="42\n", stderr="")
    assert to_blocks(plain) == plain.to_text()
    with_image = ToolResult(exit_code=0, stdout="", stderr="", images=(ImageOutput(path="/o/fig.png", data=PNG),))
    blocks = to_blocks(with_image)
    assert isinstance(blocks, list) and isinstance(blocks[0], TextBlock) and isinstance(blocks[1], ImageBlock)
    assert blocks[0].text == with_image.to_text() and blocks[1].image_mimetype == "image/png"
