"""The warm Python interpreter that runs *inside* a box (this file's text is its program).

It is started once per box (``python3 -u -c <this file> DIR MODE OUTPUT_DIR``) and then answers
requests over two named pipes in ``DIR``, so a tool call costs a fork (``fresh`` mode) or nothing
(``persistent`` mode) instead of a ~250 ms interpreter start under emulation:

* the host writes the code to ``DIR/code.py`` and a line to ``DIR/req``;
* ``fresh``: a forked child runs the code in a copy of the pristine namespace, so every call
  starts clean; ``persistent``: the code runs in the server's own namespace, so variables
  survive between calls;
* stdout and stderr go to ``DIR/out`` and ``DIR/err``; the code's matplotlib figures are saved
  to ``OUTPUT_DIR``, and every PNG in ``OUTPUT_DIR`` that is new or changed is listed in
  ``DIR/images``;
* the answer is one line on ``DIR/resp``: ``exit_code image_count stdout_bytes stderr_bytes``.

The server holds ``resp`` open for writing for its whole life, so a client blocked reading it
sees end-of-file if the server dies. Timeouts are enforced by the host, which kills the whole
execution (every process it started) and starts a new server. Standard library only: it runs
under whatever ``python3`` the image has.
"""

import ast
import os
import signal
import sys
import traceback

SESSION_DIR, MODE, OUTPUT_DIR = sys.argv[1], sys.argv[2], sys.argv[3]


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


def _serve() -> None:
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    for name in ("req", "resp"):
        path = os.path.join(SESSION_DIR, name)
        if not os.path.exists(path):
            os.mkfifo(path)
    # Read-write opens of a FIFO never block and keep it open from both ends.
    requests = os.fdopen(os.open(os.path.join(SESSION_DIR, "req"), os.O_RDWR), "r")
    responses = os.open(os.path.join(SESSION_DIR, "resp"), os.O_RDWR)
    saved_out, saved_err = os.dup(1), os.dup(2)
    namespace: dict[str, object] = {"__name__": "__main__", "__builtins__": __builtins__}
    with open(os.path.join(SESSION_DIR, "pid.tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.rename(os.path.join(SESSION_DIR, "pid.tmp"), os.path.join(SESSION_DIR, "pid"))
    # The host waits on this pipe until the interpreter is ready for requests.
    with open(os.path.join(SESSION_DIR, "ready"), "w") as ready:
        ready.write("ready\n")
    request_id = 0
    while True:
        if not requests.readline():
            return
        request_id += 1
        with open(os.path.join(SESSION_DIR, "code.py")) as f:
            code = f.read()
        before = _png_state()
        out_path, err_path = os.path.join(SESSION_DIR, "out"), os.path.join(SESSION_DIR, "err")
        if MODE == "persistent":
            sys.stdout.flush()
            sys.stderr.flush()
            _redirect(out_path, 1)
            _redirect(err_path, 2)
            try:
                exit_code = _run(code, namespace)
                _save_figures(request_id)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved_out, 1)
                os.dup2(saved_err, 2)
        else:
            pid = os.fork()
            if pid == 0:
                requests.close()
                os.close(responses)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _redirect(out_path, 1)
                _redirect(err_path, 2)
                code_status = _run(code, dict(namespace))
                _save_figures(request_id)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code_status)
            _, status = os.waitpid(pid, 0)
            exit_code = os.waitstatus_to_exitcode(status)
            if exit_code < 0:
                exit_code = 128 - exit_code
        after = _png_state()
        images = sorted(name for name, state in after.items() if before.get(name) != state)
        with open(os.path.join(SESSION_DIR, "images"), "w") as f:
            f.write("".join(os.path.join(OUTPUT_DIR, name) + "\n" for name in images))
        sizes = [os.path.getsize(out_path), os.path.getsize(err_path)]
        os.write(responses, f"{exit_code} {len(images)} {sizes[0]} {sizes[1]}\n".encode())


if __name__ == "__main__":
    _serve()
