"""boxlite-crewai driven by CrewAI's own agent loop (Agent, Task, Crew) with a scripted custom
LLM that writes ReAct actions (no model service is reachable), against real boxes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# CrewAI phones home (telemetry, tracing) unless told not to; nothing outside is reachable here.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

import boxlite
import pytest
from boxlite.tools import ToolSandbox, create_tool_pool
from boxlite_crewai import BoxLitePythonTool, boxlite_tools
from conftest import SPAWN_AND_SPIN
from crewai import Agent, BaseLLM, Crew, Task

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BOOT_ID = "print(open('/proc/sys/kernel/random/boot_id').read().strip(), flush=True)\n"

Step = Callable[[list[dict[str, Any]]], str]


def action(tool: str, **args: Any) -> Step:
    return lambda _: f"Thought: I will use a tool.\nAction: {tool}\nAction Input: {json.dumps(args)}"


def observations(messages: list[dict[str, Any]]) -> list[str]:
    """The tool results CrewAI showed the model so far. Each assistant message holds one step
    (Thought / Action / Action Input / Observation), or after a retry the whole scratchpad so
    far; CrewAI may append its tool reminder to an observation."""
    per_message = []
    for message in messages:
        if message.get("role") != "assistant":
            continue
        found = []
        for chunk in str(message.get("content", "")).split("\nObservation: ")[1:]:
            if chunk.startswith("the result of the action"):
                continue  # the format instructions inside CrewAI's tool reminder
            found.append(chunk.split("\nThought: ")[0].split("\n\n\nYou ONLY have access")[0].strip())
        if found:
            per_message.append(found)
    if per_message and len(per_message[-1]) >= len(per_message):
        return per_message[-1]  # an accumulated scratchpad
    return [found[-1] for found in per_message]


def finish(messages: list[dict[str, Any]]) -> str:
    # The final answer carries every observation (base64, so that CrewAI's parser leaves it
    # alone), so the test can read what the tools returned.
    encoded = base64.b64encode(json.dumps(observations(messages)).encode()).decode()
    return "Thought: I now know the final answer\nFinal Answer: " + encoded


class ScriptedLLM(BaseLLM):
    """A custom CrewAI LLM that plays a script of ReAct steps."""

    steps: list[Any] = []  # noqa: RUF012 - a pydantic field (BaseLLM is a model)
    position: int = 0

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
        **kwargs: Any,
    ) -> str:
        step = self.steps[self.position]
        self.position += 1
        return str(step(messages if isinstance(messages, list) else [{"role": "user", "content": messages}]))

    async def acall(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
        **kwargs: Any,
    ) -> str:
        return self.call(messages)

    def supports_function_calling(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        # Large, so CrewAI does not summarise the conversation (and lose the observations).
        return 1_000_000


def make_crew(tools: list[Any], *steps: Step) -> Crew:
    llm = ScriptedLLM(model="scripted", steps=[*steps, finish])
    agent = Agent(role="coder", goal="run code", backstory="a careful engineer", llm=llm, tools=tools, max_iter=10)
    task = Task(description="Run the code you are asked to run.", expected_output="the tool results", agent=agent)
    return Crew(agents=[agent], tasks=[task])


def results(output: Any) -> list[str]:
    try:
        return list(json.loads(base64.b64decode(output.raw)))
    except ValueError:
        raise AssertionError(f"the crew's final answer is not the scripted one: {output.raw[:3000]!r}") from None


@pytest.fixture(scope="module")
def crew_tools(plot_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    tools = boxlite_tools(image=plot_image, memory_mib=512, images_dir=tmp_path_factory.mktemp("crew-images"))
    yield tools
    tools[0].close()


@pytest.fixture(scope="module")
def session_tools(plot_image: str) -> Iterator[list[Any]]:
    tools = boxlite_tools(image=plot_image, memory_mib=512, persistent=True)
    yield tools
    tools[0].close()


def test_print_6_times_7_from_a_sync_crew(crew_tools: list[Any]) -> None:
    [observed] = results(make_crew(crew_tools, action("boxlite_python", code="print(6*7)")).kickoff())
    assert "exit code: 0\nstdout:\n42\n" in observed


async def test_sync_tool_call_inside_a_running_loop(crew_tools: list[Any]) -> None:
    # CrewAI itself refuses a sync kickoff() inside a running loop, but its sync tool path
    # (BaseTool.run, as kickoff_async's worker thread and custom flows use it) may run there.
    asyncio.get_running_loop()
    assert "stdout:\n42\n" in crew_tools[0].run(code="print(6*7)")


async def test_native_async_crew(crew_tools: list[Any]) -> None:
    output = await make_crew(crew_tools, action("boxlite_python", code="print(6*7)")).akickoff()
    assert "stdout:\n42\n" in results(output)[0]


async def test_persistent_session_shared_across_a_crew(session_tools: list[Any]) -> None:
    crew = make_crew(
        session_tools, action("boxlite_python", code="answer = 41"), action("boxlite_python", code="print(answer + 1)")
    )
    assert "stdout:\n42\n" in results(await crew.kickoff_async())[1]


async def test_timeout_kills_everything(crew_tools: list[Any]) -> None:
    crew = make_crew(
        crew_tools,
        action("boxlite_python", code=SPAWN_AND_SPIN.format(n=777), timeout=5),
        action("boxlite_shell", command="cat /proc/[0-9]*/cmdline | tr '\\0' ' '"),
    )
    timed_out, processes = results(await crew.kickoff_async())
    assert "timed out: true" in timed_out and "exit code: 124" in timed_out
    assert "stdout:\nspawned\n" in timed_out, "the child ran before the timeout"
    assert "sleep 777" not in processes


async def test_plot_is_saved_to_a_file_with_a_summary(crew_tools: list[Any]) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nprint('drawn')"
    [observed] = results(await make_crew(crew_tools, action("boxlite_python", code=code, timeout=120)).kickoff_async())
    assert "images: 1 (/output/figure-" in observed
    [saved] = re.findall(r"images saved on the host: (\S+\.png)", observed)
    assert Path(saved).read_bytes().startswith(PNG_MAGIC)
    assert Path(saved).parent == crew_tools[0].images_dir


async def test_huge_output_is_truncated_and_files_work(crew_tools: list[Any]) -> None:
    crew = make_crew(
        crew_tools,
        action("boxlite_python", code="print('y' * 500_000)"),
        action("boxlite_write_file", path="/data/a.txt", content="crew data"),
        action("boxlite_read_file", path="/data/a.txt"),
    )
    truncated, written, read = results(await crew.kickoff_async())
    assert "characters truncated (output limit 10000 characters)" in truncated
    assert written == "wrote 9 bytes to /data/a.txt" and read == "crew data"


async def test_pool_two_crews_at_once_and_no_broken_box(runtime: boxlite.Boxlite, plot_image: str) -> None:
    pool = create_tool_pool(plot_image, runtime=runtime, memory_mib=512, min_idle=2, max_size=2, max_uses=5)
    sandbox = ToolSandbox(pool=pool)
    try:
        await pool.start()
        slow = BOOT_ID + "import time; time.sleep(1)\nseen = 1"
        outputs = await asyncio.gather(
            *(make_crew(boxlite_tools(sandbox), action("boxlite_python", code=slow)).kickoff_async() for _ in range(2))
        )
        assert len({results(o)[0] for o in outputs}) == 2  # two crews at once, two boxes
        fresh, broke = results(
            await make_crew(
                boxlite_tools(sandbox),
                action("boxlite_python", code="print(seen)"),
                action("boxlite_python", code=BOOT_ID + "while True: pass", timeout=2),
            ).kickoff_async()
        )
        assert "NameError" in fresh and "timed out: true" in broke
        broken_box = broke.split("stdout:\n")[1].splitlines()[0]
        # (distinct code each time: CrewAI refuses to repeat an identical tool call)
        later = results(
            await make_crew(
                boxlite_tools(sandbox), *(action("boxlite_python", code=BOOT_ID + f"# call {i}") for i in range(3))
            ).kickoff_async()
        )
        assert len(later) == 3 and all("exit code: 0" in r and broken_box not in r for r in later), (broken_box, later)
    finally:
        await pool.close()


def test_tool_schema_and_default_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXLITE_DEFAULT_IMAGE", raising=False)
    tool = BoxLitePythonTool()
    assert tool.name == "boxlite_python"
    assert set(tool.args_schema.model_fields) == {"code", "timeout"}
    assert tool.sandbox.options is not None and tool.sandbox.options.image == "python:slim"
