"""UDP port forwards (``ports=[(host_port, guest_port, "udp")]``): a datagram sent to
127.0.0.1:host_port on the host reaches the box's guest_port.

(Its topic is networking; it lives apart from test_network.py only because that file had
another owner when it was written.)"""

from __future__ import annotations

import asyncio
import socket

import boxlite

RECEIVE_ONE = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
print("ready", flush=True)
data, peer = s.recvfrom(100)
print("got", data.decode(), flush=True)
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_udp_forward_delivers_datagrams_to_the_box(runtime: boxlite.Boxlite, python_image: str) -> None:
    port = free_udp_port()
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=python_image, memory_mib=512, ports=[(port, 5353, "udp")])
    )
    try:
        server = await box.exec("python3", ["-c", RECEIVE_ONE])
        stdout = server.stdout()
        assert await asyncio.wait_for(stdout.readline(), 60) == b"ready\n"
        received = asyncio.ensure_future(stdout.readline())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for _ in range(30):  # UDP may drop a datagram while the forward settles: resend
                client.sendto(b"ping", ("127.0.0.1", port))
                done, _ = await asyncio.wait({received}, timeout=1)
                if done:
                    break
        assert await asyncio.wait_for(received, 1) == b"got ping\n"
        assert (await asyncio.wait_for(server.wait(), 30)).exit_code == 0
    finally:
        await box.stop()
