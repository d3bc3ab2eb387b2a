"""``python -m boxlite.mcp``: the MCP server (see ``--help``)."""

import sys

from .server import main

sys.exit(main())
