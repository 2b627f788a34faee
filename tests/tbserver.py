"""Helpers for tests that run a real TensorBoard server as a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 60.0):
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
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )


def wait_for_steps(port: int, run: str, tag: str, expected: list[int], timeout: float = 90.0):
    """Polls the tags route until the steps are complete (the loader reads in the background)."""
    deadline = time.monotonic() + timeout
    base = f"http://127.0.0.1:{port}"
    while True:
        listing = get_json(f"{base}/data/plugins_listing")
        tags = get_json(f"{base}/data/plugin/cnnviz/tags")
        steps = tags.get(run, {}).get(tag, {}).get("steps")
        if steps == expected or time.monotonic() > deadline:
            return listing, steps
        time.sleep(1.0)
