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
