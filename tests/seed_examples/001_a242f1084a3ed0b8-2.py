# Seed: 001_a242f1084a3ed0b8.txt, lines 109-164, copied verbatim below this header.

import asyncio
from dataclasses import dataclass
from typing import Optional
import boxlite

@dataclass
class ExecutionResult:
    success: bool
    output: str
    error: Optional[str]

class BoxLiteCodeExecutor:
    """Execute AI-generated code safely in local sandbox."""

    def __init__(self, image: str = "python:slim"):
        self.image = image
        self._box = None

    async def __aenter__(self):
        self._box = await boxlite.SimpleBox(image=self.image).__aenter__()
        return self

    async def __aexit__(self, *args):
        if self._box:
            await self._box.__aexit__(*args)

    async def execute(self, code: str) -> ExecutionResult:
        """Execute code and return structured result."""
        try:
            # Write code to file
            await self._box.exec("sh", "-c", f"cat > /tmp/script.py << 'EOF'\n{code}\nEOF")

            # Execute
            result = await self._box.exec("python3", "/tmp/script.py")

            return ExecutionResult(
                success=result.returncode == 0,
                output=result.stdout,
                error=result.stderr if result.returncode != 0 else None
            )
        except Exception as e:
            return ExecutionResult(success=False, output="", error=str(e))

# Usage with AI agent
async def main():
    async with BoxLiteCodeExecutor() as executor:
        # AI generates this code
        ai_code = """
import math
result = sum(math.factorial(i) for i in range(10))
print(f"Sum of factorials 0-9: {result}")
"""
        result = await executor.execute(ai_code)
        print(result.output)  # Sum of factorials 0-9: 409113

asyncio.run(main())
