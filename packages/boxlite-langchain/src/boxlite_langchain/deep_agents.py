"""A Deep Agents sandbox backend on a BoxLite box (``pip install 'boxlite-langchain[deepagents]'``).

    from deepagents import create_deep_agent
    from boxlite_langchain.deep_agents import BoxLiteSandbox

    agent = create_deep_agent(model=model, backend=BoxLiteSandbox())

Deep Agents' file tools (``ls``, ``read_file``, ``write_file``, ``edit_file``, ``glob``,
``grep``) and its ``execute`` tool then all run in one VM.
"""

from __future__ import annotations

import os
import uuid

from boxlite import run_sync
from boxlite.tools import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT, ToolResult, ToolSandbox

try:
    from deepagents.backends.protocol import ExecuteResponse, FileDownloadResponse, FileUploadResponse
    from deepagents.backends.sandbox import BaseSandbox
except ImportError as e:  # pragma: no cover - depends on the optional extra
    raise ImportError(
        "boxlite_langchain.deep_agents needs the deepagents package (Python 3.11 or newer): "
        "pip install 'boxlite-langchain[deepagents]'"
    ) from e


def _execute_response(result: ToolResult) -> ExecuteResponse:
    output = result.stdout + result.stderr
    if result.timed_out:
        output += f"\n[timed out after {result.timeout:g} s: every process the command started was killed]"
    return ExecuteResponse(
        output=output,
        exit_code=result.exit_code,
        truncated=bool(result.stdout_truncated or result.stderr_truncated),
    )


def _file_error(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "permission_denied"
    if "Is a directory" in str(error) or isinstance(error, IsADirectoryError):
        return "is_directory"
    return "file_not_found"


class BoxLiteSandbox(BaseSandbox):
    """Deep Agents' ``BaseSandbox`` on one BoxLite box (created on first use, stopped by
    :meth:`close` or at interpreter exit). Commands run with ``sh -c`` and a timeout that kills
    everything they started; output is capped like every BoxLite tool's."""

    def __init__(
        self,
        sandbox: ToolSandbox | None = None,
        *,
        image: str | os.PathLike[str] | None = None,
        memory_mib: int = 1024,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if sandbox is not None and sandbox.pool is not None:
            raise ValueError(
                "a Deep Agents backend keeps its files in one box for the whole session, but this sandbox "
                "leases a box per call from a pool: pass a ToolSandbox without pool= (or none at all)"
            )
        self.sandbox = sandbox or ToolSandbox(
            image, memory_mib=memory_mib, max_output_chars=max_output_chars, default_timeout=default_timeout
        )
        self._id = f"boxlite-{uuid.uuid4().hex[:12]}"

    @property
    def id(self) -> str:
        return self._id

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        return run_sync(self.aexecute(command, timeout=timeout))

    async def aexecute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        return _execute_response(await self.sandbox.run_shell(command, timeout))

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        return run_sync(self.aupload_files(files))

    async def aupload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        responses = []
        for path, content in files:
            try:
                await self.sandbox.write_file(path, content)
                responses.append(FileUploadResponse(path=path))
            except OSError as e:
                responses.append(FileUploadResponse(path=path, error=_file_error(e)))
        return responses

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        return run_sync(self.adownload_files(paths))

    async def adownload_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        responses = []
        for path in paths:
            try:
                responses.append(FileDownloadResponse(path=path, content=await self.sandbox.read_file(path)))
            except OSError as e:
                responses.append(FileDownloadResponse(path=path, error=_file_error(e)))
        return responses

    def close(self) -> None:
        """Stops the box."""
        self.sandbox.close_sync()

    async def aclose(self) -> None:
        await self.sandbox.close()
