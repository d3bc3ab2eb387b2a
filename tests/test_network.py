"""Networking through passt: outbound traffic works, the host's own services are out of reach
by every address of the host (and link-local addresses too) unless a port is forwarded,
forwards bind to 127.0.0.1, allow-lists (``BoxOptions(network=...)``) admit only what they list,
and a box without network has no network device at all.

The egress tests run the engine inside network namespaces the test builds (``netlab.py``) and
assert on what the services there logged. No test traffic leaves this machine."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boxlite
import netlab
import pytest
from netlab import GATEWAY, HOST_MAIN, HOST_MAIN6, HOST_SECOND, HOST_SECOND6, METADATA, OTHER, PORT, THIRD, NetLab

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


async def test_a_host_port_already_taken_is_a_conflict_and_nothing_is_left(
    runtime: boxlite.Boxlite, busybox: str
) -> None:
    # passt would start without the forward and the box would boot with it silently missing.
    before = set((runtime.home / "boxes").iterdir())
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(boxlite.BoxliteConflictError, match=rf"host port {taken}/tcp is not free"):
            await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, ports=[(taken, 80)]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        taken = holder.getsockname()[1]
        with pytest.raises(boxlite.BoxliteConflictError, match=rf"host port {taken}/udp is not free"):
            await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, ports=[(taken, 53, "udp")]))
    assert set((runtime.home / "boxes").iterdir()) == before


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    why = netlab.can_build()
    if why is not None:
        pytest.skip(why)
    lab = NetLab(tmp_path_factory.mktemp("netlab"))
    try:
        yield lab
    finally:
        lab.close()


# Every way to the host's service: both addresses of both interfaces, loopback, unspecified,
# IPv4-mapped IPv6; and the metadata service (link-local), over TCP and UDP.
ATTACKS: list[tuple[str, str, int]] = [
    ("tcp", HOST_SECOND, PORT),
    ("udp", HOST_SECOND, PORT),
    ("tcp", HOST_MAIN, PORT),
    ("tcp", "127.0.0.1", PORT),
    ("tcp", "0.0.0.0", PORT),
    ("tcp", HOST_SECOND6, PORT),
    ("udp", HOST_SECOND6, PORT),
    ("tcp", HOST_MAIN6, PORT),
    ("tcp", "::ffff:" + HOST_SECOND, PORT),
    ("tcp", "::1", PORT),
    ("tcp", METADATA, 80),
    ("udp", METADATA, 80),
]


@pytest.mark.parametrize("user", [None, 65534], ids=["root", "unprivileged"])
@pytest.mark.hostile
def test_host_services_are_unreachable(lab: NetLab, python_image: str, tmp_path: Path, user: int | None) -> None:
    """A service on 0.0.0.0/:: of the host is reached through no host address and no
    link-local address; the gateway's service (the positive control) and a forwarded port work."""
    lab.clear()
    image = python_image
    home = tmp_path / "home"
    if user is not None:
        # The image and home must be reachable by that user: a copy of the layout outside root's
        # cache, in a directory every user can traverse.
        shared = Path(tempfile.mkdtemp(prefix="boxlite-egress-"))
        shared.chmod(0o755)
        image = str(shutil.copytree(python_image, shared / "python"))
        home = shared / "home"
        home.mkdir()
        for path in [shared / "python", *Path(image).rglob("*"), home]:
            os.chown(path, user, user)
    forward = netlab.free_port()
    try:
        result = lab.run_box(
            home,
            image,
            {"ports": [(forward, 8000)]},
            [*ATTACKS, ("tcp", GATEWAY, PORT)],
            forward=forward,
            as_user=user,
        )
    finally:
        if user is not None:
            shutil.rmtree(home.parent, ignore_errors=True)
    probes = result["probes"]
    assert isinstance(probes, list) and len(probes) == len(ATTACKS) + 1, probes
    assert probes[-1] == "ok", f"positive control: the gateway's service must be reachable: {probes}"
    assert netlab.wait_until(lambda: lab.log("gateway") != [])
    assert result["forwarded"] == 200, "a forwarded port reaches the box"
    assert lab.log("host") == [], f"the host's service was reached: {lab.log('host')} (probes: {probes})"
    assert lab.log("metadata") == [], f"the metadata service was reached: {lab.log('metadata')}"
    assert lab.log("second_peer") == []


@pytest.mark.hostile
def test_allow_list_admits_only_what_it_lists(lab: NetLab, python_image: str, tmp_path: Path) -> None:
    lab.clear()
    home = tmp_path / "home"
    result = lab.run_box(
        home,
        python_image,
        {"network": {"allow_net": ["allowed.test", f"{THIRD}/32"]}},
        [
            ("dns", "allowed.test", PORT),  # by name: resolves (DNS let through) and connects
            ("tcp", THIRD, PORT),  # by network
            ("tcp", OTHER, PORT),  # not listed
            ("dns", "refused.test", PORT),  # not listed: its query never reaches the server
            ("tcp", HOST_SECOND, PORT),  # the host stays out of reach
        ],
    )
    probes = result["probes"]
    assert isinstance(probes, list), probes
    assert probes[0] == "ok" and probes[1] == "ok", probes
    assert probes[2] != "ok" and probes[3] != "ok" and probes[4] != "ok", probes
    assert netlab.wait_until(lambda: len(lab.log("gateway")) == 1 and len(lab.log("third")) == 1)
    assert lab.log("other") == [], "an address not on the allow-list was reached"
    assert lab.log("host") == []
    dns = lab.log("dns")
    assert "dns allowed.test" in dns and not any("refused.test" in q for q in dns), dns


async def test_bad_allow_lists_are_refused(runtime: boxlite.Boxlite, busybox: str) -> None:
    for entry, says in [("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"), ("example.com:443", "ports")]:
        with pytest.raises(boxlite.InvalidOptionError, match=says):
            await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, network=[entry]))
    with pytest.raises(boxlite.InvalidOptionError, match="needs the network"):
        await runtime.create(
            boxlite.BoxOptions(rootfs_path=busybox, network=boxlite.NetworkSpec(mode="disabled", allow_net=["a.test"]))
        )
    spec = boxlite.BoxOptions(rootfs_path=busybox, network=["example.com", "10.0.0.0/8"]).network
    assert spec == boxlite.NetworkSpec(allow_net=["example.com", "10.0.0.0/8"])


# -- UDP forwards ---------------------------------------------------------------------------

UDP_RECEIVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
print("ready", flush=True)
data, peer = s.recvfrom(100)
print("got", data.decode(), peer[0], flush=True)
"""

# Runs in a box whose UDP port 5353 is forwarded: tries to reach the host's loopback UDP
# service on port argv[1] through the gateway (the address passt shows the host's loopback
# clients as), from the forwarded port (whose datagrams passt sends through the forward's own
# socket, bound to the host's 127.0.0.1) and from an ephemeral port, and through 127.0.0.1.
UDP_TO_HOST_LOOPBACK = """
import socket, struct, sys
target = int(sys.argv[1])
gateway = None
for line in open("/proc/net/route").read().splitlines()[1:]:
    fields = line.split()
    if fields[1] == "00000000":
        gateway = socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
forwarded = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
forwarded.bind(("0.0.0.0", 5353))
ephemeral = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    for sock in (forwarded, ephemeral):
        for address in (gateway, "127.0.0.1"):
            sock.sendto(b"from the box", (address, target))
print("sent", gateway, flush=True)
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_udp_forward_delivers_datagrams_to_the_box(runtime: boxlite.Boxlite, python_image: str) -> None:
    """A datagram to 127.0.0.1:host_port reaches the box, which sees it come from its gateway.

    Replies do not come back to the host's client: passt (Debian's 2023-03 build) addresses
    them to the gateway, and mapping the gateway to the host's loopback (`--map-gw`) would hand
    the box every loopback UDP service of the host (see the next test)."""
    port = free_udp_port()
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=python_image, memory_mib=512, ports=[(port, 5353, "udp")])
    )
    try:
        server = await box.exec("python3", ["-c", UDP_RECEIVER])
        stdout = server.stdout()
        assert await asyncio.wait_for(stdout.readline(), 60) == b"ready\n"
        received = asyncio.ensure_future(stdout.readline())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for _ in range(30):  # UDP may drop a datagram while the forward settles: resend
                client.sendto(b"ping", ("127.0.0.1", port))
                done, _ = await asyncio.wait({received}, timeout=1)
                if done:
                    break
        gateway = (await box.run("sh", ["-c", "awk '$2 == \"00000000\" {print $3}' /proc/net/route"])).stdout
        gateway_ip = socket.inet_ntoa(int(gateway.strip(), 16).to_bytes(4, "little"))
        assert await asyncio.wait_for(received, 1) == f"got ping {gateway_ip}\n".encode()
        assert (await asyncio.wait_for(server.wait(), 30)).exit_code == 0
    finally:
        await box.stop()


# Runs in the lab's host namespace (the box's gateway is the lab's, so nothing leaves this
# machine): a loopback UDP service, a box with a UDP forward that a host client has used, and
# the attack above; prints what the forward delivered and what the service received.
UDP_FORWARD_DRIVER = r"""
import asyncio, json, socket, sys
import boxlite
home, image, receiver, attack = sys.argv[1:5]

def udp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s

async def main():
    service, client, probe = udp_socket(), udp_socket(), udp_socket()
    service.setblocking(False)
    forward = probe.getsockname()[1]
    probe.close()
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=image, memory_mib=256, ports=[(forward, 5353, "udp")])
    )
    try:
        server = await box.exec("python3", ["-c", receiver])
        stdout = server.stdout()
        assert await asyncio.wait_for(stdout.readline(), 60) == b"ready\n"
        got = asyncio.ensure_future(stdout.readline())
        for _ in range(30):
            client.sendto(b"ping", ("127.0.0.1", forward))
            done, _ = await asyncio.wait({got}, timeout=1)
            if done:
                break
        delivered = (await asyncio.wait_for(got, 1)).decode()
        await server.wait()
        sent = await box.run("python3", ["-c", attack, str(service.getsockname()[1])])
        await asyncio.sleep(3)
        try:
            leaked = service.recv(100).decode(errors="replace")
        except BlockingIOError:
            leaked = None
        print(json.dumps({"delivered": delivered, "attack": sent.stdout + sent.stderr, "leaked": leaked}))
    finally:
        await box.stop()

asyncio.run(main())
"""


@pytest.mark.hostile
def test_a_udp_forward_opens_no_way_to_the_hosts_loopback_services(
    lab: NetLab, python_image: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    command = [sys.executable, "-c", UDP_FORWARD_DRIVER, str(home), python_image, UDP_RECEIVER, UDP_TO_HOST_LOOPBACK]
    done = subprocess.run(
        lab.in_host(*command), capture_output=True, text=True, timeout=400, env={**os.environ, "HOME": str(home)}
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["delivered"] == f"got ping {GATEWAY}\n", "the forward works (positive control)"
    assert result["attack"].startswith(f"sent {GATEWAY}"), result["attack"]
    assert result["leaked"] is None, f"the host's loopback service got {result['leaked']!r} from the box"


#: Starts a kept box in the lab and leaves it running: ``os._exit`` skips the runtime's at-exit
#: stop, as ``boxlite run -d`` does. Prints the box id.
START_KEPT_AND_LEAVE = """
import asyncio, json, os, sys
import boxlite
async def main():
    rt = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
    box = await rt.create(boxlite.BoxOptions(rootfs_path=sys.argv[2], memory_mib=256, auto_remove=False,
                                             network=json.loads(sys.argv[3])))
    print(json.dumps({"id": box.id}), flush=True)
    os._exit(0)
asyncio.run(main())
"""

#: Reattaches that box from another process, runs the probes in it, then removes it.
PROBE_KEPT = """
import asyncio, json, sys
import boxlite
PROBE = '''
import json, socket, sys
out = []
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=4).close()
        out.append("ok")
    except OSError as e:
        out.append(type(e).__name__)
print(json.dumps(out))
'''
async def main():
    rt = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
    box = await rt.get(sys.argv[2])
    try:
        run = await box.run("python3", ["-c", PROBE, sys.argv[3]], timeout=120)
        print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else json.dumps(run.stderr))
    finally:
        await box.stop()
        await rt.remove(box.id)
asyncio.run(main())
"""


@pytest.mark.hostile
def test_a_kept_box_keeps_a_checked_network_after_its_starter_exits(
    lab: NetLab, python_image: str, tmp_path: Path
) -> None:
    """The process that started a kept box exits without stopping it (as ``boxlite run -d``
    does): the box still reaches what its policy allows, and the host and what its allow-list
    leaves out stay refused, so its egress is still supervised, not unchecked and not cut off."""
    lab.clear()
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home)}
    network = {"allow_net": [f"{GATEWAY}/32", f"{THIRD}/32"]}
    started = subprocess.run(
        lab.in_host(sys.executable, "-c", START_KEPT_AND_LEAVE, str(home), python_image, json.dumps(network)),
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-4000:]
    box_id = json.loads(started.stdout.strip().splitlines()[-1])["id"]
    assert _egress_supervisors(box_id), "a kept box's network is supervised by a process of its own"
    probes = [(GATEWAY, PORT), (THIRD, PORT), (OTHER, PORT), (HOST_SECOND, PORT), (HOST_MAIN, PORT)]
    probed = subprocess.run(
        lab.in_host(sys.executable, "-c", PROBE_KEPT, str(home), box_id, json.dumps(probes)),
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert probed.returncode == 0, probed.stderr[-4000:]
    results = json.loads(probed.stdout.strip().splitlines()[-1])
    assert results[:2] == ["ok", "ok"], f"allowed destinations after the starter exited: {results}"
    assert all(r != "ok" for r in results[2:]), f"refused destinations after the starter exited: {results}"
    assert netlab.wait_until(lambda: len(lab.log("gateway")) == 1 and len(lab.log("third")) == 1)
    assert lab.log("other") == [] and lab.log("host") == [] and lab.log("second_peer") == []
    # The supervisor process ends with the box's network.
    assert netlab.wait_until(lambda: not _egress_supervisors(box_id), timeout=30), _egress_supervisors(box_id)


def _egress_supervisors(box_id: str) -> list[int]:
    """Live egress supervisor processes (the engine's ``egress::detached``) of box ``box_id``:
    their command line carries the box's spec, with its id."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"supervise_egress" in cmdline and box_id.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
