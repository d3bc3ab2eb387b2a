"""boxlite-langchain driven by LangGraph's own agent loop (``create_react_agent``, whose
``ToolNode`` calls our tools) with a scripted chat model that emits tool calls, against real boxes."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import boxlite
import pytest
from boxlite.tools import ToolResult, create_tool_pool
from boxlite_langchain import BoxLitePythonTool, BoxLiteShellTool, BoxLiteToolkit
from conftest import SPAWN_AND_SPIN
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import ToolException
from langgraph.prebuilt import create_react_agent

# create_react_agent is deprecated for langchain.agents.create_agent (the `langchain` package), but it
# is the loop of the langgraph we depend on; its ToolNode is the same.
pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BOOT_ID = "print(open('/proc/sys/kernel/random/boot_id').read().strip(), flush=True)\n"

#: One step of a script: the messages so far -> the model's next message.
Step = Callable[[list[BaseMessage]], AIMessage]


def call(tool: str, **args: Any) -> Step:
    """A step that asks for one tool call."""
    return lambda _: AIMessage(
        content="", tool_calls=[{"name": tool, "args": args, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "tool_call"}]
    )


def finish(_: list[BaseMessage]) -> AIMessage:
    return AIMessage(content="done")


class ScriptedChatModel(BaseChatModel):
    """A chat model that plays a fixed script of tool calls (no model service is reachable)."""

    steps: list[Step]
    position: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        step = self.steps[self.position]
        self.position += 1
        return ChatResult(generations=[ChatGeneration(message=step(messages))])


def tool_messages(state: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def text_of(message: ToolMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(b if isinstance(b, str) else b.get("text", "") for b in message.content)


async def run_agent(tools: list[Any], *steps: Step) -> list[ToolMessage]:
    agent = create_react_agent(ScriptedChatModel(steps=[*steps, finish]), tools)
    state = await agent.ainvoke({"messages": [("user", "go")]})
    return tool_messages(state)


@pytest.fixture(scope="module")
async def toolkit(runtime: boxlite.Boxlite, plot_image: str) -> AsyncIterator[BoxLiteToolkit]:
    async with BoxLiteToolkit(image=plot_image, memory_mib=512) as kit:
        yield kit


@pytest.fixture(scope="module")
async def session_toolkit(runtime: boxlite.Boxlite, plot_image: str) -> AsyncIterator[BoxLiteToolkit]:
    async with BoxLiteToolkit(image=plot_image, memory_mib=512, persistent=True) as kit:
        yield kit


async def test_print_6_times_7(toolkit: BoxLiteToolkit) -> None:
    [message] = await run_agent(toolkit.get_tools(), call("boxlite_python", code="print(6*7)"))
    assert message.status == "success"
    assert "exit code: 0\nstdout:\n42\n" in text_of(message)
    assert isinstance(message.artifact, ToolResult) and message.artifact.stdout == "42\n"


async def test_default_tool_is_named_and_shaped_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXLITE_DEFAULT_IMAGE", raising=False)
    tool = BoxLitePythonTool()
    assert tool.name == "boxlite_python" and set(tool.args) == {"code", "timeout"}
    assert tool.response_format == "content_and_artifact"
    assert tool.sandbox.options is not None and tool.sandbox.options.image == "python:slim"


async def test_persistent_session_keeps_variables(session_toolkit: BoxLiteToolkit) -> None:
    messages = await run_agent(
        session_toolkit.get_tools(),
        call("boxlite_python", code="answer = 41"),
        call("boxlite_python", code="print(answer + 1)"),
    )
    assert "stdout:\n42\n" in text_of(messages[1])


async def test_timeout_kills_the_loop_and_leaves_nothing_behind(toolkit: BoxLiteToolkit) -> None:
    messages = await run_agent(
        toolkit.get_tools(),
        call("boxlite_python", code=SPAWN_AND_SPIN.format(n=999), timeout=5),
        call("boxlite_shell", command="cat /proc/[0-9]*/cmdline | tr '\\0' ' '"),
    )
    assert "timed out: true" in text_of(messages[0]) and "exit code: 124" in text_of(messages[0])
    assert "stdout:\nspawned\n" in text_of(messages[0]), "the child ran before the timeout"
    assert "sleep 999" not in messages[1].artifact.stdout


async def test_matplotlib_plot_comes_back_as_an_image_block(toolkit: BoxLiteToolkit) -> None:
    code = "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [3, 5])\nprint('ok')"
    [message] = await run_agent(toolkit.get_tools(), call("boxlite_python", code=code, timeout=120))
    assert isinstance(message.content, list), message.content
    images = [b for b in message.content if isinstance(b, dict) and b.get("type") == "image"]
    assert len(images) == 1 and images[0]["mime_type"] == "image/png"
    assert base64.b64decode(images[0]["base64"]).startswith(PNG_MAGIC)
    assert "stdout:\nok" in text_of(message)


async def test_huge_output_is_truncated(toolkit: BoxLiteToolkit) -> None:
    [message] = await run_agent(toolkit.get_tools(), call("boxlite_python", code="print('x' * 1_000_000)"))
    assert "characters truncated (output limit 10000 characters)" in text_of(message)
    assert len(text_of(message)) < 11_000


async def test_files_round_trip(toolkit: BoxLiteToolkit) -> None:
    messages = await run_agent(
        toolkit.get_tools(),
        call("boxlite_write_file", path="/work/notes.txt", content="hello agent\n"),
        call("boxlite_read_file", path="/work/notes.txt"),
        call("boxlite_list_files", path="/work"),
        call("boxlite_read_file", path="/work/missing.txt"),
    )
    assert [m.content for m in messages[:2]] == ["wrote 12 bytes to /work/notes.txt", "hello agent\n"]
    assert "notes.txt  (12 bytes)" in text_of(messages[2])
    assert text_of(messages[3]).startswith("error:") and "missing.txt" in text_of(messages[3])


async def test_sync_agent_inside_a_running_loop(toolkit: BoxLiteToolkit) -> None:
    asyncio.get_running_loop()
    # invoke() (not ainvoke) makes the ToolNode call the tools' sync _run from this loop's thread.
    agent = create_react_agent(
        ScriptedChatModel(steps=[call("boxlite_python", code="print(6*7)"), finish]), toolkit.get_tools()
    )
    [message] = tool_messages(agent.invoke({"messages": [("user", "go")]}))
    assert "stdout:\n42\n" in text_of(message)


async def test_infrastructure_failure_is_a_tool_exception(busybox: str) -> None:
    tool = BoxLiteShellTool(image=busybox, memory_mib=256)
    python = BoxLitePythonTool(sandbox=tool.sandbox)
    try:
        assert (await tool.ainvoke({"command": "echo fine"})).startswith("exit code: 0")
        with pytest.raises(ToolException, match="no python3"):
            await python.ainvoke({"code": "print(1)"})
    finally:
        await tool.aclose()


async def test_pool_agents_get_their_own_boxes_and_no_broken_one(runtime: boxlite.Boxlite, plot_image: str) -> None:
    pool = create_tool_pool(plot_image, runtime=runtime, memory_mib=512, min_idle=2, max_size=2, max_uses=5)
    toolkit = BoxLiteToolkit(pool=pool)
    try:
        await pool.start()
        slow = BOOT_ID + "import time; time.sleep(1)\nseen = 1"
        first, second = await asyncio.gather(
            run_agent(toolkit.get_tools(), call("boxlite_python", code=slow)),
            run_agent(toolkit.get_tools(), call("boxlite_python", code=slow)),
        )
        boxes = {first[0].artifact.stdout, second[0].artifact.stdout}
        assert len(boxes) == 2  # two agents at once, two boxes
        # A fresh lease: the variable of an earlier call is not there.
        [fresh] = await run_agent(toolkit.get_tools(), call("boxlite_python", code="print(seen)"))
        assert "NameError" in text_of(fresh)
        # A call that times out breaks its box: no later lease gets it.
        [broke] = await run_agent(
            toolkit.get_tools(), call("boxlite_python", code=BOOT_ID + "while True: pass", timeout=2)
        )
        assert "timed out: true" in text_of(broke)
        later = await asyncio.gather(
            *(run_agent(toolkit.get_tools(), call("boxlite_python", code=BOOT_ID)) for _ in range(3))
        )
        assert all(m[0].artifact.success and m[0].artifact.stdout != broke.artifact.stdout for m in later)
    finally:
        await pool.close()
