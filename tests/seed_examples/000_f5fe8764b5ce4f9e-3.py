# Seed: 000_f5fe8764b5ce4f9e.txt, lines 72-78, copied verbatim below this header.

box = boxlite.SimpleBox(image="python:slim")
await box.start()

try:
    await box.exec("echo", "hello")
finally:
    await box.shutdown()
