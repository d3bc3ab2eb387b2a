"""``desktop``: a small X desktop for ComputerBox's tests, from Debian bookworm packages.

What is in it and why:

- ``xvfb``: the X server, a 1024x768x24 framebuffer on display ``:1`` (no GPU, no input devices);
- ``icewm``: the window manager with its taskbar (one process: frames, focus, panel, menu);
- ``xdotool``: mouse and keyboard input and the queries ComputerBox's methods run;
- ``scrot``: screenshots as PNG; ``x11-utils``: ``xdpyinfo``/``xprop``/``xwininfo`` for readiness;
- ``xterm`` (a terminal) and ``x11-apps`` (``xedit``, a text editor, and the small X demos);
- ``xfonts-base``: the core fonts xterm and xedit draw with (icewm brings DejaVu for Xft);
- ``x11vnc`` and ``python3-websockify``: the live desktop for a person's browser, noVNC on
  port 3000 (HTTP) and 3001 (HTTPS, a self-signed certificate made at build time).

noVNC's web client is static files: they are unpacked from Debian's ``novnc`` package
(``apt-get download`` and ``dpkg-deb -x``, ``/usr/share/novnc`` only) rather than installed,
because the package depends on Node.js and on OpenStack's oslo libraries (whose configuration
fails under debootstrap), none of which the web client uses.

The desktop runs as the unprivileged user ``user`` (1000:1000, home ``/home/user``).
``/usr/local/bin/boxlite-desktop`` starts it: it is run as root (the engine does not run an
image's entrypoint; ComputerBox runs this script, whose presence is how it recognises this image)
and starts every program as ``user``, logs in ``/tmp/boxlite-desktop/``, and stays in the
foreground while they run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from imagebuild.debian import build_debian_image, debian_inputs
from imagebuild.spec import BuildContext, ImageSpec

PACKAGES = (
    "xvfb",
    "icewm",
    "xdotool",
    "scrot",
    "x11-utils",
    "xterm",
    "x11-apps",
    "xfonts-base",
    "x11vnc",
    "python3-websockify",
)
#: The Debian package whose /usr/share/novnc (the noVNC web client) is unpacked into the image.
WEB_CLIENT_PACKAGE = "novnc"

USER, UID, HOME = "user", 1000, "/home/user"

START_SCRIPT = """#!/bin/sh
# Starts the desktop: Xvfb, icewm, then x11vnc and noVNC (websockify), each as the user "user".
# Run as root; stays in the foreground while they run. Logs in /tmp/boxlite-desktop/.
set -eu
: "${DISPLAY:=:1}"
: "${BOXLITE_SCREEN_WIDTH:=1024}"
: "${BOXLITE_SCREEN_HEIGHT:=768}"
: "${BOXLITE_GUI_HTTP_PORT:=3000}"
: "${BOXLITE_GUI_HTTPS_PORT:=3001}"
export DISPLAY
logs=/tmp/boxlite-desktop
mkdir -p "$logs" /tmp/.X11-unix
chown user:user "$logs"
chmod 1777 /tmp/.X11-unix
as_user() {
    setpriv --reuid=user --regid=user --init-groups \\
        env HOME=/home/user USER=user LOGNAME=user SHELL=/bin/sh "$@"
}
as_user Xvfb "$DISPLAY" -screen 0 "${BOXLITE_SCREEN_WIDTH}x${BOXLITE_SCREEN_HEIGHT}x24" \\
    -nolisten tcp -dpi 96 -noreset >"$logs/xvfb.log" 2>&1 &
tries=0
until xdpyinfo >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 600 ]; then
        echo "boxlite-desktop: the X server did not start; its log:" >&2
        cat "$logs/xvfb.log" >&2
        exit 1
    fi
    sleep 0.1
done
(cd /home/user && as_user icewm >"$logs/icewm.log" 2>&1) &
# The web desktop starts once icewm has the display, so that they do not compete for the CPU.
tries=0
until xprop -root _NET_SUPPORTING_WM_CHECK 2>/dev/null | grep -q 'window id'; do
    tries=$((tries + 1))
    [ "$tries" -gt 600 ] && break
    sleep 0.1
done
as_user x11vnc -display "$DISPLAY" -forever -shared -nopw -localhost -rfbport 5900 \\
    -noxdamage -quiet >"$logs/x11vnc.log" 2>&1 &
as_user websockify --web /usr/share/novnc "$BOXLITE_GUI_HTTP_PORT" 127.0.0.1:5900 \\
    >"$logs/novnc-http.log" 2>&1 &
as_user websockify --web /usr/share/novnc --cert /etc/boxlite-desktop/cert.pem \\
    --key /etc/boxlite-desktop/key.pem --ssl-only "$BOXLITE_GUI_HTTPS_PORT" 127.0.0.1:5900 \\
    >"$logs/novnc-https.log" 2>&1 &
wait
"""

ICEWM_PREFERENCES = """# icewm for an emulated VM: no clock or monitors redrawing, no workspaces, no sounds.
TaskBarShowClock=0
TaskBarShowCPUStatus=0
TaskBarShowMEMStatus=0
TaskBarShowNetStatus=0
TaskBarShowMailboxStatus=0
TaskBarShowWorkspaces=0
TaskBarShowWindowListMenu=0
ShowProgramsMenu=1
DesktopBackgroundColor="rgb:30/50/70"
WorkspaceNames=" 1 "
"""

#: The web page noVNC serves at ``/``: straight to the client, connecting on the page's own port.
INDEX_HTML = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>BoxLite desktop</title>\n'
    '<meta http-equiv="refresh" content="0; url=vnc.html?autoconnect=1&amp;resize=scale">\n'
    '</head><body><a href="vnc.html?autoconnect=1&amp;resize=scale">BoxLite desktop (noVNC)</a>'
    "</body></html>\n"
)


def _write(path: Path, text: str, mode: int, owner: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chown(path, owner, owner)
    os.chmod(path, mode)


def _customize(root: Path) -> None:
    # The user: written into the account files, as useradd would, without a date of building.
    for name, line in (
        ("passwd", f"{USER}:x:{UID}:{UID}:Desktop user:{HOME}:/bin/sh\n"),
        ("group", f"{USER}:x:{UID}:\n"),
        ("shadow", f"{USER}:*:19723:0:99999:7:::\n"),
    ):
        with open(root / "etc" / name, "a") as f:
            f.write(line)
    home = root / HOME.lstrip("/")
    home.mkdir(parents=True)
    os.chown(home, UID, UID)
    os.chmod(home, 0o755)
    _write(home / ".icewm/preferences", ICEWM_PREFERENCES, 0o644, UID)
    os.chown(home / ".icewm", UID, UID)
    _write(root / "usr/local/bin/boxlite-desktop", START_SCRIPT, 0o755)
    # The HTTPS port's self-signed certificate (a test image: the key is no secret).
    cert_dir = root / "etc/boxlite-desktop"
    cert_dir.mkdir()
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=localhost"]
    subprocess.run(
        [*openssl, "-keyout", str(cert_dir / "key.pem"), "-out", str(cert_dir / "cert.pem")],
        check=True,
        capture_output=True,
    )
    for name, mode in (("key.pem", 0o600), ("cert.pem", 0o644)):
        os.chown(cert_dir / name, UID, UID)
        os.chmod(cert_dir / name, mode)
    os.chmod(cert_dir, 0o755)


def _add_web_client(root: Path, work: Path) -> None:
    """noVNC's web client: /usr/share/novnc of Debian's novnc package, and an index page."""
    download = work / "novnc-deb"
    download.mkdir()
    subprocess.run(["apt-get", "download", WEB_CLIENT_PACKAGE], cwd=download, check=True, capture_output=True)
    (deb,) = download.glob("*.deb")
    unpacked = work / "novnc-files"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True, capture_output=True)
    shutil.copytree(unpacked / "usr/share/novnc", root / "usr/share/novnc", symlinks=True)
    for dirpath, dirnames, filenames in os.walk(root / "usr/share/novnc"):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)
    _write(root / "usr/share/novnc/index.html", INDEX_HTML, 0o644)


def _build(ctx: BuildContext) -> dict[str, Any]:
    def customize(root: Path) -> None:
        _customize(root)
        _add_web_client(root, ctx.work)

    return build_debian_image(
        ctx,
        PACKAGES,
        cmd=["/usr/local/bin/boxlite-desktop"],
        env=["DISPLAY=:1"],
        customize=customize,
        working_dir=HOME,
    )


SPEC = ImageSpec(
    "desktop",
    "bookworm-desktop",
    inputs=lambda: {**debian_inputs(PACKAGES), "web_client": WEB_CLIENT_PACKAGE},
    build=_build,
    default=False,
)
