"""The browser tool set (boxlite.tools.BrowserToolSession under the LangChain, CrewAI and
LlamaIndex adapters) driven by each framework's own agent loop with a scripted model, against
one real BrowserBox shared by the module (a Chromium under TCG is heavy): the model navigates,
types, clicks, reads the page's text and takes a screenshot, and the page in the box's browser
(seen through a connection of the test's own) shows what the agent did."""

from __future__ import annotations

import base64
import os
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

import boxlite
import pytest
from boxlite.tools import ActionResult, BrowserToolSession
from boxlite_crewai import browser_tools
from boxlite_langchain import BoxLiteBrowserToolkit
from boxlite_llamaindex import BoxLiteBrowserToolSpec
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

#: A page that greets whoever is typed into its field when its button is clicked.
GREETER = (
    "<!doctype html><title>Greeter</title><h1 id=out>Nobody yet</h1>"
    "<input id=name><button onclick=\"document.getElementById('out').textContent="
    "'Hello, ' + document.getElementById('name').value\">Greet</button>"
)
PAGE = "data:text/html," + urllib.parse.quote(GREETER)
#: A page whose text (written by its script) is far over the read cap.
LONG_PAGE = "data:text/html," + urllib.parse.quote(
    "<title>Long</title><p id=p></p><p>THE END</p>"
    "<script>document.getElementById('p').textContent = 'lorem ipsum '.repeat(5000)</script>"
)
#: Seconds an action may take here: Chromium under TCG on a loaded 2-core host is slow.
ACTION_TIMEOUT = 180


@pytest.fixture(scope="module")
def browser_image() -> str:
    """The ``browser`` test image (Debian's Chromium), built on first use."""
    return str(build_images(["browser"])["browser"])


@pytest.fixture(scope="module")
async def browser_box(runtime: boxlite.Boxlite, browser_image: str) -> AsyncIterator[boxlite.BrowserBox]:
    async with boxlite.BrowserBox(
        boxlite.BrowserBoxOptions(memory=2048, cpu=2), runtime=runtime, image=browser_image
    ) as box:
        yield box


@pytest.fixture(scope="module")
async def session(browser_box: boxlite.BrowserBox) -> AsyncIterator[BrowserToolSession]:
    """One session (one Playwright connection, one page) that every framework's tools share."""
    async with BrowserToolSession(browser_box, default_timeout=ACTION_TIMEOUT) as shared:
        yield shared


async def greeting_in_the_box(box: boxlite.BrowserBox, name: str) -> bool:
    """Whether a page in the box's browser greets ``name`` (seen through the test's own CDP connection)."""
    browser = await box.connect()
    try:
        for context in browser.contexts:
            for page in context.pages:
                if await page.title() == "Greeter" and await page.inner_text("#out") == f"Hello, {name}":
                    return True
        return False
    finally:
        await browser.close()


def png_of(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


async def test_langchain_agent_browses_and_sees_the_page(
    browser_box: boxlite.BrowserBox, session: BrowserToolSession
) -> None:
    toolkit = BoxLiteBrowserToolkit(session=session)
    messages = await run_agent(
        toolkit.get_tools(),
        call("browser_navigate", url=PAGE),
        call("browser_type", selector="#name", text="Ada"),
        call("browser_click", text="Greet"),
        call("browser_read_text"),
        call("browser_screenshot"),
        call("browser_click", selector="#no-such-element", timeout=3),
    )
    assert await greeting_in_the_box(browser_box, "Ada")
    assert "title: Greeter" in text_of(messages[0])
    assert "typed 3 characters into '#name'" in text_of(messages[1])
    assert "Hello, Ada" in text_of(messages[3])
    shot = messages[4]
    images = [b for b in shot.content if isinstance(b, dict) and b.get("type") == "image"]
    assert len(images) == 1 and images[0]["mime_type"] == "image/png"
    width, height = png_of(base64.b64decode(images[0]["base64"]))
    assert width > 100 and height > 100 and f"{width}x{height} PNG" in text_of(shot)
    assert isinstance(shot.artifact, ActionResult) and shot.artifact.images[0].data.startswith(PNG_MAGIC)
    # A failed action is an answer the model reads, not a tool error.
    missing = messages[5]
    assert missing.status == "success" and text_of(missing).startswith("error:")
    assert "#no-such-element" in text_of(missing) or "Timeout" in text_of(missing)


async def test_page_text_is_capped(browser_box: boxlite.BrowserBox) -> None:
    # A second session on the same browser: a page of its own, its own cap.
    async with BrowserToolSession(browser_box, max_output_chars=1000, default_timeout=ACTION_TIMEOUT) as capped:
        assert (await capped.navigate(LONG_PAGE)).success
        read = await capped.read_text()
    assert "characters truncated (output limit 1000 characters)" in read.text
    assert read.text.rstrip().endswith("THE END") and len(read.text) < 1300


async def test_crewai_agent_browses(
    browser_box: boxlite.BrowserBox, session: BrowserToolSession, tmp_path: Path
) -> None:
    tools = browser_tools(session=session, images_dir=tmp_path)
    crew = make_crew(
        tools,
        action("browser_navigate", url=PAGE),
        action("browser_type", selector="#name", text="Grace"),
        action("browser_click", selector="button"),
        action("browser_read_text", selector="#out"),
        action("browser_screenshot"),
    )
    observed = results(await crew.kickoff_async())
    assert await greeting_in_the_box(browser_box, "Grace")
    assert len(observed) == 5, observed
    assert "title: Greeter" in observed[0] and "Hello, Grace" in observed[3]
    [saved] = list(tmp_path.iterdir())
    assert f"image saved on the host: {saved}" in observed[4]
    data_url = observed[4].split("data:image/png;base64,")[1].split()[0]
    assert base64.b64decode(data_url) == saved.read_bytes() and png_of(saved.read_bytes())[0] > 100


async def test_llamaindex_agent_browses(browser_box: boxlite.BrowserBox, session: BrowserToolSession) -> None:
    spec = BoxLiteBrowserToolSpec(session=session)
    outputs = await run_llamaindex_agent(
        spec,
        ("browser_navigate", {"url": PAGE}),
        ("browser_type", {"selector": "#name", "text": "Linus", "submit": False}),
        ("browser_click", {"text": "Greet"}),
        ("browser_read_text", {}),
        ("browser_screenshot", {}),
    )
    assert await greeting_in_the_box(browser_box, "Linus")
    assert "title: Greeter" in outputs[0].content and "Hello, Linus" in outputs[3].content
    images = [b for b in outputs[4].blocks if isinstance(b, ImageBlock)]
    assert len(images) == 1
    raw = images[0].image or b""
    assert png_of(raw if raw.startswith(PNG_MAGIC) else base64.b64decode(raw))[0] > 100


async def test_wrong_calls_are_answered_without_starting_a_box(runtime: boxlite.Boxlite) -> None:
    session = BrowserToolSession(runtime=runtime)
    for arguments in ({}, {"selector": "#a", "text": "A"}):
        result = await session.click(**arguments)
        assert (
            result.error and result.text == "error: give the element's selector or its text to click (one of the two)"
        )
    assert (
        await session.navigate("about:blank", timeout=0)
    ).text == "error: timeout=0 must be a positive number of seconds"
    assert not session.box_started
    await session.close()
