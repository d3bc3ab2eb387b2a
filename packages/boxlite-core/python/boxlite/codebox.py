"""``CodeBox``: a :class:`~boxlite.SimpleBox` for running Python code.

async with boxlite.CodeBox() as cb:
    output = await cb.run("print(2 + 2)")   # "4\\n"
"""

from __future__ import annotations

import os
from pathlib import Path

from typing_extensions import Unpack

from .contract import EXIT_COMMAND_NOT_FOUND
from .errors import InvalidOptionError, PackageInstallError
from .simplebox import SimpleBox, SimpleBoxArgs

#: The image a CodeBox (and a BoxPool) uses when none is given and ``BOXLITE_DEFAULT_IMAGE`` is unset.
DEFAULT_IMAGE = "python:slim"

#: The interpreter CodeBox runs, looked up on the box's ``PATH`` (Debian and python:slim have it).
PYTHON = "python3"


def default_image() -> str:
    """The default image: ``BOXLITE_DEFAULT_IMAGE`` (a reference or an OCI layout path) or ``python:slim``."""
    return os.environ.get("BOXLITE_DEFAULT_IMAGE") or DEFAULT_IMAGE


class CodeBox(SimpleBox):
    """A box for running Python: ``run(code)`` returns what the code printed.

    The image defaults to :func:`default_image` (``BOXLITE_DEFAULT_IMAGE`` or ``python:slim``)
    unless ``image`` or ``rootfs_path`` is given; it must have ``python3`` on its ``PATH``.
    Each :meth:`run` starts a new interpreter: variables do not carry over between calls, files
    and installed packages do. Takes :class:`SimpleBox`'s options, with the same aliases
    (``cpu``, ``memory``, ``disk_size`` in MB, ``mounts``; see :class:`SimpleBoxArgs`).
    """

    def __init__(self, image: str | None = None, **options: Unpack[SimpleBoxArgs]) -> None:
        if image is None and options.get("rootfs_path") is None:
            image = default_image()
        super().__init__(image, **options)

    async def run(self, code: str, timeout: float | None = None) -> str:
        """Runs ``code`` with ``python3 -c`` and returns its output as a string.

        On success that is stdout (``"4\\n"`` for ``print(2 + 2)``). When the code fails, its
        stderr (the traceback) follows stdout, so a caller (an agent) sees what went wrong;
        check the exit code with :meth:`exec` if you need it. With ``timeout`` (seconds) every
        process the code started is killed once it runs longer, and the output so far is
        returned followed by a line saying so.
        """
        result = await self.exec(PYTHON, "-c", code, timeout=timeout)
        output = result.stdout + result.stderr
        if result.timed_out:
            if output and not output.endswith("\n"):
                output += "\n"
            output += f"TimeoutError: the code ran longer than {timeout} s and was killed\n"
        return output

    async def run_script(self, path: str | Path, timeout: float | None = None) -> str:
        """Runs the Python script at ``path`` on the host in the box; returns output as :meth:`run`."""
        script = Path(path)
        try:
            code = script.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"run_script: no script at {script} (the path is on the host)") from None
        return await self.run(code, timeout=timeout)

    async def install_package(self, name: str) -> str:
        """``pip install name`` in the box; returns pip's output.

        Raises :class:`~boxlite.errors.PackageInstallError` (with pip's output) when pip fails or
        the image has no pip. Needs network access from the box unless a local index is set up.
        """
        return await self.install_packages(name)

    async def install_packages(self, *names: str) -> str:
        """``pip install`` every one of ``names`` in one pip call; see :meth:`install_package`."""
        if not names or any(not isinstance(n, str) or not n.strip() for n in names):
            raise InvalidOptionError(f"install_packages needs one or more non-empty package names, got {names!r}")
        result = await self.exec(PYTHON, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", *names)
        if result.exit_code != 0:
            detail = (result.stderr or result.stdout).strip()
            hint = ""
            if "No module named pip" in detail:
                hint = " The image has no pip: use an image that ships it (python:slim does) or install python3-pip."
            elif result.exit_code == EXIT_COMMAND_NOT_FOUND:
                hint = f" The image has no {PYTHON}: CodeBox needs a Python image."
            raise PackageInstallError(
                f"pip install {' '.join(names)} failed in box {self.id} (exit code {result.exit_code}).{hint}\n{detail}"
            )
        return result.stdout
