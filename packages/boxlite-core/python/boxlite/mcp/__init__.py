"""``boxlite mcp``: BoxLite's agent tools as a Model Context Protocol server.

Built on the official ``mcp`` SDK (the optional extra ``boxlite-core[mcp]``) over the shared
tool core :mod:`boxlite.tools`: ``options.py`` (flags and environment variables),
``tools.py`` (the tools, the pool for stateless calls, each client's workspaces) and
``server.py`` (the SDK server, the stdio and streamable HTTP transports, clean-up on
disconnect and on signals). Start it with ``boxlite mcp`` or ``python -m boxlite.mcp``.
"""

from __future__ import annotations

from .options import McpOptions, parse_options
from .server import build_server, main, serve
from .tools import Connection, ToolService

__all__ = ["Connection", "McpOptions", "ToolService", "build_server", "main", "parse_options", "serve"]
