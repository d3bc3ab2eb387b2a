"""``python -m boxlite``: the ``boxlite`` command."""

import sys

from .cli import main

sys.exit(main())
