"""``BoxLiteToolSpec``: LlamaIndex tools that run code, commands and file operations in a BoxLite VM."""

from __future__ import annotations

import os
from typing import Any

from boxlite import run_sync
from boxlite.pool import LeasingPool
from boxlite.tools import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT, ActionResult, ToolResult, ToolSandbox
from llama_index.core.tools.tool_spec.base import BaseToolSpec

try:  # Image blocks in tool output arrived with llama-index-core's content blocks.
    from llama_index.core.base.llms.types import ImageBlock, TextBlock

    _HAS_IMAGE_BLOCKS = True
except ImportError:  # pragma: no cover - older llama-index-core: results stay text
    _HAS_IMAGE_BLOCKS = False

#: What a Python call returns: text, or a text block and one image block per image.
PythonOutput = str | list[Any]


def to_blocks(result: ToolResult | ActionResult) -> PythonOutput:
    """The result text, plus an ``ImageBlock`` per image where llama-index-core has them."""
    if not result.images or not _HAS_IMAGE_BLOCKS:
        return result.to_text()
    return [TextBlock(text=result.to_text())] + [
        ImageBlock(image=image.data, image_mimetype=image.mime_type) for image in result.images
    ]


class BoxLiteToolSpec(BaseToolSpec):
    """Python, shell and file tools on one BoxLite sandbox, sync and async (``async_fn``).

    ``BoxLiteToolSpec().to_tool_list()`` gives ``run_python``, ``run_shell``, ``read_file``,
    ``write_file`` and ``list_files``. The tools share one box (created on first use from
    ``image``, default ``BOXLITE_DEFAULT_IMAGE`` or ``python:slim``; ``persistent=True`` keeps
    Python variables between calls), or with ``pool=`` lease a box per call. Images the code
    makes come back as image blocks.
    """

    spec_functions = [  # noqa: RUF012 - LlamaIndex's declared class attribute
        ("run_python", "arun_python"),
        ("run_shell", "arun_shell"),
        ("read_file", "aread_file"),
        ("write_file", "awrite_file"),
        ("list_files", "alist_files"),
    ]

    def __init__(
        self,
        image: str | os.PathLike[str] | None = None,
        *,
        sandbox: ToolSandbox | None = None,
        pool: LeasingPool | None = None,
        persistent: bool = False,
        memory_mib: int = 1024,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.sandbox = ToolSandbox.given_or_new(
            sandbox,
            image,
            pool=pool,
            persistent=persistent,
            memory_mib=memory_mib,
            max_output_chars=max_output_chars,
            default_timeout=default_timeout,
        )

    def run_python(self, code: str, timeout: float | None = None) -> PythonOutput:
        """Run Python 3 code in an isolated sandbox VM; returns its exit code, stdout and stderr.
        Print what you want to see (a final expression's value is shown too). Matplotlib figures
        and PNG files saved to $BOXLITE_OUTPUT_DIR come back as images. Long output is
        truncated; past ``timeout`` seconds the code is killed.

        Args:
            code: Python 3 source code to run.
            timeout: Seconds the call may run before it is killed (optional).
        """
        return run_sync(self.arun_python(code, timeout))

    async def arun_python(self, code: str, timeout: float | None = None) -> PythonOutput:
        """Run Python 3 code in an isolated sandbox VM (see ``run_python``)."""
        return to_blocks(await self.sandbox.run_python(code, timeout))

    def run_shell(self, command: str, timeout: float | None = None) -> str:
        """Run a shell command (sh -c) in an isolated sandbox VM; returns its exit code, stdout
        and stderr. Past ``timeout`` seconds it is killed with everything it started.

        Args:
            command: The shell command to run.
            timeout: Seconds the call may run before it is killed (optional).
        """
        return run_sync(self.arun_shell(command, timeout))

    async def arun_shell(self, command: str, timeout: float | None = None) -> str:
        """Run a shell command in an isolated sandbox VM (see ``run_shell``)."""
        return (await self.sandbox.run_shell(command, timeout)).to_text()

    def read_file(self, path: str) -> str:
        """Read a text file from the sandbox VM.

        Args:
            path: Path of the file in the sandbox.
        """
        return run_sync(self.aread_file(path))

    async def aread_file(self, path: str) -> str:
        """Read a text file from the sandbox VM (see ``read_file``)."""
        return await self.sandbox.read_file_report(path)

    def write_file(self, path: str, content: str) -> str:
        """Write text to a file in the sandbox VM (creates parent directories, replaces the file).

        Args:
            path: Path of the file in the sandbox.
            content: The text to write.
        """
        return run_sync(self.awrite_file(path, content))

    async def awrite_file(self, path: str, content: str) -> str:
        """Write text to a file in the sandbox VM (see ``write_file``)."""
        return await self.sandbox.write_file_report(path, content)

    def list_files(self, path: str = ".") -> str:
        """List the entries of a directory in the sandbox VM.

        Args:
            path: Path of the directory in the sandbox (default: the working directory).
        """
        return run_sync(self.alist_files(path))

    async def alist_files(self, path: str = ".") -> str:
        """List a directory in the sandbox VM (see ``list_files``)."""
        return await self.sandbox.list_files_report(path)

    def close(self) -> None:
        """Stops the spec's box (if its sandbox created one; a pool is left to its owner)."""
        self.sandbox.close_sync()

    async def aclose(self) -> None:
        await self.sandbox.close()
