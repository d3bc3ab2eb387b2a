"""The computer-use tool (boxlite.tools.ComputerToolSession under the LangChain, CrewAI and
LlamaIndex adapters) driven by each framework's own agent loop with a scripted model, against
one real ComputerBox shared by the module (an X desktop under TCG is heavy): the model takes a
screenshot, clicks into a terminal, types a command and presses Return, and the command's
effect is read back from the box with ``exec``."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

import boxlite
import pytest
from boxlite._ports import free_port
from boxlite.tools import ActionResult, ComputerToolSession
from boxlite_crewai import BoxLiteComputerTool as CrewComputerTool
from boxlite_langchain import BoxLiteComputerTool
from boxlite_llamaindex import BoxLiteComputerToolSpec
from build_images import build_images
from llama_index.core.base.llms.types import ImageBlock
from test_crewai import action, make_crew, results
from test_langchain import call, run_agent, text_of
from test_llamaindex import run_agent as run_llamaindex_agent

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.filterwarnings("ignore:create_react_agent has been moved"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai"),
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


#: Under TCG on a busy 2-core machine the desktop takes far longer than the 60 s default.
READY_TIMEOUT = 300
DESKTOP_USER = "1000:1000"


@pytest.fixture(scope="module")
def desktop_image() -> str:
    return str(build_images(["desktop"])["desktop"])


@pytest.fixture(scope="module")
async def desktop(runtime: boxlite.Boxlite, desktop_image: str) -> AsyncIterator[boxlite.ComputerBox]:
    box = boxlite.ComputerBox(
        cpu=2, memory=1024, gui_http_port=free_port(), gui_https_port=free_port(), runtime=runtime, image=desktop_image
    )
    async with box:
        await box.wait_until_ready(timeout=READY_TIMEOUT)
        yield box


async def open_terminal(box: boxlite.ComputerBox, title: str) -> tuple[int, int]:
    """Opens a terminal (an xterm running sh, as the desktop's user); returns a point inside it."""
    await box.box.exec(
        "xterm", ["-T", title, "-geometry", "60x8+40+40", "-e", "sh"], user=DESKTOP_USER, working_dir="/home/user"
    )
    # Polled, not `search --sync`: a window mapped while xdotool walks the tree fails it (BadWindow).
    for _ in range(240):
        found = await box.exec("xdotool", "search", "--onlyvisible", "--name", f"^{title}$")
        if found.exit_code == 0 and found.stdout.strip():
            geometry = await box.exec("xdotool", "getwindowgeometry", "--shell", found.stdout.split()[0])
            if geometry.exit_code == 0:
                fields = dict(line.split("=", 1) for line in geometry.stdout.split())
                await asyncio.sleep(1)  # the shell in it starts
                return int(fields["X"]) + int(fields["WIDTH"]) // 2, int(fields["Y"]) + int(fields["HEIGHT"]) // 2
        await asyncio.sleep(0.5)
    raise AssertionError(f"the terminal {title!r} did not open")


async def file_in_box(box: boxlite.ComputerBox, path: str) -> str:
    for _ in range(40):  # the shell in the terminal runs the command a moment after Return
        result = await box.exec("cat", path)
        if result.exit_code == 0:
            return str(result.stdout)
        await asyncio.sleep(0.5)
    return ""


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


async def test_langchain_agent_uses_the_desktop(desktop: boxlite.ComputerBox) -> None:
    x, y = await open_terminal(desktop, "lc-term")
    width, height = await desktop.get_screen_size()
    tool = BoxLiteComputerTool(box=desktop)
    messages = await run_agent(
        [tool],
        call("computer", action="screenshot"),
        call("computer", action="left_click", coordinate=[x, y]),
        call("computer", action="type", text="echo agent-was-here > /tmp/lc.txt"),
        call("computer", action="key", text="Return"),
        call("computer", action="cursor_position"),
        call("computer", action="mouse_move", coordinate=[width + 5, 0]),
        call("computer", action="key"),
    )
    assert await file_in_box(desktop, "/tmp/lc.txt") == "agent-was-here\n"
    shot = messages[0]
    images = [b for b in shot.content if isinstance(b, dict) and b.get("type") == "image"]
    assert len(images) == 1 and images[0]["mime_type"] == "image/png"
    assert png_size(base64.b64decode(images[0]["base64"])) == (width, height)
    assert isinstance(shot.artifact, ActionResult)
    # Actions that change the screen come back with a screenshot taken after them.
    assert "left click at" in text_of(messages[1]) and len(messages[1].artifact.images) == 1
    assert "pressed Return" in text_of(messages[3])
    assert text_of(messages[4]) == f"X={x},Y={y}"
    # Calls the model got wrong are answers it reads, not tool errors.
    assert messages[5].status == "success" and "off the screen" in text_of(messages[5])
    assert text_of(messages[6]) == "error: the key action needs text"


async def test_session_without_screenshots_after_actions(desktop: boxlite.ComputerBox) -> None:
    session = ComputerToolSession(desktop, screenshot_after_action=False)
    moved = await session.act("mouse_move", coordinate=[10, 20])
    assert moved.success and not moved.images and moved.text == "moved the mouse to (10, 20)"
    assert (await session.act("cursor_position")).text == "X=10,Y=20"
    dragged = await session.act("left_click_drag", start_coordinate=[10, 20], coordinate=[30, 40])
    assert dragged.text == "dragged from (10, 20) to (30, 40)"
    scrolled = await session.act("scroll", scroll_direction="down")
    assert scrolled.text == "scrolled down by 3 at (30, 40)"
    bad_key = await session.act("key", text=" ")  # ComputerBox refuses it: the model reads why
    assert bad_key.error and bad_key.text.startswith("error: the key action failed: key() needs a key name")
    await session.close()  # a given box is left running
    assert (await desktop.cursor_position()) == (30, 40)


async def test_sync_call_inside_a_running_loop(desktop: boxlite.ComputerBox) -> None:
    asyncio.get_running_loop()
    # invoke() (not ainvoke) runs the tool's sync _run from this loop's thread.
    tool = BoxLiteComputerTool(box=desktop)
    await desktop.mouse_move(7, 9)
    assert tool.invoke({"action": "cursor_position"}) == "X=7,Y=9"
    content = tool.invoke({"action": "screenshot"})
    assert isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "image" for b in content)


async def test_crewai_agent_uses_the_desktop(desktop: boxlite.ComputerBox, tmp_path: Path) -> None:
    x, y = await open_terminal(desktop, "crew-term")
    tool = CrewComputerTool(box=desktop, images_dir=tmp_path)
    crew = make_crew(
        [tool],
        action("computer", action="left_click", coordinate=[x, y]),
        action("computer", action="type", text="echo crew-was-here > /tmp/crew.txt"),
        action("computer", action="key", text="Return"),
    )
    observed = results(await crew.kickoff_async())
    assert await file_in_box(desktop, "/tmp/crew.txt") == "crew-was-here\n"
    assert len(observed) == 3 and "pressed Return" in observed[2]
    assert len(list(tmp_path.iterdir())) == 3  # one screenshot after each action
    assert "data:image/png;base64," in observed[0]


async def test_llamaindex_agent_uses_the_desktop(desktop: boxlite.ComputerBox) -> None:
    x, y = await open_terminal(desktop, "li-term")
    spec = BoxLiteComputerToolSpec(desktop)
    outputs = await run_llamaindex_agent(
        spec,
        ("computer", {"action": "screenshot"}),
        ("computer", {"action": "left_click", "coordinate": [x, y]}),
        ("computer", {"action": "type", "text": "echo llama-was-here > /tmp/li.txt"}),
        ("computer", {"action": "key", "text": "Return"}),
    )
    assert await file_in_box(desktop, "/tmp/li.txt") == "llama-was-here\n"
    images = [b for b in outputs[0].blocks if isinstance(b, ImageBlock)]
    assert len(images) == 1
    raw = images[0].image or b""
    width, height = await desktop.get_screen_size()
    assert png_size(raw if raw.startswith(PNG_MAGIC) else base64.b64decode(raw)) == (width, height)


async def test_wrong_calls_are_answered_without_starting_a_box(runtime: boxlite.Boxlite) -> None:
    session = ComputerToolSession(runtime=runtime)
    wrong = {
        ("type", None): "error: the type action needs text",
        ("key", ""): "error: the key action needs a non-empty text",
        ("left_click", "x"): "error: the left_click action takes no text",
        ("screenshot", "x"): "error: the screenshot action takes no text",
    }
    for (name, text), expected in wrong.items():
        result = await session.act(name, text=text)
        assert result.error and result.text == expected
    assert (await session.act("scroll", coordinate=[1, 2])).text == "error: the scroll action needs scroll_direction"
    assert "coordinate" in (await session.act("mouse_move", coordinate=[1])).text
    assert "action" in (await session.act("fly")).text
    assert "timeout=-1" in (await session.act("screenshot", timeout=-1)).text
    assert not session.box_started
    await session.close()
