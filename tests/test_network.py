"""Networking through passt: outbound traffic works, the host's own services are out of reach
(its loopback and its own address) unless a port is forwarded, forwards bind to 127.0.0.1, and a
box without network has no network device at all."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boxlite
import pytest

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as e:
    print("refused", type(e).__name__)
"""


def host_address() -> str:
    """The host's address on its default route (what passt gives the guest too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.123", 9))  # no packet is sent for a UDP connect
        return str(s.getsockname()[0])


@pytest.fixture(scope="module")
def host_service() -> Iterator[int]:
    """An HTTP server on every host address (0.0.0.0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "0.0.0.0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                import time

                time.sleep(0.05)
        yield port
    finally:
        server.kill()
        server.wait()


@pytest.fixture(scope="module")
def peer() -> Iterator[str]:
    """A server on "another machine": a network namespace behind a veth pair, routed by the host."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a second machine is simulated with a network namespace, which needs root and iproute2")
    ns = f"boxlite-peer-{os.getpid()}"
    cmds = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", f"blp{os.getpid() % 10000}", "type", "veth", "peer", "name", "blpeer0", "netns", ns],
        ["ip", "addr", "add", "10.213.0.1/30", "dev", f"blp{os.getpid() % 10000}"],
        ["ip", "link", "set", f"blp{os.getpid() % 10000}", "up"],
        ["ip", "-n", ns, "addr", "add", "10.213.0.2/30", "dev", "blpeer0"],
        ["ip", "-n", ns, "link", "set", "blpeer0", "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
    ]
    server = None
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", "8123", "--bind", "10.213.0.2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                socket.create_connection(("10.213.0.2", 8123), timeout=0.2).close()
                break
            except OSError:
                import time

                time.sleep(0.05)
        yield "10.213.0.2"
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
async def net_box(runtime: boxlite.Boxlite, python_image: str) -> boxlite.Box:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=python_image, memory_mib=256, ports=[(18573, 8000)]))
    yield box  # type: ignore[misc]
    await box.stop()


async def connect(box: boxlite.Box, host: str, port: int) -> str:
    result = await box.run("python3", ["-c", CONNECT, host, str(port)], timeout=30)
    return result.stdout.strip()


async def test_the_box_gets_the_hosts_address_and_route(net_box: boxlite.Box) -> None:
    result = await net_box.run("cat", ["/proc/net/route", "/etc/resolv.conf"])
    assert "eth0" in result.stdout and "00000000" in result.stdout, result.stdout
    probe = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.connect(('192.0.2.123', 9)); print(s.getsockname()[0])"
    )
    addr = await net_box.run("python3", ["-c", probe])
    assert addr.stdout.strip() == host_address(), "passt gives the box the host's own address"


async def test_host_services_are_unreachable(net_box: boxlite.Box, host_service: int) -> None:
    # Sanity: the service answers on the host itself.
    socket.create_connection((host_address(), host_service), timeout=2).close()
    assert (await connect(net_box, "127.0.0.1", host_service)).startswith("refused")
    assert (await connect(net_box, host_address(), host_service)).startswith("refused")


async def test_outbound_traffic_to_other_machines_works(net_box: boxlite.Box, peer: str) -> None:
    assert await connect(net_box, peer, 8123) == "connected"
    page = await net_box.run(
        "python3",
        ["-c", f"import urllib.request; print(urllib.request.urlopen('http://{peer}:8123/', timeout=5).status)"],
    )
    assert page.stdout.strip() == "200", page.stderr


async def test_forwarded_port_reaches_the_box_on_loopback_only(net_box: boxlite.Box) -> None:
    server = await net_box.exec("python3", ["-m", "http.server", "8000", "--directory", "/etc"])
    try:
        body = b""
        for _ in range(100):
            try:
                body = urllib.request.urlopen("http://127.0.0.1:18573/hostname", timeout=5).read()
                break
            except OSError:
                import asyncio

                await asyncio.sleep(0.2)
        assert body.strip() != b"", "the forwarded port answered with the box's /etc/hostname"
        with pytest.raises(OSError):
            socket.create_connection((host_address(), 18573), timeout=2).close()
    finally:
        await server.kill()
        await server.wait()


@pytest.mark.parametrize("switch", ["security", "box_options"])
async def test_network_disabled_means_no_device(runtime: boxlite.Boxlite, busybox: str, switch: str) -> None:
    from boxlite.boxlite import SecurityOptions

    options = boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256)
    if switch == "security":
        security = SecurityOptions.maximum()
        security.network_enabled = False
        options.security = security
    else:
        options.network_enabled = False
    box = await runtime.create(options)
    try:
        devices = await box.run("ls", ["/sys/class/net"])
        assert devices.stdout.split() == ["lo"]
        assert not Path(box.info().dir, "passt.log").exists(), "no passt was started"
    finally:
        await box.stop()


async def test_bad_port_forwards_are_refused(runtime: boxlite.Boxlite, busybox: str) -> None:
    with pytest.raises(boxlite.InvalidOptionError, match="sctp"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, ports=[(8080, 80, "sctp")]))
    with pytest.raises(boxlite.InvalidOptionError, match="need the network"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, ports=[(8080, 80)], network_enabled=False))
    with pytest.raises(boxlite.InvalidOptionError, match="twice"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, ports=[(8080, 80), (8080, 81)]))
