"""The warm Python interpreter that runs *inside* a box (this file's text is its program).

It is started once per box (``python3 -u -c <this file> DIR MODE OUTPUT_DIR BYTE_CAP MAX_IMAGES
MAX_IMAGE_BYTES MAX_TOTAL_IMAGE_BYTES [CHANNEL]``) and answers requests over its own stdin and
stdout (a streaming execution; CHANNEL ``stdio``, the default), so a tool call costs a fork
(``fresh`` mode) or nothing (``persistent`` mode) instead of a ~250 ms interpreter start under
emulation. With CHANNEL ``fifo`` it serves on the named pipes ``DIR/req`` and ``DIR/resp``
instead (and says ``READY`` on stdout too): a box snapshotted with such a server, and every box
restored from that snapshot, has it running, and the host reaches it through a bridge
execution (``cat``) on each restored box's new connection (see ``_session.py``).

* it writes ``READY`` once it can take requests;
* a request is ``RUN <nonce> <n>\\n`` and ``n`` bytes of UTF-8 code; ``PING <nonce>`` is
  answered ``PONG <nonce>`` (the pool's health check);
* the answer is ``DONE <nonce> <n>\\n`` and ``n`` bytes of JSON: exit code, each stream's size
  and at most ``BYTE_CAP`` bytes of it (head and tail), and every PNG in ``OUTPUT_DIR`` that is
  new or changed (base64, at most ``MAX_IMAGES`` of at most ``MAX_IMAGE_BYTES`` each and
  ``MAX_TOTAL_IMAGE_BYTES`` together). The nonce is the host's, fresh for every request: an
  answer written ahead of time cannot carry it.

The code never runs in this process, so it never holds the answer channel: ``fresh``: a child
forked ahead of time (between requests; it warms up while it waits, see :func:`_warm_up`) runs
the code in a copy of the pristine namespace, so every call starts clean; ``persistent``: one
long-lived child (the session) runs every request in its own namespace, so variables survive
between calls. Both close the protocol streams first; the code's stdout and stderr go to
``DIR/out`` and ``DIR/err``, its matplotlib figures to ``OUTPUT_DIR``. Whatever the code prints,
writes to any descriptor it has, or puts in place of ``sys.stdout`` lands in its own output, and
this server builds every answer itself.

Timeouts are enforced by the host, which kills the whole execution (every process it started)
and starts a new server; the partial output stays in ``DIR``. A process forked ahead of time may
run in many boxes restored from one snapshot: it reseeds the standard library's PRNGs from
``os.urandom`` when it gets its first code (:func:`_reseed`), so no two boxes share them.
Standard library only: it runs under whatever ``python3`` the image has.
"""

import ast
import base64
import contextlib
import json
import os
import select
import signal
import sys
import traceback
from typing import Any

SESSION_DIR, MODE, OUTPUT_DIR = sys.argv[1], sys.argv[2], sys.argv[3]
BYTE_CAP, MAX_IMAGES, MAX_IMAGE_BYTES = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
MAX_TOTAL_IMAGE_BYTES = int(sys.argv[7])
CHANNEL = sys.argv[8] if len(sys.argv) > 8 else "stdio"
OUT_PATH, ERR_PATH = os.path.join(SESSION_DIR, "out"), os.path.join(SESSION_DIR, "err")
#: The longest status line the session process may send (``<token> <exit code>``).
MAX_STATUS_LINE = 128


def _png_state() -> "dict[str, tuple[int, int]]":
    state = {}
    try:
        names = os.listdir(OUTPUT_DIR)
    except OSError:
        return {}
    for name in names:
        if name.lower().endswith(".png"):
            try:
                st = os.stat(os.path.join(OUTPUT_DIR, name))
            except OSError:
                continue
            state[name] = (st.st_mtime_ns, st.st_size)
    return state


def _save_figures(request_id: int) -> None:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    try:
        for number in pyplot.get_fignums():
            pyplot.figure(number).savefig(os.path.join(OUTPUT_DIR, f"figure-{request_id}-{number}.png"))
        pyplot.close("all")
    except Exception:
        traceback.print_exc()


def _run(code: str, namespace: "dict[str, object]") -> int:
    """Runs ``code`` like a notebook cell: a final expression's repr is printed."""
    try:
        tree = ast.parse(code, "<code>", "exec")
        last = None
        final = tree.body[-1] if tree.body else None
        if isinstance(final, ast.Expr):
            tree.body.pop()
            last = ast.Expression(final.value)
        exec(compile(tree, "<code>", "exec"), namespace)
        if last is not None:
            value = eval(compile(last, "<code>", "eval"), namespace)
            if value is not None:
                print(repr(value))
        return 0
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code & 0xFF
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:
        kind, value, tb = sys.exc_info()
        # Drop this file's own frames: the model should see only its code in the traceback.
        while tb is not None and tb.tb_frame.f_code.co_filename != "<code>":
            tb = tb.tb_next
        traceback.print_exception(kind, value, tb)
        return 1


def _redirect(path: str, fd: int) -> None:
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(target, fd)
    os.close(target)


def _run_request(request_id: int, code: bytes, namespace: "dict[str, object]", null: int, saved_err: int) -> int:
    """Runs one request with fds 1 and 2 on its output files, then puts them back."""
    sys.stdout.flush()
    sys.stderr.flush()
    _redirect(OUT_PATH, 1)
    _redirect(ERR_PATH, 2)
    try:
        exit_code = _run(code.decode("utf-8", "replace"), namespace)
        _save_figures(request_id)
        return exit_code
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass  # the code closed or replaced them: its business
        os.dup2(null, 1)
        os.dup2(saved_err, 2)


def _capped(path: str) -> "tuple[int, str]":
    """The stream's size, and its head and tail (at most BYTE_CAP bytes) as text."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size <= BYTE_CAP:
            data = f.read(BYTE_CAP)
        else:
            data = f.read(BYTE_CAP // 2)
            f.seek(size - BYTE_CAP // 2)
            data += f.read(BYTE_CAP // 2)
    return size, data.decode("utf-8", "replace")


def _images(before: "dict[str, tuple[int, int]]") -> "list[dict[str, str]]":
    found: list[dict[str, str]] = []
    total = 0
    for name, state in sorted(_png_state().items()):
        if before.get(name) == state or state[1] > MAX_IMAGE_BYTES or len(found) >= MAX_IMAGES:
            continue
        path = os.path.join(OUTPUT_DIR, name)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_IMAGE_BYTES + 1)
        except OSError:
            continue
        if len(data) > MAX_IMAGE_BYTES or total + len(data) > MAX_TOTAL_IMAGE_BYTES:
            continue
        total += len(data)
        found.append({"path": path, "data": base64.b64encode(data).decode("ascii")})
    return found


def _read_exactly(stream: Any, size: int) -> "bytes | None":
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _reseed() -> None:
    """Gives this process PRNG state of its own, from ``os.urandom``. It was forked ahead of
    time, perhaps before a snapshot from which many boxes were restored: every one of them would
    otherwise draw the same ``random`` numbers and ``tempfile`` names. (``uuid.uuid4``,
    ``secrets`` and ``os.urandom`` read the kernel's pool, which the engine reseeds on restore.
    The ``hash()`` secret of str and bytes cannot be changed in a running interpreter.)"""
    random_module = sys.modules.get("random")
    if random_module is not None:
        random_module.seed(os.urandom(32))
    tempfile_module = sys.modules.get("tempfile")
    if tempfile_module is not None:
        # Its name generator is cached per pid, and restored boxes have the same pids.
        tempfile_module._name_sequence = None  # type: ignore[attr-defined]


#: Seconds a child forked ahead of time waits for its request before it warms up (see
#: :func:`_warm_up`): calls that come back to back find it waiting, not busy.
WARM_UP_AFTER_IDLE = 0.02


def _warm_up(namespace: "dict[str, object]") -> None:
    """Runs code that does nothing visible (no output, no names), in a copy of the namespace,
    the way a request's code runs. A child forked ahead of time shares the server's memory
    copy-on-write: its first write to each page faults and copies the page, which under
    emulation made a ``print(1)`` in a new child take ~5 ms longer. Done while the child waits
    for its request, it is off the call's path."""
    _run("print(end='', flush=True)\nNone", dict(namespace))


def _child_setup(close: "list[Any]") -> None:
    """What every process that runs code does first: drop the server's streams."""
    for stream in close:
        stream.close()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _fork_child(close: "list[Any]", namespace: "dict[str, object]", null: int, saved_err: int) -> "tuple[int, int]":
    """Forks the child that will run the next request, ahead of time (a fork costs
    milliseconds under emulation; done between requests, it is off the call's path). The child
    waits for ``<request id>\\n<code>`` on a pipe; returns its pid and the pipe's write end."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(read_end)
        return pid, write_end
    os.close(write_end)
    _child_setup(close)
    if not select.select([read_end], [], [], WARM_UP_AFTER_IDLE)[0]:
        _warm_up(namespace)
    with os.fdopen(read_end, "rb") as pipe:
        request = pipe.read()
    if not request:
        os._exit(0)  # the server went away without a request for this child
    request_id, _, code = request.partition(b"\n")
    _reseed()
    os._exit(_run_request(int(request_id), code, dict(namespace), null, saved_err))


class _Session:
    """The process of a persistent session: one namespace for every request. It gets
    ``<token> <request id> <n>\\n<code>`` on one pipe and reports ``<token> <exit code>`` on
    another; the code can write to that pipe too, so the server reads it bounded and ends
    the session on anything but the status it expects."""

    def __init__(self, close: "list[Any]", namespace: "dict[str, object]", null: int, saved_err: int) -> None:
        request_read, request_write = os.pipe()
        status_read, status_write = os.pipe()
        self.pid = os.fork()
        if self.pid:
            os.close(request_read)
            os.close(status_write)
            self.requests = os.fdopen(request_write, "wb", buffering=0)
            self.status = os.fdopen(status_read, "rb", buffering=0)
            return
        os.close(request_write)
        os.close(status_read)
        _child_setup(close)
        requests = os.fdopen(request_read, "rb", buffering=0)
        status = os.fdopen(status_write, "wb", buffering=0)
        reseeded = False
        while True:
            header = requests.readline()
            if not header:
                os._exit(0)
            token, request_id, size = header.split()
            code = _read_exactly(requests, int(size))
            if code is None:
                os._exit(0)
            if not reseeded:
                # Once: later calls may have seeded ``random`` on purpose.
                _reseed()
                reseeded = True
            exit_code = _run_request(int(request_id), code, namespace, null, saved_err)
            status.write(b"%s %d\n" % (token, exit_code))

    def run(self, request_id: int, code: bytes) -> int:
        """Runs one request in the session; exits this server (with the session's status)
        when the session died or answered out of turn."""
        token = os.urandom(8).hex().encode()
        with contextlib.suppress(BrokenPipeError):  # it died: the status read below says so
            self.requests.write(b"%s %d %d\n" % (token, request_id, len(code)) + code)
        line = self.status.readline(MAX_STATUS_LINE)
        parts = line.split()
        if len(parts) == 2 and parts[0] == token and parts[1].isdigit():
            return int(parts[1])
        if line:
            print(f"the session process sent an unexpected status ({line[:64]!r}): ending it", file=sys.stderr)
            os.kill(self.pid, signal.SIGKILL)
        _, wait_status = os.waitpid(self.pid, 0)
        ended = os.waitstatus_to_exitcode(wait_status)
        os._exit(128 - ended if ended < 0 else ended)


def _serve() -> None:
    os.makedirs(SESSION_DIR, exist_ok=True)
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    # The protocol streams, on descriptors only this process holds (every process that runs
    # code closes them); fds 0 and 1 become /dev/null and, during a request, 1 and 2 its
    # output files.
    started = None
    if CHANNEL == "fifo":
        # Opened read-write: opening never waits for the other side, and neither stream ends
        # when a bridge goes (this server goes with it: the host kills it with the bridge).
        paths = [os.path.join(SESSION_DIR, name) for name in ("req", "resp")]
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.mkfifo(path, 0o600)
        requests = os.fdopen(os.open(paths[0], os.O_RDWR), "rb", buffering=0)
        responses = os.fdopen(os.open(paths[1], os.O_RDWR), "wb", buffering=0)
        started = os.fdopen(os.dup(1), "wb", buffering=0)
    else:
        requests = os.fdopen(os.dup(0), "rb", buffering=0)
        responses = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    saved_err = os.dup(2)
    namespace: dict[str, object] = {"__name__": "__main__", "__builtins__": __builtins__}
    with open(os.path.join(SESSION_DIR, "pid.tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.rename(os.path.join(SESSION_DIR, "pid.tmp"), os.path.join(SESSION_DIR, "pid"))
    streams = [requests, responses] if started is None else [requests, responses, started]
    session = _Session(streams, namespace, null, saved_err) if MODE == "persistent" else None
    child = _fork_child(streams, namespace, null, saved_err) if session is None else None
    responses.write(b"READY\n")
    if started is not None:
        started.write(b"READY\n")
        started.close()
    request_id = 0
    while True:
        header = requests.readline()
        if not header:
            return
        words = header.split()
        if words[0] == b"PING":
            responses.write(b"PONG %s\n" % words[1])
            continue
        nonce, size = words[1], int(words[2])
        code = _read_exactly(requests, size)
        if code is None:
            return
        request_id += 1
        before = _png_state()
        if session is not None:
            exit_code = session.run(request_id, code)
        else:
            assert child is not None
            pid, pipe = child
            try:
                with os.fdopen(pipe, "wb") as to_child:
                    to_child.write(b"%d\n" % request_id + code)
            except BrokenPipeError:
                pass  # the child died waiting (killed from outside): its status says how
            _, wait_status = os.waitpid(pid, 0)
            exit_code = os.waitstatus_to_exitcode(wait_status)
            if exit_code < 0:
                exit_code = 128 - exit_code
            child = None
        out_size, out = _capped(OUT_PATH)
        err_size, err = _capped(ERR_PATH)
        answer = {
            "exit_code": exit_code,
            "stdout": out,
            "stdout_size": out_size,
            "stderr": err,
            "stderr_size": err_size,
            "images": _images(before),
        }
        payload = json.dumps(answer).encode()
        responses.write(b"DONE %s %d\n" % (nonce, len(payload)) + payload)
        if session is None and child is None:
            # After the answer: the caller does not wait for the next child's fork.
            child = _fork_child(streams, namespace, null, saved_err)


if __name__ == "__main__":
    _serve()
