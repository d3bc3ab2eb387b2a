"""The MCP tools over the shared tool core (:mod:`boxlite.tools`).

:class:`ToolService` is the server's side (the runtime, the pool of warm boxes for stateless
calls, the tool list); :class:`Connection` is one client's side (its workspaces: named
persistent sessions and created boxes), closed, with every box it started, when the client goes.
Results use the tool core's text (the same caps, truncation marker and timeouts as the
framework tools), plus an image block per plot or PNG; a failure is a tool error with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp import types
from pydantic import BaseModel, Field, ValidationError

from ..errors import BoxliteError, BoxNotFoundError
from ..options import BoxOptions, Options
from ..pool import LeasingPool
from ..runtime import Box, Boxlite
from ..tools import (
    FileEntry,
    ListFilesInput,
    PythonInput,
    ReadFileInput,
    ShellInput,
    ToolResult,
    ToolSandbox,
    WriteFileInput,
    create_tool_pool,
    descriptions,
    format_listing,
    resolve_image,
    truncate_output,
)
from .options import McpOptions

logger = logging.getLogger("boxlite.mcp")

CREATE_BOX_TOOL_NAME = "boxlite_create_box"
LIST_BOXES_TOOL_NAME = "boxlite_list_boxes"
STOP_BOX_TOOL_NAME = "boxlite_stop_box"
REMOVE_BOX_TOOL_NAME = "boxlite_remove_box"

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
SESSION_ARG = (
    "Name of a workspace: a box of its own where Python variables, files and installed packages persist "
    "between calls with the same name (created on first use, stopped when the client disconnects). "
    "Omit it to run in a fresh box that is discarded after the call."
)
BOX_NAME_ARG = "Name of the workspace box (letters, digits, '.', '_', '-')."
CREATE_BOX_DESCRIPTION = (
    "Create a kept workspace box (a VM) with this name: Python variables, files and packages persist between calls "
    "that pass session=<name>; its files also survive boxlite_stop_box and the end of the connection, and "
    "creating it again later reopens it."
)
LIST_BOXES_DESCRIPTION = "List this client's workspace boxes (named sessions and created boxes) with their status."
STOP_BOX_DESCRIPTION = (
    "Stop a workspace box. A kept box keeps its files and starts again on its next use; a session's box is discarded."
)
REMOVE_BOX_DESCRIPTION = "Stop a workspace box and delete it with all its files."

#: Seconds a stateless call waits for a pooled box (its boot and interpreter start included).
POOL_ACQUIRE_TIMEOUT = 300.0
#: The signature of a PNG file: such a file is returned as an image.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class McpPythonInput(PythonInput):
    session: str | None = Field(default=None, pattern=NAME_PATTERN, description=SESSION_ARG)


class McpShellInput(ShellInput):
    session: str | None = Field(default=None, pattern=NAME_PATTERN, description=SESSION_ARG)


class McpReadFileInput(ReadFileInput):
    session: str | None = Field(default=None, pattern=NAME_PATTERN, description=SESSION_ARG)


class McpWriteFileInput(WriteFileInput):
    session: str | None = Field(default=None, pattern=NAME_PATTERN, description=SESSION_ARG)


class McpListFilesInput(ListFilesInput):
    session: str | None = Field(default=None, pattern=NAME_PATTERN, description=SESSION_ARG)


class BoxNameInput(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description=BOX_NAME_ARG)


class NoInput(BaseModel):
    pass


class ToolCallError(Exception):
    """A call that cannot be done as asked: the client gets it as a tool error."""


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema


def tool_definitions() -> list[types.Tool]:
    """What ``tools/list`` answers: names and descriptions shared with the framework adapters."""

    def tool(name: str, description: str, model: type[BaseModel], read_only: bool = False) -> types.Tool:
        return types.Tool(
            name=name,
            description=description,
            inputSchema=_schema(model),
            annotations=types.ToolAnnotations(readOnlyHint=read_only, openWorldHint=False),
        )

    python = descriptions.python_tool_description(persistent=False) + (
        " Pass session=<name> to keep variables between calls (a persistent session in a box of its own)."
    )
    return [
        tool(descriptions.PYTHON_TOOL_NAME, python, McpPythonInput),
        tool(descriptions.SHELL_TOOL_NAME, descriptions.SHELL_TOOL_DESCRIPTION, McpShellInput),
        tool(
            descriptions.READ_FILE_TOOL_NAME,
            descriptions.READ_FILE_TOOL_DESCRIPTION + " A PNG file is returned as an image.",
            McpReadFileInput,
            read_only=True,
        ),
        tool(descriptions.WRITE_FILE_TOOL_NAME, descriptions.WRITE_FILE_TOOL_DESCRIPTION, McpWriteFileInput),
        tool(descriptions.LIST_FILES_TOOL_NAME, descriptions.LIST_FILES_TOOL_DESCRIPTION, McpListFilesInput, True),
        tool(CREATE_BOX_TOOL_NAME, CREATE_BOX_DESCRIPTION, BoxNameInput),
        tool(LIST_BOXES_TOOL_NAME, LIST_BOXES_DESCRIPTION, NoInput, read_only=True),
        tool(STOP_BOX_TOOL_NAME, STOP_BOX_DESCRIPTION, BoxNameInput),
        tool(REMOVE_BOX_TOOL_NAME, REMOVE_BOX_DESCRIPTION, BoxNameInput),
    ]


def result_content(result: ToolResult) -> list[types.ContentBlock]:
    """A run's result: the tool core's text, then each image as an image block."""
    blocks: list[types.ContentBlock] = [types.TextContent(type="text", text=result.to_text())]
    blocks += [types.ImageContent(type="image", data=i.base64(), mimeType=i.mime_type) for i in result.images]
    return blocks


def _text(text: str) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=text)]


def _invalid(tool: str, error: ValidationError) -> str:
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in error.errors())
    return f"invalid arguments for {tool}: {problems}"


@dataclass
class Workspace:
    """A named box of one client: a persistent Python session and its files."""

    name: str
    box: Box
    sandbox: ToolSandbox
    #: Created with boxlite_create_box: survives a stop and the connection (stopped).
    kept: bool


def cluster_pool(options: McpOptions, box_options: BoxOptions) -> LeasingPool:
    """``--ray``: a :class:`~boxlite.ray.RayBoxPool` on the cluster at ``options.ray``, joined as a
    driver (its boxes stop when this server exits); ``pool_size`` and ``warm`` count per node."""
    try:
        import ray

        from ..ray import RayBoxPool
    except ImportError as e:
        raise ValueError(f"--ray needs Ray, which is not installed ({e}): pip install 'boxlite-core[ray]'") from e
    if not ray.is_initialized():

        def no_cluster(why: object) -> ValueError:
            return ValueError(
                f"--ray {options.ray}: no Ray cluster there ({why}); start one with `ray start --head "
                "--resources='{\"boxlite\": 1}'` (and `ray start --address=HEAD:PORT` with the same resource on "
                "each other node), and pass its address (or auto on a node)"
            )

        host, _, port = (options.ray or "").rpartition(":")
        if host and port.isdigit():
            # Ray retries an address nobody listens on for minutes: ask the port first.
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except OSError as e:
                raise no_cluster(e) from e
        try:
            ray.init(address=options.ray, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise no_cluster(e) from e
    return RayBoxPool(
        box_options,
        per_node_max=options.pool_size,
        min_idle=options.warm,
        max_uses=options.max_uses,
        acquire_timeout=POOL_ACQUIRE_TIMEOUT,
        home_dir=options.home,
    )


class ToolService:
    """The server's tools: the runtime, the pool for stateless calls, and the options."""

    def __init__(self, options: McpOptions) -> None:
        self.options = options
        self.runtime = Boxlite(Options(home_dir=options.home)) if options.home else Boxlite.default()
        volumes = [(v.host, v.guest, v.mode) for v in options.volumes]
        self.box_options = BoxOptions(
            image=resolve_image(options.image),
            memory_mib=options.memory_mib,
            cpus=options.cpus,
            network_enabled=options.network,
            volumes=volumes,
        )
        self.pool: LeasingPool = (
            cluster_pool(options, self.box_options)
            if options.ray
            else create_tool_pool(
                options=self.box_options,
                runtime=self.runtime,
                max_output_chars=options.max_output_chars,
                default_timeout=options.timeout,
                min_idle=options.warm,
                max_size=options.pool_size,
                max_uses=options.max_uses,
                # A call may have to wait for a box to boot and its interpreter to start (slow under emulation).
                acquire_timeout=POOL_ACQUIRE_TIMEOUT,
            )
        )
        self.stateless = ToolSandbox(
            pool=self.pool, max_output_chars=options.max_output_chars, default_timeout=options.timeout
        )
        self.tools = tool_definitions()
        self._warming: asyncio.Future[None] | None = None
        self.connections: set[Connection] = set()

    def start(self) -> None:
        """Starts warming the pool in the background (a failure shows up on the first call)."""
        if self.options.warm == 0:
            return

        async def warm() -> None:
            try:
                await self.pool.start()
            except Exception as e:  # reported again by the first call that needs a box
                logger.warning("could not warm the pool: %s", e)

        self._warming = asyncio.ensure_future(warm())

    def connect(self) -> Connection:
        connection = Connection(self)
        self.connections.add(connection)
        return connection

    async def close(self) -> None:
        """Closes every connection, the pool, then stops any box of this runtime still running."""
        for connection in list(self.connections):
            await connection.close()
        if self._warming is not None:
            self._warming.cancel()
        try:
            await self.stateless.close()
            await self.pool.close()
        finally:
            await self.runtime.shutdown()


class Connection:
    """One client's workspaces and its tool calls."""

    def __init__(self, service: ToolService) -> None:
        self.service = service
        self.options = service.options
        self.workspaces: dict[str, Workspace] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    # -- dispatch ---------------------------------------------------------------------------

    async def call(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Runs tool ``name``; a failure becomes a tool error naming the reason (never raised)."""
        handlers: dict[str, tuple[type[BaseModel], Callable[[Any], Awaitable[list[types.ContentBlock]]]]] = {
            descriptions.PYTHON_TOOL_NAME: (McpPythonInput, self._python),
            descriptions.SHELL_TOOL_NAME: (McpShellInput, self._shell),
            descriptions.READ_FILE_TOOL_NAME: (McpReadFileInput, self._read_file),
            descriptions.WRITE_FILE_TOOL_NAME: (McpWriteFileInput, self._write_file),
            descriptions.LIST_FILES_TOOL_NAME: (McpListFilesInput, self._list_files),
            CREATE_BOX_TOOL_NAME: (BoxNameInput, self._create_box),
            LIST_BOXES_TOOL_NAME: (NoInput, self._list_boxes),
            STOP_BOX_TOOL_NAME: (BoxNameInput, self._stop_box),
            REMOVE_BOX_TOOL_NAME: (BoxNameInput, self._remove_box),
        }
        if name not in handlers:
            return self._error(f"unknown tool {name!r}: the tools are {', '.join(handlers)}")
        model, handler = handlers[name]
        try:
            args = model.model_validate(arguments)
        except ValidationError as e:
            return self._error(_invalid(name, e))
        try:
            return types.CallToolResult(content=await handler(args), isError=False)
        except ToolCallError as e:
            return self._error(str(e))
        except (OSError, ValueError) as e:  # the model's mistake: a missing file, a bad timeout
            return self._error(f"{name} failed: {e}")
        except BoxliteError as e:
            logger.warning("%s failed: %s", name, e)
            return self._error(f"the BoxLite sandbox failed: {e}")
        except Exception as e:
            logger.exception("%s failed unexpectedly", name)
            return self._error(f"{name} failed unexpectedly: {type(e).__name__}: {e}")

    @staticmethod
    def _error(message: str) -> types.CallToolResult:
        return types.CallToolResult(content=_text(message), isError=True)

    # -- running ----------------------------------------------------------------------------

    async def _sandbox(self, session: str | None) -> ToolSandbox:
        if session is None:
            return self.service.stateless
        return (await self._workspace(session, create=True, kept=False)).sandbox

    async def _python(self, args: McpPythonInput) -> list[types.ContentBlock]:
        sandbox = await self._sandbox(args.session)
        return result_content(await sandbox.run_python(args.code, args.timeout))

    async def _shell(self, args: McpShellInput) -> list[types.ContentBlock]:
        sandbox = await self._sandbox(args.session)
        return result_content(await sandbox.run_shell(args.command, args.timeout))

    async def _read_file(self, args: McpReadFileInput) -> list[types.ContentBlock]:
        data = await (await self._sandbox(args.session)).read_file(args.path)
        if data.startswith(PNG_SIGNATURE):
            image = types.ImageContent(type="image", data=_b64(data), mimeType="image/png")
            return [types.TextContent(type="text", text=f"{args.path}: a PNG image of {len(data)} bytes"), image]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return _text(f"{args.path} is a binary file of {len(data)} bytes (not shown)")
        return _text(truncate_output(text, self.options.max_output_chars)[0])

    async def _write_file(self, args: McpWriteFileInput) -> list[types.ContentBlock]:
        if args.session is None:
            raise ToolCallError(
                "boxlite_write_file needs session=<name>: without it the file would go to a box that is "
                "discarded right after the call; pass the session your other calls use"
            )
        written = await (await self._sandbox(args.session)).write_file(args.path, args.content)
        return _text(f"wrote {written} bytes to {args.path}")

    async def _list_files(self, args: McpListFilesInput) -> list[types.ContentBlock]:
        entries: list[FileEntry] = await (await self._sandbox(args.session)).list_files(args.path)
        return _text(format_listing(args.path, entries))

    # -- workspaces -------------------------------------------------------------------------

    async def _workspace(self, name: str, *, create: bool, kept: bool) -> Workspace:
        """The running workspace ``name``: started again if stopped, created if ``create``."""
        async with self._lock:
            if self._closed:
                raise ToolCallError("this connection is closing")
            workspace = self.workspaces.get(name)
            if workspace is None:
                if not create:
                    raise ToolCallError(f"no workspace box named {name!r}: see boxlite_list_boxes")
                if len(self.workspaces) >= self.options.max_workspaces:
                    raise ToolCallError(
                        f"this client already has {len(self.workspaces)} workspace boxes, the most allowed "
                        "(--max-workspaces): remove one with boxlite_remove_box"
                    )
                box = await self._open_box(name, kept)
                workspace = Workspace(name, box, self._new_sandbox(box), kept)
                self.workspaces[name] = workspace
            elif workspace.box.info().status != "running":
                await workspace.box.start()
                workspace.sandbox = self._new_sandbox(workspace.box)
            return workspace

    def _new_sandbox(self, box: Box) -> ToolSandbox:
        return ToolSandbox(
            box=box,
            persistent=True,
            max_output_chars=self.options.max_output_chars,
            default_timeout=self.options.timeout,
        )

    async def _open_box(self, name: str, kept: bool) -> Box:
        runtime = self.service.runtime
        if not kept:
            return await runtime.create(self.service.box_options)
        try:
            info = await runtime.get_info(name)
        except BoxNotFoundError:
            return await runtime.create(
                self.service.box_options.model_copy(update={"name": name, "auto_remove": False})
            )
        if info.status == "running" or info.auto_remove:
            raise ToolCallError(f"the name {name!r} is taken by another box of this home: choose another name")
        box = await runtime.get(name)
        await box.start()
        logger.info("reopened the kept box %s (%s)", name, box.id)
        return box

    async def _create_box(self, args: BoxNameInput) -> list[types.ContentBlock]:
        if args.name in self.workspaces:
            raise ToolCallError(f"a workspace box named {args.name!r} exists already: use it with session=")
        workspace = await self._workspace(args.name, create=True, kept=True)
        return _text(
            f"workspace box {args.name!r} is running (id {workspace.box.id}); pass session={args.name!r} to the tools"
        )

    async def _list_boxes(self, args: NoInput) -> list[types.ContentBlock]:
        if not self.workspaces:
            return _text("no workspace boxes (pass session=<name> to a tool, or use boxlite_create_box)")
        lines = [
            f"{w.name}: {w.box.info().status}, {'kept' if w.kept else 'session'}, id {w.box.id}"
            for w in self.workspaces.values()
        ]
        return _text("\n".join(lines))

    async def _stop_box(self, args: BoxNameInput) -> list[types.ContentBlock]:
        async with self._lock:
            workspace = self.workspaces.get(args.name)
            if workspace is None:
                raise ToolCallError(f"no workspace box named {args.name!r}: see boxlite_list_boxes")
            await self._stop(workspace)
            if not workspace.kept:
                del self.workspaces[args.name]  # its box was removed with it
                return _text(f"stopped and discarded the session box {args.name!r}")
        return _text(f"stopped {args.name!r}; its files are kept and it starts again on its next use")

    async def _remove_box(self, args: BoxNameInput) -> list[types.ContentBlock]:
        async with self._lock:
            workspace = self.workspaces.pop(args.name, None)
            if workspace is None:
                raise ToolCallError(f"no workspace box named {args.name!r}: see boxlite_list_boxes")
            await self._stop(workspace)
            if workspace.kept:
                await self.service.runtime.remove(workspace.box.id, force=True)
        return _text(f"removed {args.name!r}")

    @staticmethod
    async def _stop(workspace: Workspace) -> None:
        await workspace.sandbox.close()
        if workspace.box.info().status == "running":
            await workspace.box.stop()

    async def close(self) -> None:
        """Stops every box of this client (kept ones stay on disk, stopped)."""
        async with self._lock:
            self._closed = True
            workspaces, self.workspaces = list(self.workspaces.values()), {}
        # Together: a client that disconnects gives its server only seconds before it kills it.
        results = await asyncio.gather(*(self._stop(w) for w in workspaces), return_exceptions=True)
        for workspace, result in zip(workspaces, results, strict=True):
            if isinstance(result, Exception):
                logger.warning("could not stop the workspace box %s: %s", workspace.name, result)
        self.service.connections.discard(self)
        logger.info("client gone: stopped %d workspace boxes", len(workspaces))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


__all__ = ["Connection", "ToolCallError", "ToolService", "Workspace", "result_content", "tool_definitions"]
