"""Tool names, descriptions and argument descriptions: one wording for every framework."""

from __future__ import annotations

PYTHON_TOOL_NAME = "boxlite_python"
SHELL_TOOL_NAME = "boxlite_shell"
READ_FILE_TOOL_NAME = "boxlite_read_file"
WRITE_FILE_TOOL_NAME = "boxlite_write_file"
LIST_FILES_TOOL_NAME = "boxlite_list_files"


def python_tool_description(persistent: bool) -> str:
    """What the model is told about the Python tool."""
    state = (
        "Variables, functions and imports persist between calls (one Python session)."
        if persistent
        else "Each call starts with a fresh interpreter: define everything you use in the same call; files persist."
    )
    return (
        "Run Python 3 code in an isolated sandbox VM and return its exit code, stdout and stderr. "
        "Print what you want to see; the value of a final expression is shown too. "
        f"{state} Matplotlib figures (and PNG files saved to $BOXLITE_OUTPUT_DIR) are returned as images. "
        "Long output is truncated; a call running past its timeout is killed."
    )


SHELL_TOOL_DESCRIPTION = (
    "Run a shell command (sh -c) in an isolated sandbox VM and return its exit code, stdout and stderr. "
    "Files persist between calls; a command running past its timeout is killed with everything it started."
)
READ_FILE_TOOL_DESCRIPTION = "Read a text file from the sandbox VM."
WRITE_FILE_TOOL_DESCRIPTION = "Write text to a file in the sandbox VM (creates parent directories, replaces the file)."
LIST_FILES_TOOL_DESCRIPTION = "List the entries of a directory in the sandbox VM."

CODE_ARG = "Python 3 source code to run."
COMMAND_ARG = "The shell command to run with sh -c."
TIMEOUT_ARG = "Seconds the call may run before it is killed (optional)."
PATH_ARG = "Path of the file in the sandbox (absolute, or relative to the working directory)."
DIR_ARG = "Path of the directory in the sandbox (default: the working directory)."
CONTENT_ARG = "The text to write."

# -- the browser tool set (a BrowserBox driven through Playwright over CDP) -----------------

BROWSER_NAVIGATE_TOOL_NAME = "browser_navigate"
BROWSER_CLICK_TOOL_NAME = "browser_click"
BROWSER_TYPE_TOOL_NAME = "browser_type"
BROWSER_READ_TEXT_TOOL_NAME = "browser_read_text"
BROWSER_SCREENSHOT_TOOL_NAME = "browser_screenshot"

BROWSER_NAVIGATE_TOOL_DESCRIPTION = (
    "Open a URL in the sandboxed web browser (a Chromium in an isolated VM) and wait for the page to load. "
    "The page stays open for the browser's other tools; returns the final URL, HTTP status and title."
)
BROWSER_CLICK_TOOL_DESCRIPTION = (
    "Click an element of the open page, found by a CSS selector or by its visible text (give one of the two)."
)
BROWSER_TYPE_TOOL_DESCRIPTION = (
    "Type text into the input field a CSS selector finds on the open page (its old value is replaced); "
    "submit=true presses Enter afterwards."
)
BROWSER_READ_TEXT_TOOL_DESCRIPTION = (
    "Read the visible text of the open page (or of the element a CSS selector finds). Long text is truncated."
)
BROWSER_SCREENSHOT_TOOL_DESCRIPTION = "Take a screenshot of the open page; it is returned as a PNG image."

URL_ARG = "The URL to open (http://, https:// or file://)."
SELECTOR_ARG = "A CSS selector of the element (e.g. '#submit', 'input[name=q]')."
CLICK_TEXT_ARG = "The visible text of the element to click (instead of a selector)."
TYPE_TEXT_ARG = "The text to type."
SUBMIT_ARG = "Press Enter after typing (default false)."
READ_SELECTOR_ARG = "A CSS selector of the element to read (default: the whole page)."
FULL_PAGE_ARG = "Capture the whole scrollable page instead of the visible part (default false)."
BROWSER_TIMEOUT_ARG = "Seconds the action may take before it fails (optional)."

# -- the computer-use tool (a ComputerBox: an X desktop driven with xdotool) ----------------

COMPUTER_TOOL_NAME = "computer"


def computer_tool_description(width: int | None = None, height: int | None = None) -> str:
    """What the model is told about the computer-use tool (the screen size when known)."""
    size = f" The screen is {width}x{height} pixels." if width and height else ""
    return (
        "Use a mouse and keyboard to interact with a Linux desktop in an isolated VM, and take screenshots. "
        "Actions: screenshot, left_click, right_click, middle_click, double_click, triple_click, mouse_move, "
        "left_click_drag, type, key, scroll, cursor_position. Coordinates are [x, y] pixels from the top-left "
        "corner; clicks and scroll act at `coordinate` (default: where the mouse is); left_click_drag drags from "
        "`start_coordinate` (default: where the mouse is) to `coordinate`; `key` takes xdotool key names such as "
        "'Return', 'ctrl+s' or 'alt+Tab'. Actions that change the screen return a screenshot after them."
        f"{size}"
    )


ACTION_ARG = "The action to perform."
COORDINATE_ARG = "[x, y]: the pixel to act at (mouse_move, left_click_drag's end; optional for clicks and scroll)."
START_COORDINATE_ARG = "[x, y]: where left_click_drag starts (default: where the mouse is)."
COMPUTER_TEXT_ARG = "The text to type (type) or the key combination to press (key, e.g. 'ctrl+s', 'Return')."
SCROLL_DIRECTION_ARG = "Which way to scroll (scroll only)."
SCROLL_AMOUNT_ARG = "How many wheel clicks to scroll (scroll only; default 3)."
