"""The main job: boot a box from the locally built Debian+python image and run Python in it.

    uv run python examples/hello.py [OCI_LAYOUT]

Without an argument the image is built (once, then cached) by tests/images/build_images.py.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import boxlite

REPO = Path(__file__).resolve().parent.parent


def default_image() -> str:
    sys.path.insert(0, str(REPO / "tests" / "images"))
    from build_images import build_images

    return str(build_images(["python"])["python"])


async def main(layout: str) -> None:
    started = time.perf_counter()
    async with boxlite.SimpleBox(rootfs_path=layout, memory_mib=512) as box:
        booted = time.perf_counter()
        code = "import platform, sys; print(f'{2 + 2} from Python {sys.version.split()[0]} on {platform.release()}')"
        result = await box.exec("python3", "-c", code)
        info = box.box.info()
        print(result.stdout, end="")
        print(f"guest kernel:  {info.kernel_release}")
        print(f"accelerator:   {info.accel} ({info.accel_reason})")
        print(f"box started in {booted - started:.2f} s; exit code {result.exit_code}")
        if result.exit_code != 0:
            print(result.stderr, file=sys.stderr)
            raise SystemExit(result.exit_code)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else default_image()))
