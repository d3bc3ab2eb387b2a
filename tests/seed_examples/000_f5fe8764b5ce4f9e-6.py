# Seed: 000_f5fe8764b5ce4f9e.txt, lines 124-130, copied verbatim below this header.

from boxlite.boxlite import SecurityOptions

async with boxlite.SimpleBox(
    image="python:slim",
    security=SecurityOptions.maximum(),  # Maximum isolation
) as box:
    await box.exec("echo", "locked down")
