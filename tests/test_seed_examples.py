"""Every code block of the seeds (the reference documentation) that can run here, run for real.

The blocks are copied verbatim into ``tests/seed_examples/<seed file>-<n>.py`` (each names its
seed file and lines) so the test does not need the seeds. Each runs in its own interpreter, as
a user's program would, with ``BOXLITE_HOME`` shared by the module (the images are pulled
once) and ``BOXLITE_REGISTRY_MIRRORS`` pointing ``docker.io`` at a real registry on 127.0.0.1
(``conftest.registry``), as an air-gapped user would set it up: ``python:slim`` is the test
python image and ``busybox:latest`` the busybox one. What the test changes in a block:

* image references the registry lacks (:data:`IMAGES`): ``python:3.11-slim`` becomes
  ``python:slim``; ``alpine:latest`` and ``node:alpine`` become ``busybox:latest``;
* the host path ``/host/data`` becomes a directory made in the test's tmp dir (with a file).

The pages' fragments are run as the pages present them: top-level ``await`` is allowed (as in
``python -m asyncio``), and ``asyncio``, ``boxlite`` and ``SecurityOptions`` are imported, as
the pages' earlier blocks import them. Where a fragment uses a ``box`` an earlier block made,
``before`` makes it; where a block only defines functions, ``after`` calls them. Both are
test code run in the block's namespace, not part of the copied block.

Blocks that cannot run here, and why (not skips: there is nothing to run):

* ``001_a242f1084a3ed0b8.txt`` lines 48-50 (``pip install boxlite``), 256-267 and 270-291
  (a shell command and a decision tree): not Python.
* ``002_b59ebf0c777ec327.txt`` (the FAQ and troubleshooting page): its capture flattened
  every code block onto one line, so each is a comment or a syntax error as written. The
  call shapes they show are tested elsewhere: ``exec(..., background=True)`` with a port
  (the "Port forward not working" block; as written it also fetches the page the moment the
  server starts, a race it loses under TCG) in ``test_seed_call_shapes.py``; ``stdin`` in
  ``test_streaming.py``; ``metrics()`` and ``SecurityOptions`` presets in ``test_limits.py``;
  ``memory_mib`` ranges in ``test_errors.py``. Its internet-access block
  (``wget https://api.github.com/zen``) also needs network access.
* ``003_2bb8e61896f80c37.txt`` lines 197-213 (terminal resizing): reads the shell's output
  until the shell ends, and the shell never does (its stdin stays open): it runs forever as
  written. ``resize_tty`` is tested in ``test_streaming.py``.
* ``004_e8d30c4ecb8ad2be.txt`` (the reference page): shell commands, a Rust ``use`` list and
  a JSON file, no Python.
* The ``ComputerBox`` blocks of ``001_a242f1084a3ed0b8.txt`` (lines 70-87 and 208-251) and its
  ``InteractiveBox`` block (lines 93-101) belong to those classes' tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from local_registry import LocalRegistry

EXAMPLES = Path(__file__).resolve().parent / "seed_examples"

#: Image references of the blocks that the test registry lacks, and what stands in for them.
IMAGES = {
    '"python:3.11-slim"': '"python:slim"',
    '"alpine:latest"': '"busybox:latest"',
    '"node:alpine"': '"busybox:latest"',
}

#: Runs one block (argv: the file, then the ``before`` and ``after`` snippets) as the pages
#: present it: top-level await allowed, and the pages' usual imports done.
RUNNER = r"""
import ast, asyncio, inspect, sys
import boxlite
from boxlite.boxlite import SecurityOptions

path, before, after = sys.argv[1:4]
namespace = {"__name__": "__main__", "asyncio": asyncio, "boxlite": boxlite, "SecurityOptions": SecurityOptions}
loop = asyncio.new_event_loop()
for source, name in ((before, "<before>"), (open(path).read(), path), (after, "<after>")):
    code = compile(source, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:
        loop.run_until_complete(eval(code, namespace))
    else:
        exec(code, namespace)
loop.close()
"""

#: A low-level box for the fragments that use one (``box`` on the AI-agent page).
GIVEN_BOX = """
runtime = boxlite.Boxlite.default()
box = await runtime.create(boxlite.BoxOptions(image="python:slim", memory_mib=512))
"""

#: Counts the box's processes whose command line has ``9999`` in it (the fragment's sleep).
SLEEPERS = """
probe = (
    "import os; print(sum('99' + '99' in open(f'/proc/{p}/cmdline').read() "
    "for p in os.listdir('/proc') if p.isdigit()))"
)
left = await box.run("python", ["-c", probe])
print("sleepers left:", left.stdout.strip())
"""

TIMEOUT_HELPER_DRIVER = """
try:
    await {helper}(box, "sleep", ["60"], timeout=2)
except asyncio.TimeoutError:
    print("timed out")
print((await {helper}(box, "echo", ["still usable"])).stdout.strip())
"""


@dataclass
class Example:
    file: str
    before: str = ""
    after: str = ""
    #: The lines the program must print (``None``: whatever it prints).
    expect: list[str] | None = None


CASES = [
    Example("000_f5fe8764b5ce4f9e-1", after="print(repr(output))", expect=["'4\\n'"]),
    Example("000_f5fe8764b5ce4f9e-2"),
    Example("000_f5fe8764b5ce4f9e-3", after="print(box.options.image)", expect=["python:slim"]),
    Example("000_f5fe8764b5ce4f9e-4"),
    Example("000_f5fe8764b5ce4f9e-5"),
    Example("000_f5fe8764b5ce4f9e-6"),
    Example("001_a242f1084a3ed0b8-1", expect=["Hello from BoxLite!", ""]),
    # The page's comment says 409113; 0! + 1! + ... + 9! is 409114.
    Example("001_a242f1084a3ed0b8-2", expect=["Sum of factorials 0-9: 409114", ""]),
    Example(
        "001_a242f1084a3ed0b8-3",
        after='tool = BoxLitePythonTool()\nprint(tool.run("print(6 * 7)").strip())\ntool.cleanup()',
        expect=["42"],
    ),
    Example("001_a242f1084a3ed0b8-4", after="print(result.stdout.split()[-1])", expect=["hello.txt"]),
    Example(
        "001_a242f1084a3ed0b8-5",
        after=(
            'async with boxlite.SimpleBox(image="python:slim") as box:\n'
            '    ok = await execute_with_retry(box, ["echo", "hi"])\n'
            '    bad = await execute_with_retry(box, ["sh", "-c", "echo oops >&2; exit 3"])\n'
            "print(ok.success, repr(ok.output), ok.retries)\n"
            "print(bad.success, repr(bad.error))"
        ),
        expect=["True 'hi\\n' 0", "False 'oops\\n'"],
    ),
    Example("003_2bb8e61896f80c37-1", after="print(options.working_dir)", expect=["/workspace"]),
    Example(
        "003_2bb8e61896f80c37-2",
        after="print(security.max_open_files, security.network_enabled)",
        expect=["2048 False"],
    ),
    # The page defines main() and leaves running it to the reader.
    Example("003_2bb8e61896f80c37-3", after="asyncio.run(main())", expect=["Exit code: 0"] * 3),
    Example(
        "003_2bb8e61896f80c37-4",
        after="print(asyncio.run(run_isolated_agent(\"print('agent 1')\")).strip())\nasyncio.run(main())",
        expect=["agent 1"],
    ),
    # Our Execution.wait() kills the execution when cancelled: no process is left behind.
    Example(
        "003_2bb8e61896f80c37-5",
        before=GIVEN_BOX,
        after=SLEEPERS + "await box.stop()",
        expect=["Timed out", "sleepers left: 0"],
    ),
    Example(
        "003_2bb8e61896f80c37-6",
        before=GIVEN_BOX,
        after=TIMEOUT_HELPER_DRIVER.format(helper="exec_with_timeout") + "await box.stop()",
        expect=["timed out", "still usable"],
    ),
    Example(
        "003_2bb8e61896f80c37-7",
        before=GIVEN_BOX,
        after=TIMEOUT_HELPER_DRIVER.format(helper="safe_exec") + "await box.stop()",
        expect=["timed out", "still usable"],
    ),
    Example(
        "003_2bb8e61896f80c37-8",
        after=(
            "box = await boxlite.Boxlite.default().create(options)\n"
            'print((await box.run("ls", ["/sys/class/net"])).stdout.split())\n'
            "await box.stop()"
        ),
        expect=["['lo']"],
    ),
    Example(
        "003_2bb8e61896f80c37-9",
        after=(
            "box = await boxlite.Boxlite.default().create(options)\n"
            'print((await box.run("sh", ["-c", "nproc; ulimit -n"])).stdout.split())\n'
            "await box.stop()"
        ),
        expect=["['1', '1024']"],
    ),
    # 1 GiB in a 512 MiB box: the guest's OOM killer ends the process, the box lives on.
    Example(
        "003_2bb8e61896f80c37-10",
        before=GIVEN_BOX,
        after='print((await box.run("echo", ["box alive"])).stdout.strip())\nawait box.stop()',
        expect=["Process was OOM-killed", "stderr: ", "box alive"],
    ),
    Example(
        "003_2bb8e61896f80c37-11",
        expect=["Exit code: 0", "Task 0 exit code: 0", "Task 1 exit code: 0"],
    ),
]


@pytest.fixture(scope="module")
def examples_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``BOXLITE_HOME`` for the module's programs, so each image is pulled once."""
    return tmp_path_factory.mktemp("seed-examples-home")


def run_example(path: Path, case: Example, registry: LocalRegistry, home: Path) -> str:
    env = dict(os.environ, BOXLITE_HOME=str(home), BOXLITE_REGISTRY_MIRRORS=f"docker.io={registry.url}")
    argv = [sys.executable, "-c", RUNNER, str(path), case.before, case.after]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{case.file} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_seed_example_runs_as_written(
    case: Example, registry: LocalRegistry, examples_home: Path, tmp_path: Path
) -> None:
    source = (EXAMPLES / f"{case.file}.py").read_text()
    for theirs, ours in IMAGES.items():
        source = source.replace(theirs, ours)
    if "/host/data" in source:
        data = tmp_path / "host-data"
        data.mkdir()
        (data / "hello.txt").write_text("hello\n")
        source = source.replace("/host/data", str(data))
    program = tmp_path / f"{case.file}.py"
    program.write_text(source)
    out = run_example(program, case, registry, examples_home)
    if case.expect is not None:
        assert out.splitlines() == case.expect, out
    boxes = examples_home / "boxes"
    assert not boxes.exists() or not any(boxes.iterdir()), f"{case.file} left boxes behind"
