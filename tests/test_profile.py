"""`tb_cnnviz.profile`: where the callbacks' time goes, per kind and phase."""

from __future__ import annotations

import threading
import time

import keras
import numpy as np

from tb_cnnviz import profile
from tb_cnnviz.callbacks import CNNViz


def test_nested_phases_are_exclusive_and_add_up():
    """An inner phase's time is not counted in the outer one; the phases sum to the whole."""
    p = profile.Profile()
    start = time.perf_counter()
    with p.recording("feature_maps"):
        time.sleep(0.02)  # the default phase, compute
        with profile.phase("encode"):
            time.sleep(0.03)
            with profile.phase("write"):
                time.sleep(0.01)
    whole = time.perf_counter() - start
    table = p.table()["feature_maps"]
    # Each phase holds at least its own sleep, and together they hold no more than the whole:
    # so no phase also counted another's time.
    assert table["compute"] >= 0.02 and table["encode"] >= 0.03 and table["write"] >= 0.01
    assert sum(table.values()) <= whole


def test_a_phase_renamed_inside_counts_under_its_new_name():
    """A compiled call that traced renames its phase to `trace`."""
    p = profile.Profile()
    with p.recording("attribution"):
        with profile.phase("compute") as timing:
            timing.name = "trace"
    assert set(p.table()["attribution"]) == {"compute", "trace"}
    assert p.table()["attribution"]["compute"] < 0.01


def test_phases_are_recorded_per_thread():
    """Another thread's phases go to its own recording, or nowhere when it has none."""
    p = profile.Profile()
    done = threading.Event()

    def other():
        with profile.phase("encode"):  # no recording on this thread: not timed
            time.sleep(0.01)
        with p.recording("actmax"):
            with profile.phase("copy"):
                time.sleep(0.01)
        done.set()

    with p.recording("weights"):
        worker = threading.Thread(target=other)
        worker.start()
        worker.join(10)
    assert done.is_set()
    table = p.table()
    assert set(table) == {"weights", "actmax"}
    assert set(table["actmax"]) == {"compute", "copy"}
    assert "encode" not in table["weights"]


def test_a_fit_profiles_each_kind_and_the_phases_account_for_its_own_time(tmp_path):
    """CNNViz's profile splits its own time into setup, trace, compute, copy, encode, write."""
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((8, 12, 12, 3), dtype=np.float32)
    viz = CNNViz(str(tmp_path), probe_images=x[:2], labels=[0, 1], budget=None)
    model.fit(x, np.arange(8) % 3, epochs=2, verbose=0, callbacks=[viz])
    table = viz.time_budget.profile.table()
    assert {"weights", "feature_maps", "attribution", "actmax", "plan"} <= set(table)
    assert {"setup", "encode", "write"} <= set(table["feature_maps"])
    assert {"encode", "write"} <= set(table["weights"])
    if keras.backend.backend() != "torch":  # PyTorch traces nothing
        assert table["attribution"]["trace"] > 0 and table["actmax"]["trace"] > 0
    profiled = viz.time_budget.profile.total()
    assert 0.8 * viz.time_budget.own_seconds <= profiled <= viz.time_budget.own_seconds


def test_a_recording_inside_another_pauses_it():
    """A callback's setup recorded inside CNNViz's is counted once, under the inner kind."""
    p = profile.Profile()
    start = time.perf_counter()
    with p.recording("layers", "setup"):
        time.sleep(0.01)
        with p.recording("feature_maps", "setup"):
            time.sleep(0.03)
        time.sleep(0.01)
    whole = time.perf_counter() - start
    table = p.table()
    assert table["layers"]["setup"] >= 0.02 and table["feature_maps"]["setup"] >= 0.03
    assert table["layers"]["setup"] + table["feature_maps"]["setup"] <= whole
