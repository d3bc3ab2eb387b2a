# Seed: 000_f5fe8764b5ce4f9e.txt, lines 65-67, copied verbatim below this header.

async with boxlite.SimpleBox(image="python:slim") as box:
    await box.exec("echo", "hello")
    # Box is automatically stopped when the block exits
