"""``browser``: Debian bookworm (``debootstrap --variant=minbase``) with Chromium, for the BrowserBox
tests and benchmark, which need no network.

What is in it and why:

- ``chromium`` (Debian's build, with only its hard dependencies): the browser BrowserBox starts
  headless with the DevTools protocol (CDP) on.
- ``dbus-x11``: only because debootstrap does not resolve alternatives: Chromium's GTK pulls in
  ``dconf-service``, which needs a ``dbus-session-bus``, and without one named the tree fails to
  configure. Chromium runs without a session bus (it logs that it has none).
- ``fonts-dejavu-core``: one small font family, so that pages render text (screenshots, layout).
- ``socat``: Chromium's DevTools listener binds to the guest's loopback only, which forwarded ports
  do not reach; BrowserBox bridges it to the box's address with socat (see ``boxlite/browserbox.py``).
- a user ``browser`` (1000:1000, home ``/home/browser``): the browser never runs as root.
- ``/usr/local/bin/start-browser``: the image's command; starts the same headless Chromium with CDP
  on guest port 9222 (``boxlite run -p 9222:9222 IMAGE``). BrowserBox does not use it: it starts
  the browser itself, so that any image with Chromium (upstream's Playwright image too) works.
"""

from __future__ import annotations

import os
from pathlib import Path

from imagebuild.debian import build_debian_image, debian_inputs
from imagebuild.spec import ImageSpec

PACKAGES = ("chromium", "dbus-x11", "fonts-dejavu-core", "socat")

USER, UID = "browser", 1000

START_SCRIPT = """#!/bin/sh
# Headless Chromium with the DevTools protocol on port 9222 of the box, as user browser.
# Chromium listens on 127.0.0.1:9223 only; socat makes it reachable on the box's address.
set -e
[ "$(id -u)" = 0 ] && exec setpriv --reuid=1000 --regid=1000 --init-groups -- "$0" "$@"
export HOME=/home/browser
socat TCP-LISTEN:9222,fork,reuseaddr TCP:127.0.0.1:9223 &
exec chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \\
    --user-data-dir=/home/browser/profile --remote-debugging-address=127.0.0.1 \\
    --remote-debugging-port=9223 --remote-allow-origins=* "$@" about:blank
"""


def _customize(root: Path) -> None:
    with (root / "etc/passwd").open("a") as f:
        f.write(f"{USER}:x:{UID}:{UID}:BoxLite browser:/home/{USER}:/bin/sh\n")
    with (root / "etc/group").open("a") as f:
        f.write(f"{USER}:x:{UID}:\n")
    with (root / "etc/shadow").open("a") as f:
        f.write(f"{USER}:*:19000:0:99999:7:::\n")
    home = root / "home" / USER
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    os.chown(home, UID, UID)
    script = root / "usr/local/bin/start-browser"
    script.write_text(START_SCRIPT)
    script.chmod(0o755)


SPEC = ImageSpec(
    "browser",
    "bookworm-chromium",
    inputs=lambda: debian_inputs(PACKAGES),
    build=lambda ctx: build_debian_image(ctx, PACKAGES, cmd=["/usr/local/bin/start-browser"], customize=_customize),
    default=False,
)
