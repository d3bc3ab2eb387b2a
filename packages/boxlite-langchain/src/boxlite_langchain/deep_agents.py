"""A Deep Agents sandbox backend on a BoxLite box (``pip install 'boxlite-langchain[deepagents]'``).

    from deepagents import create_deep_agent
    from boxlite_langchain.deep_agents import BoxLiteSandbox

    agent = create_deep_agent(model=model, backend=BoxLiteSandbox())

Deep Agents' file tools (``ls``, ``read_file``, ``write_file``, ``edit_file``, ``glob``,
``grep``) and its ``execute`` tool then all run in one VM. The backend follows the contract of
``langchain-tests``' ``SandboxIntegrationTests`` (``tests/test_deepagents_standard.py`` runs it):
``execute`` returns a command's whole output (Deep Agents' middleware decides what the model
sees of a large one) up to ``max_output_bytes`` per stream; files move through the box's own
file transfer, not through command output; paths must be absolute; ``write`` refuses an
existing file; ``glob`` reports paths relative to its search root.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import uuid

from boxlite import run_sync
from boxlite.contract import DEFAULT_MAX_OUTPUT_BYTES
from boxlite.runtime import ExecResult
from boxlite.sync_api import run_in_library_loop
from boxlite.tools import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT, ToolSandbox, call_timeout

try:
    from deepagents.backends.protocol import (
        ExecuteResponse,
        FileDownloadResponse,
        FileOperationError,
        FileUploadResponse,
        GlobResult,
        WriteResult,
    )
    from deepagents.backends.sandbox import _GLOB_COMMAND_TEMPLATE as _DEEPAGENTS_GLOB_TEMPLATE
    from deepagents.backends.sandbox import BaseSandbox
    from deepagents.backends.sandbox import _parse_glob_output as _parse_glob_output
except ImportError as e:  # pragma: no cover - depends on the optional extra
    raise ImportError(
        "boxlite_langchain.deep_agents needs the deepagents package (Python 3.11 or newer): "
        "pip install 'boxlite-langchain[deepagents]'"
    ) from e

logger = logging.getLogger(__name__)

#: Bytes of stdout (and, separately, of stderr) ``execute`` returns at most: Deep Agents' own
#: middleware shortens what the model sees, so the backend hands over the whole output up to this.
DEFAULT_EXECUTE_MAX_OUTPUT_BYTES = DEFAULT_MAX_OUTPUT_BYTES


# Deep Agents' glob script reports regular files only; the standard suite (and ``ls``-like use)
# wants directories too, marked ``is_dir``. The same script, with directories walked as well:
# each edit must apply, or glob falls back to Deep Agents' own (files only).
_GLOB_EDITS = (
    ("for name in filenames:", "for name, is_dir in [(n, False) for n in filenames] + [(n, True) for n in dirnames]:"),
    (
        "if not os.path.isfile(candidate):",
        "if not (os.path.isdir(candidate) if is_dir else os.path.isfile(candidate)):",
    ),
    ("matches.append(rel)", "matches.append((rel, is_dir))"),
    (
        "for item in sorted(matches):\n        print(json.dumps({{'path': item, 'is_dir': False}}))",
        "for item, is_dir in sorted(matches):\n        print(json.dumps({{'path': item, 'is_dir': is_dir}}))",
    ),
)


def _glob_template_with_directories() -> str | None:
    template = _DEEPAGENTS_GLOB_TEMPLATE
    for old, new in _GLOB_EDITS:
        if template.count(old) != 1:
            return None
        template = template.replace(old, new)
    return template


_GLOB_WITH_DIRECTORIES = _glob_template_with_directories()

#: Seconds an ``aglob`` may take before it is abandoned with an error (Deep Agents' own bound).
GLOB_TIMEOUT = 30.0


def _execute_response(result: ExecResult, seconds: float, max_output_bytes: int) -> ExecuteResponse:
    output = result.stdout + result.stderr
    if result.truncated:
        dropped = result.stdout_dropped + result.stderr_dropped
        output += (
            f"\n[output truncated: {dropped} bytes beyond the limit of {max_output_bytes} bytes per stream "
            "were dropped; write large output to a file and read it in pages]"
        )
    if result.timed_out:
        output += f"\n[timed out after {seconds:g} s: every process the command started was killed]"
    return ExecuteResponse(output=output, exit_code=result.exit_code, truncated=result.truncated)


def _file_error(error: OSError) -> FileOperationError:
    if isinstance(error, PermissionError):
        return "permission_denied"
    if isinstance(error, IsADirectoryError) or "Is a directory" in str(error):
        return "is_directory"
    if isinstance(error, NotADirectoryError):
        return "invalid_path"
    return "file_not_found"


def _relative_to(root: str, path: str) -> str:
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


class BoxLiteSandbox(BaseSandbox):
    """Deep Agents' ``BaseSandbox`` on one BoxLite box (created on first use, stopped by
    :meth:`close` or at interpreter exit). Commands run with ``sh -c`` and a timeout that kills
    everything they started.

    ``max_output_bytes`` caps what ``execute`` returns of each stream (the rest is dropped,
    ``truncated`` is set and a marker says so); ``max_output_chars`` is the cap of the
    BoxLite tools sharing ``sandbox``, not of this backend. ``glob`` reports paths relative to
    the searched directory (the standard suite's contract); ``relative_glob_paths=False`` keeps
    Deep Agents' absolute ones, which its filesystem permission rules filter glob results by.
    """

    def __init__(
        self,
        sandbox: ToolSandbox | None = None,
        *,
        image: str | os.PathLike[str] | None = None,
        memory_mib: int = 1024,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        max_output_bytes: int = DEFAULT_EXECUTE_MAX_OUTPUT_BYTES,
        default_timeout: float = DEFAULT_TIMEOUT,
        relative_glob_paths: bool = True,
    ) -> None:
        if sandbox is not None and sandbox.pool is not None:
            raise ValueError(
                "a Deep Agents backend keeps its files in one box for the whole session, but this sandbox "
                "leases a box per call from a pool: pass a ToolSandbox without pool= (or none at all)"
            )
        if isinstance(max_output_bytes, bool) or not isinstance(max_output_bytes, int) or max_output_bytes < 1024:
            raise ValueError(f"max_output_bytes={max_output_bytes!r} is too small to be useful: use at least 1024")
        self.sandbox = sandbox or ToolSandbox(
            image, memory_mib=memory_mib, max_output_chars=max_output_chars, default_timeout=default_timeout
        )
        self.max_output_bytes = max_output_bytes
        self.relative_glob_paths = relative_glob_paths
        self._id = f"boxlite-{uuid.uuid4().hex[:12]}"

    @property
    def id(self) -> str:
        return self._id

    # -- execute ---------------------------------------------------------------------------

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        return run_sync(self.aexecute(command, timeout=timeout))

    async def aexecute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        seconds = call_timeout(timeout, self.sandbox.default_timeout)
        return await run_in_library_loop(self._execute_here(command, seconds))

    async def _execute_here(self, command: str, seconds: float) -> ExecuteResponse:
        async with self.sandbox.session() as session:
            result = await session.box.run(
                "sh", ["-c", command], timeout=seconds, max_output_bytes=self.max_output_bytes
            )
        return _execute_response(result, seconds, self.max_output_bytes)

    # -- files -----------------------------------------------------------------------------

    def write(self, file_path: str, content: str) -> WriteResult:
        return run_sync(self.awrite(file_path, content))

    async def awrite(self, file_path: str, content: str) -> WriteResult:
        """Creates ``file_path`` (and its missing parent directories) with ``content``; an
        existing file is left alone and reported (edit it instead)."""
        if not file_path.startswith("/"):
            return WriteResult(error=f"Error: '{file_path}' is not an absolute path: give the full path from /")
        try:
            await run_in_library_loop(self._create_here(file_path, content.encode()))
        except FileExistsError:
            return WriteResult(
                error=f"Cannot write to {file_path} because it already exists: read it and edit it, "
                "or write to a new path"
            )
        except OSError as e:
            return WriteResult(error=f"Failed to write file '{file_path}': {_file_error(e)} ({e})")
        return WriteResult(path=file_path)

    async def _create_here(self, path: str, data: bytes) -> None:
        async with self.sandbox.session() as session:
            await session.box.write_file(path, data, parents=True, exclusive=True)

    def glob(self, pattern: str, path: str | None = None) -> GlobResult:
        return run_sync(self.aglob(pattern, path))

    async def aglob(self, pattern: str, path: str | None = None) -> GlobResult:
        """Files and directories (``is_dir``) under ``path`` (default ``/``) matching
        ``pattern``, with paths relative to ``path`` (absolute with ``relative_glob_paths=False``)."""
        root = path or "/"
        root = root if root.startswith("/") else f"/{root}"
        if _GLOB_WITH_DIRECTORIES is None:
            logger.warning("this deepagents' glob script is not the one expected: glob reports files only")
            result = await super().aglob(pattern, root)
        else:
            command = _GLOB_WITH_DIRECTORIES.format(
                path_b64=base64.b64encode(root.encode()).decode("ascii"),
                pattern_b64=base64.b64encode(pattern.encode()).decode("ascii"),
            )
            try:
                response = await asyncio.wait_for(self.aexecute(command), timeout=GLOB_TIMEOUT)
            except TimeoutError:
                return GlobResult(
                    error=f"Error: glob timed out after {GLOB_TIMEOUT:g} s: try a more specific pattern or a "
                    "narrower path"
                )
            result = _parse_glob_output(response, root)
        if result.matches is not None and self.relative_glob_paths:
            for match in result.matches:
                match["path"] = _relative_to(root, match["path"])
        return result

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        return run_sync(self.aupload_files(files))

    async def aupload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        responses = []
        for path, content in files:
            if not path.startswith("/"):
                responses.append(FileUploadResponse(path=path, error="invalid_path"))
                continue
            try:
                await self.sandbox.write_file(path, content)
                responses.append(FileUploadResponse(path=path))
            except OSError as e:
                logger.debug("upload of %s failed: %s", path, e)
                responses.append(FileUploadResponse(path=path, error=_file_error(e)))
        return responses

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        return run_sync(self.adownload_files(paths))

    async def adownload_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        responses = []
        for path in paths:
            if not path.startswith("/"):
                responses.append(FileDownloadResponse(path=path, error="invalid_path"))
                continue
            try:
                responses.append(FileDownloadResponse(path=path, content=await self.sandbox.read_file(path)))
            except OSError as e:
                logger.debug("download of %s failed: %s", path, e)
                responses.append(FileDownloadResponse(path=path, error=_file_error(e)))
        return responses

    def close(self) -> None:
        """Stops the box."""
        self.sandbox.close_sync()

    async def aclose(self) -> None:
        await self.sandbox.close()
