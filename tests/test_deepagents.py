"""The Deep Agents sandbox backend (boxlite-langchain's ``deepagents`` extra), driven by
``create_deep_agent``'s own loop with a scripted chat model, against a real box."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import pytest

if sys.version_info < (3, 11):  # pragma: no cover - deepagents needs Python 3.11
    pytest.skip("deepagents (the optional extra) requires Python 3.11 or newer", allow_module_level=True)

from boxlite_langchain.deep_agents import BoxLiteSandbox
from deepagents import create_deep_agent
from langchain_core.messages import ToolMessage
from test_langchain import ScriptedChatModel, call, finish, text_of


@pytest.fixture(scope="module")
async def backend(plot_image: str) -> AsyncIterator[BoxLiteSandbox]:
    sandbox = BoxLiteSandbox(image=plot_image, memory_mib=512)
    yield sandbox
    await sandbox.aclose()


async def test_deep_agent_runs_commands_and_files_in_the_box(backend: BoxLiteSandbox) -> None:
    model = ScriptedChatModel(
        steps=[
            call("execute", command="python3 -c 'print(6*7)'"),
            call("write_file", file_path="/work/plan.md", content="step one\nstep two\n"),
            call("read_file", file_path="/work/plan.md"),
            call("execute", command="cat /work/plan.md | wc -l; ls /work"),
            finish,
        ]
    )
    agent = create_deep_agent(model=model, backend=backend)
    state = await agent.ainvoke({"messages": [("user", "go")]})
    results = [text_of(m) for m in state["messages"] if isinstance(m, ToolMessage)]
    assert len(results) == 4, results
    assert "42" in results[0]
    assert "step two" in results[2]
    assert "2" in results[3] and "plan.md" in results[3]


async def test_timeout_and_file_errors(backend: BoxLiteSandbox) -> None:
    response = await backend.aexecute("sleep 60", timeout=1)
    assert response.exit_code == 124 and "timed out" in response.output
    [missing] = await backend.adownload_files(["/nope/file"])
    assert missing.error == "file_not_found" and missing.content is None
    [uploaded] = await backend.aupload_files([("/work/bin/data.bin", b"\x00\x01\x02")])
    assert uploaded.error is None
    [downloaded] = backend.download_files(["/work/bin/data.bin"])
    assert downloaded.content == b"\x00\x01\x02"
