# Seed: 001_a242f1084a3ed0b8.txt, lines 55-64, copied verbatim below this header.

import asyncio
import boxlite

async def main():
    async with boxlite.SimpleBox(image="python:slim") as box:
        # Execute Python code in isolated VM
        result = await box.exec("python3", "-c", "print('Hello from BoxLite!')")
        print(result.stdout)

asyncio.run(main())
