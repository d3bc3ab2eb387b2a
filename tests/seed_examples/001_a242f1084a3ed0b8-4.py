# Seed: 001_a242f1084a3ed0b8.txt, lines 297-320, copied verbatim below this header.

import boxlite

# Resource configuration
async with boxlite.SimpleBox(
    image="python:3.11-slim",
    cpu=2,              # CPU cores
    memory=2048,        # MB RAM
    disk_size=10240,    # MB disk
) as box:
    pass

# Environment variables
async with boxlite.SimpleBox(image="python:slim") as box:
    result = await box.exec(
        "python3", "-c", "import os; print(os.environ.get('MY_VAR'))",
        env={"MY_VAR": "hello"}
    )

# Mount host directory (read-only)
async with boxlite.SimpleBox(
    image="python:slim",
    mounts=[("/host/data", "/data", "ro")]
) as box:
    result = await box.exec("ls", "-la", "/data")
