"""A small network built from network namespaces, for the egress tests.

Nothing here sends a packet outside this machine: every address lives inside the namespaces
the lab creates (and removes again).

- ``host`` namespace: the engine runs here (through ``ip netns exec``), as it would on a host
  with two interfaces: ``bh0`` 10.231.0.1/24 + fd31::1/64 (its default route, so passt gives
  the box this address) and ``bh1`` 10.232.0.1/24 + fd32::1/64 (a second interface, as
  docker0 would be). A logging service listens on every address there (0.0.0.0 and ::), TCP
  and UDP: the box must never reach it.
- ``gateway`` namespace: the rest of the world. 10.231.0.2 (gateway, DNS server), 10.231.0.3
  and 10.231.0.4 (more services) and 169.254.169.254 (a cloud metadata service), each with a
  logging service.

Each service appends one line per connection or datagram to its own log, so a test asserts on
what the service saw, not on what the box believed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from boxlite._ports import free_port as free_port  # the tests' one free-port helper

HOST_MAIN = "10.231.0.1"
HOST_SECOND = "10.232.0.1"
HOST_MAIN6 = "fd31::1"
HOST_SECOND6 = "fd32::1"
GATEWAY = "10.231.0.2"
OTHER = "10.231.0.3"
THIRD = "10.231.0.4"
METADATA = "169.254.169.254"
PORT = 8123
NAMES = {"allowed.test": GATEWAY, "refused.test": OTHER, "third.test": THIRD}

# One process per namespace serves every (family, address, port, protocol) it is given and
# logs what reaches it: "tcp <peer>" per connection, "udp <peer> <payload>" per datagram,
# "dns <name>" per DNS query (answered from NAMES, NXDOMAIN otherwise).
SERVER = r"""
import json, socket, sys, threading
specs, names, log_dir = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
lock = threading.Lock()
def log(name, line):
    with lock, open(f"{log_dir}/{name}.log", "a") as f:
        f.write(line + "\n")
def tcp(s, name):
    while True:
        c, peer = s.accept()
        log(name, f"tcp {peer[0]}")
        try:
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        finally:
            c.close()
def dns_name(q):
    pos, labels = 12, []
    while q[pos]:
        labels.append(q[pos + 1 : pos + 1 + q[pos]].decode().lower()); pos += 1 + q[pos]
    return ".".join(labels), pos + 5
def udp(s, name, is_dns):
    while True:
        data, peer = s.recvfrom(2048)
        if not is_dns:
            log(name, f"udp {peer[0]} {data[:40]!r}"); continue
        qname, end = dns_name(data)
        log(name, f"dns {qname}")
        addr, qtype = names.get(qname), data[end - 4 : end - 2]
        flags = b"\x81\x80" if addr else b"\x81\x83"
        answers = 1 if addr and qtype == b"\x00\x01" else 0
        reply = data[:2] + flags + data[4:6] + answers.to_bytes(2, "big") + b"\x00\x00\x00\x00" + data[12:end]
        if answers:
            reply += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(addr)
        s.sendto(reply, peer)
for name, family, addr, port, proto in specs:
    fam = socket.AF_INET6 if family == 6 else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    if proto == "tcp":
        s.listen(16)
        threading.Thread(target=tcp, args=(s, name), daemon=True).start()
    else:
        threading.Thread(target=udp, args=(s, name, proto == "dns"), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# Run in the host namespace: one box, probes from inside it, a forwarded-port check, JSON out.
DRIVER = r"""
import asyncio, json, sys, urllib.request
import boxlite
args = json.loads(sys.argv[1])
PROBE = '''
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def probe(kind, host, port):
    try:
        if kind == "tcp":
            socket.create_connection((host, port), timeout=4).close()
        elif kind == "udp":
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.sendto(b"probe", (host, port))
        elif kind == "dns":
            host = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
            socket.create_connection((host, port), timeout=4).close()
        return "ok"
    except OSError as e:
        return type(e).__name__
# All at once: they are independent, and each dropped connection waits out its timeout.
probes = json.loads(sys.argv[1])
with ThreadPoolExecutor(len(probes)) as pool:
    out = list(pool.map(lambda p: probe(*p), probes))
print(json.dumps(out))
'''
async def main():
    rt = boxlite.Boxlite(boxlite.Options(home_dir=args["home"]))
    options = boxlite.BoxOptions(rootfs_path=args["image"], memory_mib=256, **args["options"])
    box = await rt.create(options)
    try:
        env = {"RES_OPTIONS": "timeout:2 attempts:1"}
        run = await box.run("python3", ["-c", PROBE, json.dumps(args["probes"])], env=env, timeout=120)
        probes = json.loads(run.stdout.strip().splitlines()[-1]) if run.stdout.strip() else run.stderr
        forwarded = None
        if args.get("forward"):
            server = await box.exec("python3", ["-m", "http.server", "8000", "--directory", "/etc"])
            for _ in range(150):
                try:
                    forwarded = urllib.request.urlopen(f"http://127.0.0.1:{args['forward']}/hostname", timeout=5).status
                    break
                except OSError:
                    await asyncio.sleep(0.2)
            await server.kill()
        print(json.dumps({"probes": probes, "forwarded": forwarded}))
    finally:
        await box.stop()
asyncio.run(main())
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class NetLab:
    """The two namespaces, their services and logs; ``close()`` removes all of it."""

    def __init__(self, work: Path) -> None:
        tag = f"{os.getpid() % 100000}"
        self.host = f"blh{tag}"
        self.gateway = f"blg{tag}"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.logs.chmod(0o777)
        self._servers: list[subprocess.Popen[str]] = []
        self._netns_etc = Path("/etc/netns") / self.host
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        h, g = self.host, self.gateway
        _ip("netns", "add", h)
        _ip("netns", "add", g)
        _ip("-n", h, "link", "add", "bh0", "type", "veth", "peer", "name", "bg0", "netns", g)
        _ip("-n", h, "link", "add", "bh1", "type", "veth", "peer", "name", "bg1", "netns", g)
        for ns, dev, addrs in [
            (h, "bh0", [f"{HOST_MAIN}/24", f"{HOST_MAIN6}/64"]),
            (h, "bh1", [f"{HOST_SECOND}/24", f"{HOST_SECOND6}/64"]),
            (g, "bg0", [f"{GATEWAY}/24", f"{OTHER}/24", f"{THIRD}/24", "fd31::2/64", f"{METADATA}/32"]),
            (g, "bg1", ["10.232.0.2/24", "fd32::2/64"]),
        ]:
            for addr in addrs:
                _ip("-n", ns, "addr", "add", addr, "dev", dev, *(["nodad"] if ":" in addr else []))
            _ip("-n", ns, "link", "set", dev, "up")
        for ns in (h, g):
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", h, "route", "add", "default", "via", GATEWAY)
        _ip("-n", h, "-6", "route", "add", "default", "via", "fd31::2")
        # `ip netns exec` shows /etc/netns/<ns>/resolv.conf as /etc/resolv.conf.
        self._netns_etc.mkdir(parents=True, exist_ok=True)
        (self._netns_etc / "resolv.conf").write_text(f"nameserver {GATEWAY}\noptions timeout:2 attempts:1\n")
        self._serve(
            h,
            [
                ["host", 4, "0.0.0.0", PORT, "tcp"],
                ["host", 6, "::", PORT, "tcp"],
                ["host", 4, "0.0.0.0", PORT, "udp"],
                ["host", 6, "::", PORT, "udp"],
            ],
        )
        self._serve(
            g,
            [
                ["gateway", 4, GATEWAY, PORT, "tcp"],
                ["dns", 4, GATEWAY, 53, "dns"],
                ["other", 4, OTHER, PORT, "tcp"],
                ["third", 4, THIRD, PORT, "tcp"],
                ["metadata", 4, METADATA, 80, "tcp"],
                ["metadata", 4, METADATA, 80, "udp"],
                ["second_peer", 4, "10.232.0.2", PORT, "tcp"],
            ],
        )

    def _serve(self, ns: str, specs: list[list[object]]) -> None:
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-c",
                SERVER,
                json.dumps(specs),
                json.dumps(NAMES),
                str(self.logs),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._servers.append(server)
        assert server.stdout is not None
        line = server.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the lab's service in {ns} did not start")

    def log(self, name: str) -> list[str]:
        path = self.logs / f"{name}.log"
        return path.read_text().splitlines() if path.exists() else []

    def clear(self) -> None:
        for path in self.logs.glob("*.log"):
            path.unlink()

    def in_host(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.host, *command]

    def run_box(
        self,
        home: Path,
        image: str,
        options: dict[str, object],
        probes: list[tuple[str, str, int]],
        forward: int | None = None,
        as_user: int | None = None,
    ) -> dict[str, object]:
        """Boots a box with the engine inside the host namespace, runs `probes` in it and
        returns ``{"probes": [...], "forwarded": status}``."""
        payload = {"home": str(home), "image": image, "options": options, "probes": probes, "forward": forward}
        command = [sys.executable, "-c", DRIVER, json.dumps(payload)]
        if as_user is not None:
            command = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", *command]
        env = {**os.environ, "HOME": str(home)}
        done = subprocess.run(self.in_host(*command), capture_output=True, text=True, timeout=400, env=env)
        assert done.returncode == 0, done.stderr[-4000:]
        result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def close(self) -> None:
        for server in self._servers:
            server.kill()
            server.wait()
        for ns in (self.host, self.gateway):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self._netns_etc, ignore_errors=True)


def wait_until(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def can_build() -> str | None:
    """Why the lab cannot be built here, or None."""
    if os.geteuid() != 0:
        return "the lab creates network namespaces, which needs root"
    if shutil.which("ip") is None:
        return "the lab needs iproute2 (`ip`)"
    return None
