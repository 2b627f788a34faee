"""Helpers for tests that run a real TensorBoard server as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 60.0):
    """GETs JSON, retrying while the server is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def serve(argv: list[str]):
    """Starts a command with its output captured (stdout and stderr together)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )


def wait_for_steps(port: int, run: str, tag: str, expected, timeout: float = 90.0):
    """Polls the tags route until the steps are complete (the loader reads in the background):
    until they equal `expected`, a list, or `expected(steps)` holds, a function."""
    done = expected if callable(expected) else lambda steps: steps == expected
    deadline = time.monotonic() + timeout
    base = f"http://127.0.0.1:{port}"
    while True:
        left = max(deadline - time.monotonic(), 5.0)  # the server may still be starting
        listing = get_json(f"{base}/data/plugins_listing", timeout=left)
        tags = get_json(f"{base}/data/plugin/cnnviz/tags", timeout=left)
        steps = tags.get(run, {}).get(tag, {}).get("steps")
        if done(steps) or time.monotonic() > deadline:
            return listing, steps
        time.sleep(1.0)


#: `tensorboard` as where TensorFlow is not installed: TensorBoard's own filesystem layer reads.
WITHOUT_TENSORFLOW = (
    "import sys; sys.modules['tensorflow'] = None; sys.argv[0] = 'tensorboard'; "
    "from tensorboard.main import run_main; run_main()"
)


@contextlib.contextmanager
def tensorboard(logdir, *flags: str, hide_tensorflow: bool = False):
    """Runs the real `tensorboard` on loopback; yields `(port, output)`, `output` filled at exit.

    With `hide_tensorflow`, it runs as where TensorFlow is not installed (`s3://` logdirs: only
    TensorBoard's own filesystem layer reads them)."""
    port = free_port()
    program = [os.path.join(os.path.dirname(sys.executable), "tensorboard")]
    if hide_tensorflow:
        program = [sys.executable, "-c", WITHOUT_TENSORFLOW]
    proc = serve(
        [*program, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port), *flags]
    )
    output: list[str] = []
    try:
        yield port, output
    finally:
        proc.terminate()
        output.append(proc.communicate(timeout=30)[0])
