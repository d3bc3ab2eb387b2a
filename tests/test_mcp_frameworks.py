"""``boxlite mcp`` (stdio) consumed by each framework's own MCP client inside that framework's
own agent loop, with the scripted fake models of the adapter tests, booting real boxes:

* LangChain: ``langchain-mcp-adapters`` loads the server's tools into a LangGraph agent;
* CrewAI: an ``Agent(mcps=[MCPServerStdio(...)])`` (CrewAI's native MCP support);
* LlamaIndex: ``llama-index-tools-mcp`` (``BasicMCPClient`` + ``McpToolSpec``) in a ``FunctionAgent``.

CrewAI's and LlamaIndex's clients start the server anew for every call (and for listing the
tools), so each of their tests makes one call; LangChain's keeps one session for the agent.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from boxlite.tools import descriptions
from langchain_core.messages import ToolMessage
from test_crewai import ScriptedLLM, finish, results
from test_langchain import call, run_agent, text_of
from test_llamaindex import scripted_llm
from test_mcp import server_env

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

from crewai import Agent, Crew, Task
from crewai.mcp import MCPServerStdio
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.tools.mcp import BasicMCPClient, McpToolSpec
from mcp import types

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai", "ignore:create_react_agent has been moved")

PNG = b"\x89PNG\r\n\x1a\n"
PYTHON = descriptions.PYTHON_TOOL_NAME
#: Seconds a client waits for one call: a server start and a box boot on a busy 2-core host.
CALL_TIMEOUT = 400


@pytest.fixture(scope="module")
def mcp_home(home: Path) -> Path:
    """The session's home: the servers find the image's base disk already built (by the other
    agent-tool tests) and the accelerator already probed, instead of paying both (minutes under
    TCG on a busy host) in a home of their own. Each server stops its boxes when its client goes
    (``test_mcp.py`` checks that, in a home of its own)."""
    return home


def stdio_server(image: str, home: Path) -> tuple[str, list[str], dict[str, str]]:
    """``boxlite mcp`` as a stdio subprocess: command, arguments, environment. No box is booted
    ahead of a call (clients that start a server per call would boot one for nothing)."""
    args = ["-m", "boxlite.mcp", "--image", image, "--memory", "512", "--pool-size", "1", "--warm", "0"]
    return sys.executable, args, server_env(home)


async def test_langchain_mcp_adapters_in_a_langgraph_agent(plot_image: str, mcp_home: Path) -> None:
    command, args, env = stdio_server(plot_image, mcp_home)
    client = MultiServerMCPClient(
        {
            "boxlite": {
                "transport": "stdio",
                "command": command,
                "args": args,
                "env": env,
                "session_kwargs": {"read_timeout_seconds": timedelta(seconds=CALL_TIMEOUT)},
            }
        }
    )
    async with client.session("boxlite") as session:
        tools = await load_mcp_tools(session)
        assert PYTHON in {tool.name for tool in tools}
        shell = next(tool for tool in tools if tool.name == descriptions.SHELL_TOOL_NAME)
        assert shell.description == descriptions.SHELL_TOOL_DESCRIPTION

        messages = await run_agent(
            tools,
            call(PYTHON, code="print(6 * 7)"),
            call(PYTHON, code="x = 41", session="agent"),
            call(PYTHON, code="print(x + 1)", session="agent"),
            call(PYTHON, code="import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"),
            call(PYTHON, code=5),
        )
    assert len(messages) == 5, messages
    assert all(isinstance(m, ToolMessage) for m in messages)
    assert "exit code: 0" in text_of(messages[0]) and "42" in text_of(messages[0]), messages[0]
    assert "42" in text_of(messages[2]), messages[2]
    # The plot reaches the model as an image content block.
    plot = messages[3]
    assert isinstance(plot.content, list), plot
    images = [b for b in plot.content if isinstance(b, dict) and b.get("type") == "image"]
    assert len(images) == 1 and base64.b64decode(images[0]["base64"]).startswith(PNG), plot.content
    # A bad argument is a tool error the model reads; the loop goes on.
    assert messages[4].status == "error" and "code" in text_of(messages[4]), messages[4]


def test_crewai_native_mcp_in_a_crew(plot_image: str, mcp_home: Path) -> None:
    command, args, env = stdio_server(plot_image, mcp_home)
    llm = ScriptedLLM(model="scripted")
    agent = Agent(
        role="coder",
        goal="run code",
        backstory="a careful engineer",
        llm=llm,
        mcps=[MCPServerStdio(command=command, args=args, env=env)],
        max_iter=5,
    )
    # CrewAI prefixes each MCP tool with a name made from the server's command line.
    names = {tool.original_tool_name: tool.name for tool in agent.get_mcp_tools(agent.mcps)}  # type: ignore[attr-defined]
    assert PYTHON in names, names
    tool_name = names[PYTHON]

    def action(_: list[dict[str, object]]) -> str:
        return f"Thought: I will run it.\nAction: {tool_name}\nAction Input: {json.dumps({'code': 'print(6 * 7)'})}"

    llm.steps = [action, finish]
    task = Task(description="Run the code you are asked to run.", expected_output="the tool results", agent=agent)
    output = Crew(agents=[agent], tasks=[task]).kickoff()
    [observation] = results(output)
    assert "exit code: 0" in observation and "42" in observation, observation


async def test_llamaindex_mcp_tool_spec_in_a_function_agent(plot_image: str, mcp_home: Path) -> None:
    command, args, env = stdio_server(plot_image, mcp_home)
    client = BasicMCPClient(command, args=args, env=env, timeout=CALL_TIMEOUT)
    spec = McpToolSpec(client=client, allowed_tools=[PYTHON])
    tools = await spec.to_tool_list_async()
    assert [tool.metadata.name for tool in tools] == [PYTHON]

    agent = FunctionAgent(tools=tools, llm=scripted_llm((PYTHON, {"code": "print(6 * 7)"})), timeout=600)
    handler = agent.run(user_msg="go")
    outputs = [ev.tool_output async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)]
    await handler
    [output] = outputs
    result = output.raw_output
    assert isinstance(result, types.CallToolResult) and not result.isError, result
    block = result.content[0]
    assert isinstance(block, types.TextContent) and "exit code: 0" in block.text and "42" in block.text, block
