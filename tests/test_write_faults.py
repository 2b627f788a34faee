"""Faults while writing (issue 22, item 4): real training in real processes, killed, limited,
doubled and resumed; what they wrote is read back through TensorBoard's data provider and the
plugin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A training script: argv = log_dir, epochs, initial_epoch, then what to do (see FAULTS).
TRAIN = r"""
import os, signal, struct, sys, time, warnings
import numpy as np, keras
from tb_cnnviz.callbacks import CNNViz

log_dir, epochs, initial, fault = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if fault == "size_limit":
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes beyond the limit fail with EFBIG
    limit = int(sys.argv[5])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    probe = os.path.join(log_dir, "probe")
    os.makedirs(log_dir, exist_ok=True)
    try:
        with open(probe, "wb") as f:
            f.write(b"x" * (limit + 1))
        print("NO-LIMIT")
        sys.exit(0)
    except OSError:
        os.remove(probe)
if fault == "tear_step_2":
    # Dies in the middle of writing step 2's plan record (the step's last summary): half of
    # the record holding it reaches the file.
    from tensorboard.compat.proto import event_pb2
    from tb_cnnviz import events
    original = events.Records.write
    def write(self, data):
        event = event_pb2.Event.FromString(data)
        if event.step == 2 and any(v.tag == "cnnviz/plan" for v in event.summary.value):
            self._file.write(struct.pack("<Q", len(data)) + b"\0" * 4 + data[: len(data) // 2])
            self._file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, data)
    events.Records.write = write

class Fault(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if fault == "slow":
            time.sleep(3.0)  # holds the run while the second process imports and starts
        if fault == "kill_after_3" and epoch == 3:
            viz._planner._run.flush()  # step 3 on disk, then preempted
            os.kill(os.getpid(), signal.SIGKILL)

model = keras.Sequential([
    keras.Input((12, 12, 3)),
    keras.layers.Conv2D(4, 3, activation="relu", name="conv_a"),
    keras.layers.Conv2D(6, 3, activation="relu", name="conv_b"),
    keras.layers.GlobalAveragePooling2D(),
    keras.layers.Dense(2, name="out"),
])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x, y = rng.random((16, 12, 12, 3), dtype=np.float32), rng.integers(0, 2, 16)
viz = CNNViz(log_dir, probe_images=x[:3], budget=None, actmax_freq=0, snapshots=None)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    history = model.fit(x, y, epochs=epochs, initial_epoch=initial, batch_size=8, verbose=0,
                        callbacks=[viz, Fault()])
for w in seen:
    if "tb-cnnviz" in str(w.message):
        print("WARNING", str(w.message).replace("\n", " "))
print("DONE", len(history.history["loss"]))
"""

TAGS = {"cnnviz/plan", "conv_a/weights", "conv_b/weights", "conv_a/feature_maps"}


def train(log_dir, epochs, *extra, initial=0, fault="none", wait=True):
    """Runs TRAIN in a new Python process (the suite's backend); returns it or its result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), ROOT) if p)
    args = [sys.executable, "-c", TRAIN, str(log_dir), str(epochs), str(initial), fault, *extra]
    if not wait:
        return subprocess.Popen(args, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
    return subprocess.run(args, env=env, cwd=ROOT, text=True, capture_output=True, timeout=300)


def steps_of(logs, tags=TAGS):
    """`{tag: steps}` of the train run, each datum's step listed (so a duplicate shows)."""
    return {tag: logs.steps("train", tag) for tag in tags}


def plan_steps(client):
    """The steps of the plugin's /plan answer for the train run."""
    body = client.get("/data/plugin/cnnviz/plan", query_string={"run": "train"})
    assert body.status_code == 200, body.data
    return body.get_json()["steps"]


@pytest.mark.slow
def test_a_process_killed_while_writing_a_step_leaves_every_complete_step(tmp_path, read_logdir):
    """SIGKILL halfway through writing step 2: steps 0 and 1 are served whole, step 2 nowhere."""
    result = train(tmp_path, 5, fault="tear_step_2")
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    logs = read_logdir(tmp_path)
    assert steps_of(logs) == dict.fromkeys(TAGS, [0, 1])
    client = logs.client()
    tags = client.get("/data/plugin/cnnviz/tags").get_json()["train"]
    assert all(2 not in t.get("steps", []) for t in tags.values()), tags
    assert [s["step"] for s in plan_steps(client)] == [0, 1]
    layer = client.get(
        "/data/plugin/cnnviz/layer", query_string={"run": "train", "tag": "conv_b/weights"}
    )
    assert layer.status_code == 200 and layer.get_json()["step"] == 1


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE needs a POSIX system")
def test_a_full_disk_warns_once_and_training_completes(tmp_path, read_logdir):
    """Files capped at 40 kB (RLIMIT_FSIZE, as a full disk): one warning, all 8 epochs train,
    and the steps written before the limit stay readable, each one whole."""
    result = train(tmp_path, 8, "40000", fault="size_limit")
    if "NO-LIMIT" in result.stdout:
        pytest.skip("RLIMIT_FSIZE does not limit file sizes here")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DONE 8" in result.stdout
    said = [line for line in result.stdout.splitlines() if line.startswith("WARNING")]
    assert len(said) == 1 and "cannot write" in said[0] and "training continues" in said[0], said
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    logs = read_logdir(tmp_path)
    written = logs.steps("train", "cnnviz/plan")
    assert 1 <= len(written) < 8 and written == list(range(len(written)))
    assert steps_of(logs) == dict.fromkeys(TAGS, written)  # no partial step
    assert [s["step"] for s in plan_steps(logs.client())] == written


def test_two_fits_in_one_process_keep_each_step_once(tmp_path, read_logdir):
    """Two fit() calls of 2 epochs on one CNNViz: steps 0-3, each once, one warning."""
    import warnings

    from test_callbacks import fit, small_cnn

    from tb_cnnviz.callbacks import CNNViz

    model = small_cnn()
    viz = CNNViz(str(tmp_path), budget=None, actmax_freq=0, snapshots=None)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit(model, [viz], epochs=2)
        fit(model, [viz], epochs=2)
    said = [str(w.message) for w in seen if "tb-cnnviz" in str(w.message)]
    assert len(said) == 1 and "initial_epoch=2" in said[0], said
    logs = read_logdir(tmp_path)
    assert logs.steps("train", "conv_a/weights") == [0, 1, 2, 3]
    assert [s["step"] for s in plan_steps(logs.client())] == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_second_process_on_the_same_run_is_refused_with_a_warning(tmp_path, read_logdir):
    """Two processes write one run at once: the first wins, the second warns naming it, and
    every step is kept once."""
    first = train(tmp_path, 4, fault="slow", wait=False)
    state = tmp_path / "train" / "cnnviz_run.json"
    deadline = time.monotonic() + 240
    while not state.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    second = train(tmp_path, 3)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0 and "DONE 4" in out, err[-3000:]
    assert second.returncode == 0 and "DONE 3" in second.stdout, second.stderr[-3000:]
    said = [line for line in second.stdout.splitlines() if line.startswith("WARNING")]
    assert len(said) == 1 and f"process {first.pid} on" in said[0] and "wins" in said[0], said
    logs = read_logdir(tmp_path)
    assert steps_of(logs) == dict.fromkeys(TAGS, [0, 1, 2, 3])
    assert json.loads(state.read_text())["pid"] == first.pid


@pytest.mark.slow
def test_a_preempted_job_resumed_with_initial_epoch_continues_without_duplicates(
    tmp_path, read_logdir
):
    """Killed after step 3, resumed from epoch 2: steps 0-5 each once, 2 and 3 from the new
    process, and its first plan record says it resumed."""
    killed = train(tmp_path, 6, fault="kill_after_3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    before = read_logdir(tmp_path)
    assert before.steps("train", "cnnviz/plan") == [0, 1, 2, 3]
    resumed = train(tmp_path, 6, initial=2)
    assert resumed.returncode == 0 and "DONE 4" in resumed.stdout, resumed.stderr[-3000:]
    logs = read_logdir(tmp_path)
    assert steps_of(logs) == dict.fromkeys(TAGS, [0, 1, 2, 3, 4, 5])
    plan = {s: logs.datum("train", "cnnviz/plan", s)[0] for s in range(6)}
    assert plan[2]["resumed"] == {"previous_last_step": 3, "from_step": 2, "replaced": True}
    assert all("resumed" not in plan[s] for s in (0, 1, 3, 4, 5))
    old = {d.step: d.wall_time for d in before.data("train", "conv_a/weights")}
    new = {d.step: d.wall_time for d in logs.data("train", "conv_a/weights")}
    assert new[2] > old[3] and new[3] > old[3]  # the resumed process's pictures
    steps = plan_steps(logs.client())
    assert [s["step"] for s in steps] == [0, 1, 2, 3, 4, 5]


def test_a_long_run_is_thinned_and_its_plan_says_so(tmp_path, read_logdir):
    """40 epochs with thin_after=4: pictures at the scheduled steps and the last; every other
    step has a plan record saying `thinned`, which /plan passes on."""
    from test_callbacks import fit, small_cnn

    from tb_cnnviz import thinning
    from tb_cnnviz.callbacks import CNNViz

    viz = CNNViz(str(tmp_path), budget=None, actmax_freq=0, snapshots=None, thin_after=4)
    fit(small_cnn(), [viz], epochs=40)
    expected = [s for s in range(40) if thinning.Thinning(4).scheduled(s)] + [39]
    assert expected == [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 39]
    logs = read_logdir(tmp_path)
    assert logs.steps("train", "conv_a/weights") == expected
    steps = plan_steps(logs.client())
    assert [s["step"] for s in steps] == list(range(40))
    for s in steps:
        assert ("thinned" in s) == (s["step"] not in expected), s
    assert steps[33]["thinned"].startswith("thinned: every 16th step is drawn from step 32 on")


def test_max_run_bytes_caps_the_run(tmp_path, read_logdir):
    """With max_run_bytes of about three steps' pictures, 8 epochs draw at most four steps (the
    count of bytes lags the background writer by a step), the plan says why the others are not
    drawn; a bad value is a ValueError naming the argument."""
    from test_callbacks import fit, small_cnn

    from tb_cnnviz.callbacks import CNNViz

    with pytest.raises(ValueError, match="max_run_bytes"):
        CNNViz(str(tmp_path), max_run_bytes=0)
    probe = CNNViz(str(tmp_path / "probe"), budget=None, actmax_freq=0, snapshots=None)
    fit(small_cnn(), [probe], epochs=1)
    one_step = read_logdir(tmp_path / "probe").datum("train", "cnnviz/plan", 0)[0]["costs"]
    step_bytes = sum(c["bytes"] for c in one_step.values())
    # Three steps and a half: a fixed slack would be more than a step of this small model's
    # pictures (1.7 KB a step, packed ranges) and let the last epoch in as a fifth step.
    cap = 3 * step_bytes + step_bytes // 2
    viz = CNNViz(str(tmp_path / "capped"), budget=None, actmax_freq=0, snapshots=None,
                 max_run_bytes=cap)  # fmt: skip
    fit(small_cnn(), [viz], epochs=8)
    logs = read_logdir(tmp_path / "capped")
    drawn = logs.steps("train", "conv_a/weights")
    assert 1 <= len(drawn) <= 4, drawn
    plan = plan_steps(logs.client())
    capped = [s["step"] for s in plan if "max_run_bytes" in s.get("thinned", "")]
    assert capped and set(capped).isdisjoint(drawn) and len(capped) + len(drawn) == 8, plan
