# Seed: 001_a242f1084a3ed0b8.txt, lines 170-202, copied verbatim below this header.

from langchain.tools import BaseTool
from typing import Optional
from pydantic import Field
import asyncio
import boxlite

class BoxLitePythonTool(BaseTool):
    name: str = "boxlite_python"
    description: str = "Execute Python code in secure local sandbox. Input: valid Python code."
    _box: Optional[object] = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    async def _setup_box(self):
        if not self._box:
            self._box = await boxlite.SimpleBox(image="python:slim").__aenter__()

    def _run(self, code: str) -> str:
        return asyncio.run(self._arun(code))

    async def _arun(self, code: str) -> str:
        await self._setup_box()
        result = await self._box.exec(
            "python3", "-c", code
        )
        if result.returncode == 0:
            return result.stdout
        return f"Error: {result.stderr}"

    def cleanup(self):
        if self._box:
            asyncio.run(self._box.__aexit__(None, None, None))
