"""boxlite-llamaindex driven by LlamaIndex's own agent loop (``FunctionAgent``) with a mock
function-calling LLM (``MockFunctionCallingLLM`` playing a script of tool calls), against real boxes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import boxlite
import pytest
from boxlite.tools import ToolSandbox, create_tool_pool
from boxlite_llamaindex import BoxLiteToolSpec
from conftest import SPAWN_AND_SPIN
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import ToolOutput

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BOOT_ID = "print(open('/proc/sys/kernel/random/boot_id').read().strip(), flush=True)\n"


def scripted_llm(*calls: tuple[str, dict[str, Any]]) -> MockFunctionCallingLLM:
    """A mock function-calling LLM that asks for ``calls`` one per turn, then answers."""
    remaining = list(calls)

    def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        if not remaining:
            return ChatMessage(role=MessageRole.ASSISTANT, content="done")
        name, args = remaining.pop(0)
        block = ToolCallBlock(tool_call_id=f"call-{uuid.uuid4().hex[:8]}", tool_name=name, tool_kwargs=args)
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[block])

    return MockFunctionCallingLLM(response_generator=respond)


async def run_agent(spec: BoxLiteToolSpec, *calls: tuple[str, dict[str, Any]]) -> list[ToolOutput]:
    # A generous workflow timeout: a loaded 2-core host under TCG is slow.
    agent = FunctionAgent(tools=spec.to_tool_list(), llm=scripted_llm(*calls), timeout=600)
    handler = agent.run(user_msg="go")
    outputs = [ev.tool_output async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)]
    await handler
    assert len(outputs) == len(calls)
    return outputs


@pytest.fixture(scope="module")
async def spec(plot_image: str) -> AsyncIterator[BoxLiteToolSpec]:
    tool_spec = BoxLiteToolSpec(plot_image, memory_mib=512)
    yield tool_spec
    await tool_spec.aclose()


@pytest.fixture(scope="module")
async def session_spec(plot_image: str) -> AsyncIterator[BoxLiteToolSpec]:
    tool_spec = BoxLiteToolSpec(plot_image, memory_mib=512, persistent=True)
    await tool_spec.sandbox.run_python("pass")  # boot the box before the agent's clock runs
    yield tool_spec
    await tool_spec.aclose()


async def test_print_6_times_7(spec: BoxLiteToolSpec) -> None:
    [output] = await run_agent(spec, ("run_python", {"code": "print(6*7)"}))
    assert not output.is_error and "exit code: 0\nstdout:\n42\n" in output.content


async def test_persistent_session_keeps_variables(session_spec: BoxLiteToolSpec) -> None:
    outputs = await run_agent(
        session_spec, ("run_python", {"code": "answer = 41"}), ("run_python", {"code": "print(answer + 1)"})
    )
    assert "stdout:\n42\n" in outputs[1].content, [o.content for o in outputs]


async def test_timeout_kills_everything(spec: BoxLiteToolSpec) -> None:
    timed_out, processes = await run_agent(
        spec,
        ("run_python", {"code": SPAWN_AND_SPIN.format(n=555), "timeout": 5}),
        ("run_shell", {"command": "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"}),
    )
    assert "timed out: true" in timed_out.content and "exit code: 124" in timed_out.content
    assert "stdout:\nspawned\n" in timed_out.content, "the child ran before the timeout"
    assert "sleep 555" not in processes.content


async def test_plot_comes_back_as_an_image_block(spec: BoxLiteToolSpec) -> None:
    code = "import matplotlib.pyplot as plt\nplt.scatter([1, 2], [2, 1])\nprint('ok')"
    [output] = await run_agent(spec, ("run_python", {"code": code, "timeout": 120}))
    images = [b for b in output.blocks if isinstance(b, ImageBlock)]
    assert len(images) == 1 and images[0].image_mimetype == "image/png"
    assert images[0].resolve_image().read().startswith(PNG_MAGIC)
    assert "stdout:\nok" in output.content


async def test_huge_output_and_files(spec: BoxLiteToolSpec) -> None:
    truncated, written, read, listed = await run_agent(
        spec,
        ("run_python", {"code": "print('z' * 300_000)"}),
        ("write_file", {"path": "/srv/x.txt", "content": "llama"}),
        ("read_file", {"path": "/srv/x.txt"}),
        ("list_files", {"path": "/srv"}),
    )
    assert "characters truncated (output limit 10000 characters)" in truncated.content
    assert (written.content, read.content) == ("wrote 5 bytes to /srv/x.txt", "llama")
    assert "x.txt  (5 bytes)" in listed.content


async def test_sync_tools_inside_a_running_loop(spec: BoxLiteToolSpec) -> None:
    asyncio.get_running_loop()
    tool = spec.to_tool_list()[0]
    assert "stdout:\n42\n" in tool.call(code="print(6*7)").content


async def test_pool_two_agents_at_once_and_no_broken_box(runtime: boxlite.Boxlite, plot_image: str) -> None:
    pool = create_tool_pool(plot_image, runtime=runtime, memory_mib=512, min_idle=2, max_size=2, max_uses=5)
    pooled = BoxLiteToolSpec(sandbox=ToolSandbox(pool=pool))
    try:
        await pool.start()
        slow = BOOT_ID + "import time; time.sleep(1)\nseen = 1"
        first, second = await asyncio.gather(
            run_agent(pooled, ("run_python", {"code": slow})), run_agent(pooled, ("run_python", {"code": slow}))
        )
        assert first[0].content != second[0].content  # two agents at once, two boxes
        fresh, broke = await run_agent(
            pooled,
            ("run_python", {"code": "print(seen)"}),
            ("run_python", {"code": BOOT_ID + "while True: pass", "timeout": 2}),
        )
        assert "NameError" in fresh.content and "timed out: true" in broke.content
        broken_box = broke.content.split("stdout:\n")[1].splitlines()[0]
        later = await run_agent(pooled, *(("run_python", {"code": BOOT_ID}) for _ in range(3)))
        assert all("exit code: 0" in o.content and broken_box not in o.content for o in later)
    finally:
        await pool.close()


def test_default_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXLITE_DEFAULT_IMAGE", raising=False)
    spec = BoxLiteToolSpec()
    assert spec.sandbox.options is not None and spec.sandbox.options.image == "python:slim"
    names = [t.metadata.name for t in spec.to_tool_list()]
    assert names == ["run_python", "run_shell", "read_file", "write_file", "list_files"]
    assert all(t.async_fn is not None for t in spec.to_tool_list())
