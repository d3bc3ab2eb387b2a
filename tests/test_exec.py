"""Running commands in a real box: output, exit codes, environment, concurrency."""

from __future__ import annotations

import asyncio
import os

import boxlite


async def test_python_prints_four(python_box: boxlite.SimpleBox) -> None:
    result = await python_box.exec("python3", "-c", "print(2 + 2)")
    assert result.stdout == "4\n"
    assert result.exit_code == 0 and result.returncode == 0


async def test_python_alias_and_low_level_api(python_box: boxlite.SimpleBox) -> None:
    execution = await python_box.box.exec("python", ["-c", "import sys; print(sys.version_info[0])"])
    result = await execution.wait()
    assert (result.exit_code, result.stdout) == (0, "3\n")


async def test_nonzero_exit_and_stderr(python_box: boxlite.SimpleBox) -> None:
    result = await python_box.exec("python3", "-c", "import sys; print('oops', file=sys.stderr); sys.exit(3)")
    assert result.exit_code == 3
    assert result.stderr == "oops\n"
    assert result.stdout == ""


async def test_signal_exit_code(shared_box: boxlite.Box) -> None:
    result = await (await shared_box.exec("sh", ["-c", "kill -9 $$"])).wait()
    assert (result.exit_code, result.signal) == (137, 9)


async def test_env_and_working_dir(python_box: boxlite.SimpleBox) -> None:
    result = await python_box.exec(
        "python3",
        "-c",
        "import os; print(os.environ['MY_VAR'], os.getcwd())",
        env={"MY_VAR": "hello"},
        working_dir="/srv/work",
    )
    assert result.stdout == "hello /srv/work\n", result.stderr


async def test_box_level_env_and_working_dir(runtime: boxlite.Boxlite, busybox: str) -> None:
    options = boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, working_dir="/workspace", env=[("A", "1")])
    box = await runtime.create(options)
    try:
        result = await (await box.exec("sh", ["-c", 'echo "$A $PWD"'])).wait()
        assert result.stdout == "1 /workspace\n"
        # Per-call environment overrides the box's.
        result = await (await box.exec("sh", ["-c", 'echo "$A"'], env={"A": "2"})).wait()
        assert result.stdout == "2\n"
    finally:
        await box.stop()


async def test_guest_kernel_is_not_the_hosts(shared_box: boxlite.Box) -> None:
    result = await (await shared_box.exec("uname", ["-r"])).wait()
    guest_release = result.stdout.strip()
    assert guest_release and guest_release != os.uname().release
    assert guest_release == shared_box.info().kernel_release


async def test_kernel_file_systems_are_mounted(shared_box: boxlite.Box) -> None:
    script = "test -r /proc/self/status && test -d /sys/class && test -c /dev/null && test -d /tmp && stat -c %a /tmp"
    result = await (await shared_box.exec("sh", ["-c", script])).wait()
    assert (result.exit_code, result.stdout) == (0, "1777\n"), result.stderr


async def test_three_executions_in_flight_at_once(shared_box: boxlite.Box) -> None:
    # Each notes the guest's uptime when it starts and when it ends (after a second's sleep).
    script = "read up idle < /proc/uptime; echo $up; sleep 1; read up idle < /proc/uptime; echo $up; echo task {i}"
    executions = await asyncio.gather(*(shared_box.exec("sh", ["-c", script.format(i=i)]) for i in range(3)))
    results = await asyncio.gather(*(e.wait() for e in executions))
    assert [r.stdout.split()[2:] for r in results] == [["task", "0"], ["task", "1"], ["task", "2"]]
    spans = [tuple(float(t) for t in r.stdout.split()[:2]) for r in results]
    # They ran side by side: each had started before any of them ended.
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans


async def test_an_execution_ends_with_its_process_even_if_a_child_holds_the_pipe(shared_box: boxlite.Box) -> None:
    # The background sleep inherits stdout and keeps the pipe open for hours.
    execution = await shared_box.exec("sh", ["-c", "sleep 30303 & echo parent done"])
    try:
        result = await asyncio.wait_for(execution.wait(), timeout=120)
        assert (result.exit_code, result.stdout) == (0, "parent done\n")
        ps = await shared_box.run("ps", ["-o", "args"])
        assert "sleep 30303" in ps.stdout, "the child still holds the pipe"
    finally:
        await shared_box.run("sh", ["-c", "kill $(ps -o pid,args | grep '[s]leep 30303' | cut -c1-6)"])


# Holds a FIFO open for writing until killed; each waiter opens it, says so, and reads: they all
# see the end of file, and exit, the moment the holder dies.
GATE_HOLDER = (
    "rm -rf /tmp/gate*; mkfifo /tmp/gate; mkdir /tmp/gate.ready; exec 3<>/tmp/gate; echo ready; exec sleep 1000"
)
GATE_WAITER = "exec 4</tmp/gate; touch /tmp/gate.ready/{code}; read line <&4; exit {code}"


async def test_no_exit_status_is_lost_when_many_processes_exit_at_once(shared_box: boxlite.Box) -> None:
    holder = await shared_box.exec("sh", ["-c", GATE_HOLDER])
    assert await asyncio.wait_for(holder.stdout().readline(), 60) == b"ready\n"
    executions = await asyncio.gather(*(shared_box.exec("sh", ["-c", GATE_WAITER.format(code=i)]) for i in range(40)))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while (waiting := len((await shared_box.run("ls", ["/tmp/gate.ready"])).stdout.split())) < 40:
        assert loop.time() < deadline, f"only {waiting} of 40 executions reached the gate"
        await asyncio.sleep(0.2)
    await holder.kill()
    results = await asyncio.wait_for(asyncio.gather(*(e.wait() for e in executions)), timeout=120)
    assert [r.exit_code for r in results] == list(range(40))


async def test_command_not_found_is_127_with_a_message(shared_box: boxlite.Box) -> None:
    result = await asyncio.wait_for((await shared_box.exec("no-such-command", ["x"])).wait(), timeout=30)
    assert result.exit_code == 127
    assert "no-such-command: command not found" in result.stderr
    assert result.error is not None


async def test_binary_output_survives(shared_box: boxlite.Box) -> None:
    result = await (await shared_box.exec("printf", ["\\000\\377\\n"])).wait()
    assert result.stdout_bytes == b"\x00\xff\n"


async def test_seed_concurrency_example_shape(runtime: boxlite.Boxlite, python_image: str) -> None:
    """The reference docs' concurrency example: gather execs, then wait each; stop; remove."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=python_image, cpus=1, memory_mib=512))
    try:
        results = await asyncio.gather(
            box.exec("python", ["-c", "print('task A')"]),
            box.exec("python", ["-c", "print('task B')"]),
            box.exec("python", ["-c", "print('task C')"]),
        )
        outputs = [await execution.wait() for execution in results]
        assert [o.exit_code for o in outputs] == [0, 0, 0]
        assert [o.stdout for o in outputs] == ["task A\n", "task B\n", "task C\n"]
    finally:
        await box.stop()
        await runtime.remove(box.id)


async def test_named_users_come_from_the_images_passwd(python_box: boxlite.SimpleBox) -> None:
    result = await python_box.exec("sh", "-c", "id -u; id -g; echo $HOME", user="nobody")
    assert result.stdout.split() == ["65534", "65534", "/nonexistent"], result
    grouped = await python_box.exec("id", "-gn", user="nobody:daemon")
    assert grouped.stdout.strip() == "daemon"
    numeric = await python_box.exec("sh", "-c", "id -u; echo $HOME", user="4242")
    assert numeric.stdout.split() == ["4242", "/"]
    root = await python_box.exec("sh", "-c", "id -u; echo $HOME", user="root")
    assert root.stdout.split() == ["0", "/root"]


async def test_unknown_user_is_a_clear_error(python_box: boxlite.SimpleBox) -> None:
    result = await python_box.exec("id", user="mallory")
    assert result.exit_code == 126
    assert result.error is not None and "mallory" in result.error and "/etc/passwd" in result.error


async def test_numpy_runs_on_the_emulated_cpu(runtime: boxlite.Boxlite, plot_image: str) -> None:
    """Under TCG the guest CPU is QEMU's "max" model: with the default one OpenBLAS picks kernels
    TCG cannot execute and numpy.dot dies with SIGILL (exit 132)."""
    async with boxlite.SimpleBox(rootfs_path=plot_image, memory_mib=512, runtime=runtime) as box:
        result = await box.exec("python3", "-c", "import numpy; a = numpy.ones((64, 64)); print(a.dot(a)[0, 0])")
        assert (result.exit_code, result.stdout) == (0, "64.0\n"), result.stderr
