"""boxlite.ray on a real multi-node Ray cluster started here (``ray.cluster_utils.Cluster``: three
raylets on this machine, each advertising the ``boxlite`` resource), booting real boxes: leases
spread over the nodes, a LangChain agent's tool call on a cluster pool, a node removed mid-call,
and no VM left after a pool close or a driver's exit."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import boxlite
import pytest
from conftest import vmms_under

# Under `uv run` (as `make test` runs), Ray's uv integration would ship this checkout to the
# workers as a working_dir without its git-ignored build outputs (the guest kernel): the nodes
# here use the installed package, as a real cluster's nodes do (see the README). The variable
# reaches the driver subprocesses; the constant covers a Ray already imported.
os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
ray = pytest.importorskip("ray")
import ray._private.ray_constants as ray_constants  # noqa: E402

ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False
from boxlite.ray import BoxLostError, RayBoxPool  # noqa: E402
from boxlite_langchain import BoxLitePythonTool  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from test_langchain import call, run_agent, text_of  # noqa: E402

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parent.parent
#: One CPU slot a node: the machine has two cores and other work runs.
NODE_ARGS: dict[str, Any] = {"num_cpus": 1, "resources": {"boxlite": 1}}


def start_cluster(attempts: int = 3) -> Cluster:
    """Three nodes; Ray gives a raylet 30 s to register, which a busy two-core machine can miss,
    so a start that times out is tried again."""
    for attempt in range(1, attempts + 1):
        nodes = None
        try:
            nodes = Cluster(initialize_head=True, head_node_args=NODE_ARGS)
            nodes.add_node(**NODE_ARGS)
            nodes.add_node(**NODE_ARGS)
            return nodes
        except Exception:
            if nodes is not None:
                nodes.shutdown()
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three Ray nodes with the ``boxlite`` resource; the driver (this process) connected."""
    # The nodes' workers inherit the environment they start with: skip the hardware check
    # (emulation here), for the nodes only.
    accel = os.environ.get("BOXLITE_ACCEL")
    os.environ.setdefault("BOXLITE_ACCEL", "tcg")
    try:
        nodes = start_cluster()
    finally:
        if accel is None:
            del os.environ["BOXLITE_ACCEL"]
    ray.init(address=nodes.address, log_to_driver=False)
    try:
        nodes.wait_for_nodes()
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
async def busybox_pool(cluster: Cluster, busybox: str, home: Path) -> AsyncIterator[RayBoxPool]:
    pool = RayBoxPool(
        boxlite.BoxOptions(image=busybox, memory_mib=256),
        per_node_max=1,
        min_idle=0,
        acquire_timeout=120,
        home_dir=str(home),
    )
    try:
        yield pool
    finally:
        await pool.close()


async def eventually(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_leases_spread_over_the_nodes_and_a_full_cluster_says_so(busybox_pool: RayBoxPool) -> None:
    pool = busybox_pool
    leases = await asyncio.gather(*(pool.acquire() for _ in range(3)))
    try:
        assert len({lease.node_id for lease in leases}) == 3, "one lease a node: per_node_max=1 on three nodes"
        results = await asyncio.gather(*(lease.box.run("cat", ["/proc/sys/kernel/random/boot_id"]) for lease in leases))
        assert len({r.stdout for r in results}) == 3, "three distinct VMs"
        stats = pool.stats()
        assert stats.total.leased == 3 and all(s.leased == 1 for s in stats.nodes.values())
        pool.acquire_timeout = 1
        with pytest.raises(boxlite.PoolExhaustedError, match="per_node_max=1"):
            await pool.acquire()
    finally:
        for lease in leases:
            await pool.release(lease)
    assert pool.stats().total.leased == 0


@pytest.mark.slow
async def test_remote_box_streams_stdin_files_copies_and_timeouts(busybox_pool: RayBoxPool, tmp_path: Path) -> None:
    async with busybox_pool.lease() as lease:
        box = lease.box
        execution = await box.exec("sh", ["-c", "read x; echo got $x; echo oops >&2; exit 3"])
        await execution.stdin().send_input("abc\n")
        assert await execution.stdout().readline() == b"got abc\n"
        ended = await execution.wait()
        assert (ended.exit_code, ended.stderr) == (3, "oops\n")

        slow = await box.run("sleep", ["30"], timeout=1)
        assert slow.timed_out and slow.exit_code == 124

        await box.write_file("/tmp/a/b.txt", "hello", parents=True)
        assert await box.read_file("/tmp/a/b.txt") == b"hello"
        assert [e.name for e in await box.list_dir("/tmp/a")] == ["b.txt"]
        assert (await box.stat("/tmp/a/b.txt")).size == 5
        with pytest.raises(FileNotFoundError, match="/nope"):
            await box.read_file("/nope")

        (tmp_path / "tree").mkdir()
        (tmp_path / "tree" / "x.sh").write_text("#!/bin/sh\necho x\n")
        (tmp_path / "tree" / "x.sh").chmod(0o755)
        await box.copy_in(tmp_path / "tree", "/tmp")
        assert (await box.run("/tmp/tree/x.sh")).stdout == "x\n"
        await box.copy_out("/tmp/a", tmp_path / "back")
        assert (tmp_path / "back" / "b.txt").read_text() == "hello"
        assert (await box.metrics()).vmm_rss > 0


@pytest.mark.slow
async def test_a_langchain_agent_runs_python_on_a_cluster_pool(cluster: Cluster, python_image: str, home: Path) -> None:
    pool = RayBoxPool(
        boxlite.BoxOptions(image=python_image, memory_mib=512), per_node_max=1, min_idle=0, home_dir=str(home)
    )
    try:
        tool = BoxLitePythonTool(pool=pool)
        [message] = await run_agent([tool], call("boxlite_python", code="print(6*7)"))
        assert message.status == "success"
        assert "exit code: 0\nstdout:\n42\n" in text_of(message)
        assert pool.stats().total.leases == 1
    finally:
        await pool.close()
    assert vmms_under(home) == []


@pytest.mark.slow
async def test_close_leaves_no_vm_on_any_node(cluster: Cluster, busybox: str, home: Path) -> None:
    pool = RayBoxPool(boxlite.BoxOptions(image=busybox, memory_mib=256), per_node_max=2, min_idle=1, home_dir=str(home))
    await pool.start()
    lease = await pool.acquire()
    stats = pool.stats()
    assert len(stats.nodes) == 3 and stats.total.idle + stats.total.leased >= 3
    assert len(vmms_under(home)) >= 3
    await pool.close()
    assert vmms_under(home) == []
    with pytest.raises(boxlite.PoolClosedError):
        await pool.acquire()
    del lease


@pytest.mark.slow
async def test_a_driver_that_exits_leaves_no_vm(cluster: Cluster, busybox: str, home: Path) -> None:
    driver = textwrap.dedent(
        f"""
        import asyncio, os, ray, boxlite
        from boxlite.ray import RayBoxPool
        ray.init(address={cluster.address!r}, log_to_driver=False)
        async def main():
            pool = RayBoxPool(boxlite.BoxOptions(image={busybox!r}, memory_mib=256), per_node_max=1,
                              min_idle=1, home_dir={str(home)!r})
            await pool.start()
            await pool.acquire()
            print("READY", flush=True)
        asyncio.run(main())
        os._exit(0)  # no close, no atexit hook: Ray ends the actors, their watchdogs the VMs
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=300)
    assert "READY" in done.stdout, done.stderr[-3000:]
    await eventually(lambda: vmms_under(home) == [], timeout=90)


def test_bad_settings_are_refused_with_the_fix() -> None:
    with pytest.raises(boxlite.InvalidOptionError, match="per_node_max must be at least 1"):
        RayBoxPool(per_node_max=0)
    with pytest.raises(boxlite.InvalidOptionError, match=r"min_idle must be between 0 and per_node_max \(2\)"):
        RayBoxPool(per_node_max=2, min_idle=3)
    with pytest.raises(boxlite.InvalidOptionError, match="must not set a name"):
        RayBoxPool(boxlite.BoxOptions(image="python:slim", name="one"))


@pytest.mark.slow
async def test_no_eligible_node_says_how_to_start_one(cluster: Cluster) -> None:
    pool = RayBoxPool(nodes=["0" * 56])
    with pytest.raises(boxlite.PoolExhaustedError, match=re.escape("""ray start --resources='{"boxlite": 1}'""")):
        await pool.acquire()
    await pool.close()


@pytest.mark.slow
async def test_a_node_removed_mid_call_fails_it_clearly_and_the_next_lease_goes_elsewhere(
    cluster: Cluster, busybox_pool: RayBoxPool, home: Path
) -> None:
    pool = busybox_pool
    # The head node cannot be removed: take a lease on each node and keep the one on a worker.
    leases = await asyncio.gather(*(pool.acquire() for _ in range(3)))
    victim = next(n for n in cluster.worker_nodes if any(lease.node_id == n.node_id for lease in leases))
    doomed = next(lease for lease in leases if lease.node_id == victim.node_id)
    for lease in leases:
        if lease is not doomed:
            await pool.release(lease)
    await eventually(lambda: len(vmms_under(home)) == 1)  # the released boxes stop (max_uses=1)

    call_task = asyncio.ensure_future(doomed.box.run("sleep", ["60"]))
    await asyncio.sleep(2)
    cluster.remove_node(victim)
    with pytest.raises(BoxLostError, match=f"box {doomed.box.id} was lost with Ray node {victim.node_id}") as lost:
        await asyncio.wait_for(call_task, 60)
    assert lost.value.node_id == victim.node_id and lost.value.box_id == doomed.box.id
    await pool.release(doomed)

    async with pool.lease() as lease:
        assert lease.node_id != victim.node_id
        assert (await lease.box.run("echo", ["ok"])).stdout == "ok\n"
    stats = pool.stats()
    assert stats.lost_nodes == (victim.node_id,) and victim.node_id not in stats.nodes
    # The lost node's VM went with its actor (its watchdog killed it).
    await eventually(lambda: vmms_under(home) == [], timeout=60)


@pytest.mark.slow
async def test_a_lost_nodes_ready_boxes_are_rebuilt_on_the_others(cluster: Cluster, busybox: str, home: Path) -> None:
    """min_idle counts per node; when a node goes, its ready boxes are booted again on the nodes
    left (within per_node_max), so the cluster's warm capacity comes back."""
    extra = cluster.add_node(**NODE_ARGS)
    cluster.wait_for_nodes()
    pool = RayBoxPool(
        boxlite.BoxOptions(image=busybox, memory_mib=256), per_node_max=2, min_idle=1, acquire_timeout=120,
        home_dir=str(home),
    )  # fmt: skip
    try:
        await pool.start()
        nodes = len(pool.stats().nodes)
        assert nodes >= 2 and pool.stats().total.idle == nodes, pool.stats()
        cluster.remove_node(extra)
        # The lost node shows up on the next call that touches it; stats() does.
        await eventually(lambda: extra.node_id in pool.stats().lost_nodes, timeout=120)
        await eventually(lambda: pool.stats().total.idle == nodes, timeout=300)
        stats = pool.stats()
        assert sorted(s.idle for s in stats.nodes.values()) == [1] * (nodes - 2) + [2], stats
    finally:
        await pool.close()
    await eventually(lambda: vmms_under(home) == [], timeout=60)


def _ancestors(pid: int) -> list[str]:
    """The command lines of ``pid``'s ancestors, nearest first."""
    found = []
    while pid > 1:
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
            found.append((Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            break
    return found


@pytest.mark.slow
async def test_the_mcp_server_runs_stateless_calls_on_the_cluster(
    cluster: Cluster, python_image: str, home: Path
) -> None:
    """``boxlite mcp --ray ADDRESS``: the server joins the cluster as a driver and a stateless
    call runs in a box that a node's actor started, not the server; its exit leaves no VM."""
    mcp = pytest.importorskip("mcp")
    from mcp.client.stdio import StdioServerParameters, stdio_client

    args = ["-m", "boxlite.mcp", "--image", python_image, "--memory", "512", "--pool-size", "1", "--warm", "0",
            "--ray", cluster.address, "--home", str(home)]  # fmt: skip
    env = dict(os.environ, BOXLITE_HOME=str(home), BOXLITE_ACCEL="tcg")
    code = "import time; time.sleep(6); print(6 * 7)"
    params = StdioServerParameters(command=sys.executable, args=args, env=env)
    async with stdio_client(params) as (read, write), mcp.ClientSession(read, write) as session:
        await session.initialize()
        call = asyncio.ensure_future(session.call_tool("boxlite_python", {"code": code}))
        # While the call runs, its VM's parent is a Ray worker (a node's NodeBoxes actor).
        await eventually(lambda: vmms_under(home) != [] or call.done(), timeout=300)
        vms = vmms_under(home)
        assert vms, f"no VM seen while the call ran: {call.result() if call.done() else 'still running'}"
        assert all(any(c.startswith("ray::") for c in _ancestors(pid)) for pid in vms), [_ancestors(p) for p in vms]
        result = await call
        assert not result.isError, result
        block = result.content[0]
        assert isinstance(block, mcp.types.TextContent) and "42" in block.text, result
    await eventually(lambda: vmms_under(home) == [], timeout=120)


def test_mcp_ray_without_a_cluster_says_how_to_start_one(tmp_path: Path) -> None:
    env = dict(os.environ, BOXLITE_HOME=str(tmp_path), BOXLITE_MCP_DETACHED="1")
    done = subprocess.run(
        [sys.executable, "-m", "boxlite.mcp", "--ray", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=180, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "--ray 127.0.0.1:1: no Ray cluster there" in done.stderr and "ray start --head" in done.stderr, done.stderr
