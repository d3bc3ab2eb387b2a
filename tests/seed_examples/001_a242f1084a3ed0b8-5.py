# Seed: 001_a242f1084a3ed0b8.txt, lines 326-363, copied verbatim below this header.

import asyncio
import boxlite
from dataclasses import dataclass
from typing import Optional

@dataclass
class SafeResult:
    success: bool
    output: str
    error: Optional[str]
    retries: int

async def execute_with_retry(
    box,
    command: list[str],
    max_retries: int = 3
) -> SafeResult:
    """Execute with retry and structured error handling."""

    for attempt in range(max_retries):
        try:
            result = await box.exec(*command)

            return SafeResult(
                success=result.returncode == 0,
                output=result.stdout,
                error=result.stderr if result.returncode != 0 else None,
                retries=attempt
            )
        except Exception as e:
            if attempt == max_retries - 1:
                return SafeResult(
                    success=False,
                    output="",
                    error=f"Failed after {max_retries} attempts: {e}",
                    retries=attempt + 1
                )
            await asyncio.sleep(0.5 * (attempt + 1))
