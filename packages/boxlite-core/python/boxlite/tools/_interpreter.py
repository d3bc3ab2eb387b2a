"""The warm Python interpreter that runs *inside* a box (this file's text is its program).

It is started once per box (``python3 -u -c <this file> DIR MODE OUTPUT_DIR BYTE_CAP MAX_IMAGES
MAX_IMAGE_BYTES``) and answers requests over its own stdin and stdout (a streaming execution),
so a tool call costs a fork (``fresh`` mode) or nothing (``persistent`` mode) instead of a
~250 ms interpreter start under emulation:

* it writes ``READY`` once it can take requests;
* a request is ``RUN <n>\\n`` and ``n`` bytes of UTF-8 code (``PING`` is answered ``PONG``);
* ``fresh``: a child forked ahead of time (between requests) runs the code in a copy of the
  pristine namespace, so every call starts clean; ``persistent``: the code runs in the
  server's own namespace, so variables survive between calls;
* the code's stdout and stderr go to ``DIR/out`` and ``DIR/err`` (never to the protocol
  stream); its matplotlib figures are saved to ``OUTPUT_DIR``;
* the answer is ``DONE <n>\\n`` and ``n`` bytes of JSON: exit code, each stream's size and at
  most ``BYTE_CAP`` bytes of it (head and tail), and every PNG in ``OUTPUT_DIR`` that is new
  or changed (base64).

Timeouts are enforced by the host, which kills the whole execution (every process it started)
and starts a new server; the partial output stays in ``DIR``. Standard library only: it runs
under whatever ``python3`` the image has.
"""

import ast
import base64
import json
import os
import signal
import sys
import traceback
from typing import Any

SESSION_DIR, MODE, OUTPUT_DIR = sys.argv[1], sys.argv[2], sys.argv[3]
BYTE_CAP, MAX_IMAGES, MAX_IMAGE_BYTES = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
OUT_PATH, ERR_PATH = os.path.join(SESSION_DIR, "out"), os.path.join(SESSION_DIR, "err")


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


def _capped(path: str) -> "tuple[int, str]":
    """The stream's size, and its head and tail (at most BYTE_CAP bytes) as text."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size <= BYTE_CAP:
            data = f.read()
        else:
            data = f.read(BYTE_CAP // 2)
            f.seek(size - BYTE_CAP // 2)
            data += f.read()
    return size, data.decode("utf-8", "replace")


def _images(before: "dict[str, tuple[int, int]]") -> "list[dict[str, str]]":
    found: list[dict[str, str]] = []
    for name, state in sorted(_png_state().items()):
        if before.get(name) == state or state[1] > MAX_IMAGE_BYTES or len(found) >= MAX_IMAGES:
            continue
        path = os.path.join(OUTPUT_DIR, name)
        try:
            with open(path, "rb") as f:
                found.append({"path": path, "data": base64.b64encode(f.read()).decode("ascii")})
        except OSError:
            continue
    return found


def _fork_child(close: "list[Any]", namespace: "dict[str, object]") -> "tuple[int, int]":
    """Forks the child that will run the next request, ahead of time (a fork costs
    milliseconds under emulation; done between requests, it is off the call's path). The child
    waits for ``<request id>\\n<code>`` on a pipe; returns its pid and the pipe's write end."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(read_end)
        return pid, write_end
    os.close(write_end)
    for stream in close:
        stream.close()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with os.fdopen(read_end, "rb") as pipe:
        request = pipe.read()
    if not request:
        os._exit(0)  # the server went away without a request for this child
    request_id, _, code = request.partition(b"\n")
    _redirect(OUT_PATH, 1)
    _redirect(ERR_PATH, 2)
    status = _run(code.decode("utf-8", "replace"), dict(namespace))
    _save_figures(int(request_id))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _serve() -> None:
    os.makedirs(SESSION_DIR, exist_ok=True)
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    # The protocol streams, on descriptors the code never writes to (not inherited by what
    # it runs); fds 0 and 1 become /dev/null and, during a request, 1 and 2 its output files.
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
    child = _fork_child([requests, responses], namespace) if MODE != "persistent" else None
    responses.write(b"READY\n")
    request_id = 0
    while True:
        header = requests.readline()
        if not header:
            return
        if header == b"PING\n":  # the pool's health check
            responses.write(b"PONG\n")
            continue
        size = int(header.split()[1])
        code_bytes = b""
        while len(code_bytes) < size:
            chunk = requests.read(size - len(code_bytes))
            if not chunk:
                return
            code_bytes += chunk
        code = code_bytes.decode("utf-8", "replace")
        request_id += 1
        before = _png_state()
        if MODE == "persistent":
            sys.stdout.flush()
            sys.stderr.flush()
            _redirect(OUT_PATH, 1)
            _redirect(ERR_PATH, 2)
            try:
                exit_code = _run(code, namespace)
                _save_figures(request_id)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(null, 1)
                os.dup2(saved_err, 2)
        else:
            assert child is not None
            pid, pipe = child
            try:
                with os.fdopen(pipe, "wb") as to_child:
                    to_child.write(b"%d\n" % request_id + code_bytes)
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
        responses.write(b"DONE %d\n" % len(payload) + payload)
        if MODE != "persistent" and child is None:
            # After the answer: the caller does not wait for the next child's fork.
            child = _fork_child([requests, responses], namespace)


if __name__ == "__main__":
    _serve()
