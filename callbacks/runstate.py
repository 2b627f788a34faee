"""Who writes a run directory, and up to which step: `cnnviz_run.json` beside the event files.

TensorBoard keys every picture by (run, tag, step). Four situations would give one step twice,
or mix two trainings into one series; this file tells them apart:

* *A second `fit()` in the same process* (training goes on from the weights the first left):
  its steps continue after the last one written, with one warning suggesting `initial_epoch`.
* *A preempted job resumed* (`fit(initial_epoch=k)` in a new process, the old one gone, killed
  by SIGKILL included): steps continue at `k`; what the old process wrote at `k` and later is
  replaced (a `SessionLog.START` event at `k` tells TensorBoard's readers so), and the first
  plan record of the new process says it resumed.
* *A new process restarting at epoch 0* into a run that holds steps: the same, with a warning:
  the earlier process's pictures are replaced by the new ones.
* *Two processes at once*: the first one to claim the run writes it; the second logs nothing
  there and warns, naming the process that wins.

The file is rewritten (atomically) after each step is on disk: `{"pid", "host", "last_step",
"live", "expires"}`. A claim is live while its process runs (same host: the process exists;
another host: until `expires`, renewed at every step). In a remote log_dir (`s3://`, `gs://`;
`tb_cnnviz.storage`) the file is an object, written whole; two processes that claim one run in
the same instant are not told apart there (an object store has no exclusive create).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

from tb_cnnviz import storage

__all__ = ["FILE", "Claim", "claim", "record"]

FILE = "cnnviz_run.json"

#: How long a claim from another host stays live without a new step, at least.
MIN_LEASE_SECONDS = 600.0


class Claim:
    """What `claim` found: who else writes the run (`taken_by`), and the steps written before.

    Attributes:
        taken_by: A description of the live process that writes the run, or None when this
            process may write it.
        last_step: The last step written to the run before (by any process), or None.
        same_process: Whether `last_step` was written by this process (an earlier `fit()`).
    """

    def __init__(self, taken_by=None, last_step=None, same_process=False):
        self.taken_by = taken_by
        self.last_step = last_step
        self.same_process = same_process


def _me() -> tuple[int, str]:
    return os.getpid(), socket.gethostname()


def _read(run_dir: str) -> dict | None:
    try:
        state = json.loads(storage.read_bytes(storage.join(run_dir, FILE)))
        return state if isinstance(state, dict) else None
    except (OSError, ValueError):
        return None


def _alive(state: dict) -> bool:
    pid, host = _me()
    if not state.get("live"):
        return False
    if state.get("host") == host:
        try:
            os.kill(int(state.get("pid", -1)), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError, TypeError, OverflowError):
            return True  # exists (another user's) or unreadable: assume it is there
        return True
    return float(state.get("expires", 0)) > time.time()


def claim(run_dir: str) -> Claim:
    """Claims `run_dir` for this process unless another live process writes it.

    Args:
        run_dir: The run directory, local or remote.

    Returns:
        A `Claim`.

    Example:
        >>> import tempfile
        >>> run = tempfile.mkdtemp()
        >>> c = claim(run)
        >>> c.taken_by, c.last_step
        (None, None)
        >>> record(run, 4, live=False)
        >>> claim(run).last_step, claim(run).same_process
        (4, True)
    """
    storage.makedirs(run_dir)
    with _locked(run_dir):
        return _claim(run_dir)


def _claim(run_dir: str) -> Claim:
    state = _read(run_dir) or {}
    pid, host = _me()
    mine = state.get("pid") == pid and state.get("host") == host
    last = state.get("last_step")
    last = int(last) if isinstance(last, int) and not isinstance(last, bool) else None
    if state and not mine and _alive(state):
        return Claim(taken_by=f"process {state.get('pid')} on {state.get('host')}")
    record(run_dir, last, live=True)
    return Claim(last_step=last, same_process=mine)


@contextlib.contextmanager
def _locked(run_dir: str):
    """Holds `<FILE>.lock` (created exclusively) so that two processes claim one at a time
    (in a local folder: an object store has no exclusive create)."""
    if storage.is_remote(run_dir):
        yield
        return
    lock = os.path.join(run_dir, FILE + ".lock")
    deadline = time.monotonic() + 10
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            break
        except FileExistsError:
            if time.monotonic() > deadline:  # left by a killed process: take it over
                break
            time.sleep(0.05)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(lock)


def record(run_dir: str, last_step: int | None, *, live: bool, lease: float = 0.0) -> None:
    """Writes the run's state: this process, the last step on disk, whether it still writes.

    Args:
        run_dir: The run directory, local or remote.
        last_step: The last step written, or None.
        live: Whether this process goes on writing the run.
        lease: Seconds another host should wait for the next step before it may take over
            (at least `MIN_LEASE_SECONDS`).
    """
    pid, host = _me()
    state = {
        "pid": pid,
        "host": host,
        "last_step": last_step,
        "live": bool(live),
        "expires": time.time() + max(MIN_LEASE_SECONDS, lease),
    }
    storage.makedirs(run_dir)
    storage.write_bytes(storage.join(run_dir, FILE), json.dumps(state).encode("utf-8"))
