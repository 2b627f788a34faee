"""Every Keras backend: the same pictures for the same weights, one writer across JAX processes,
TensorFlow-free writing, and a clear message for a backend tb-cnnviz does not support.

Each backend runs in its own Python process (Keras picks its backend once per process); the
pictures they write are read back here through TensorBoard's real data provider.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tbserver import free_port

from tb_cnnviz import reader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The model every backend builds with the weights `make_weights` saved; it trains nothing
# (learning rate 0), so the backends see the very same weights. A script goes on from here.
SAME_MODEL = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras

    logdir, weights = sys.argv[1], sys.argv[2]
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(6, 3, activation="relu", name="c1"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, name="out"),
    ])
    saved = np.load(weights)
    model.set_weights([saved[f"w{i}"] for i in range(len(saved.files))])
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    """
)
# A script's last lines: which backend ran, and whether TensorFlow was importable.
REPORT = textwrap.dedent(
    """
    has_tf = sys.modules.get("tensorflow") is not None  # None: hidden
    print("BACKEND", keras.backend.backend(), "TF" if has_tf else "no-TF")
    """
)
SAME_WEIGHTS = (
    SAME_MODEL
    + textwrap.dedent(
        """
        from tb_cnnviz.callbacks import CNNViz

        probes = np.load(weights.replace(".npz", "_probes.npy"))
        viz = CNNViz(logdir, probe_images=probes, budget=None, attribution_freq=0, actmax_freq=0)
        model.fit(probes, np.zeros(len(probes)), epochs=1, batch_size=4, verbose=0, callbacks=[viz])
        """
    )
    + REPORT
)


def run_python(code: str, *args: str, backend: str, hide_tf: bool = False, timeout: float = 300):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": ROOT}
    if hide_tf:  # as where TensorFlow is not installed (tests/conftest.py)
        code = "import conftest  # noqa\n" + code
        env["TB_CNNVIZ_HIDE_TENSORFLOW"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def write_on_tensorflow_and_jax(script: str, path, weights: str) -> None:
    """Runs `script` (argv: logdir, weights) on TensorFlow and on JAX (TF hidden)."""
    for backend, hide in (("tensorflow", False), ("jax", True)):
        result = run_python(script, str(path / backend), weights, backend=backend, hide_tf=hide)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"BACKEND {backend} {'no-TF' if hide else 'TF'}" in result.stdout


def make_weights(path) -> str:
    """Saves one set of weights and probe images both backends load."""
    import keras  # the suite's own backend builds them

    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    weights = str(path / "weights.npz")
    np.savez(weights, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    probes = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    np.save(str(path / "weights_probes.npy"), probes)
    return weights


def test_same_pictures_on_tensorflow_and_jax_for_the_same_weights(tmp_path):
    """Weights and feature maps written on JAX (TF hidden) equal TF's within 1/255 of range."""
    pytest.importorskip("jax")
    weights = make_weights(tmp_path)
    write_on_tensorflow_and_jax(SAME_WEIGHTS, tmp_path, weights)
    tf_logs, jax_logs = reader.Logdir(tmp_path / "tensorflow"), reader.Logdir(tmp_path / "jax")
    assert tf_logs.layers("train") == jax_logs.layers("train")
    for layer in ("c1", "c2"):
        for kind in ("weights", "feature_maps"):
            a, b = tf_logs.read("train", layer, kind, 0), jax_logs.read("train", layer, kind, 0)
            assert a.tiles.shape == b.tiles.shape
            assert a.filters == b.filters
            # A weight filter's slices share one range; each feature map has its own.
            axes = (1, 2, 3, 4) if kind == "weights" else (2, 3, 4)
            span = np.ptp(a.tiles, axis=axes, keepdims=True)
            span = np.where(span > 0, span, 1.0)
            assert np.all(np.abs(a.tiles - b.tiles) <= span / 255 + 1e-6), (layer, kind)
            for key, values in a.index["stats"].items():
                np.testing.assert_allclose(
                    np.asarray(values, dtype=float),
                    np.asarray(b.index["stats"][key], dtype=float),
                    rtol=1e-4,
                    atol=1e-5,
                    err_msg=f"{layer}/{kind} {key}",
                )


TWO_PROCESSES = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras
    import numpy as np
    from tb_cnnviz.callbacks import CNNViz

    process, port, logdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    keras.distribution.initialize(
        job_addresses=f"localhost:{port}", num_processes=2, process_id=process)
    distribution = keras.distribution.DataParallel()
    distribution.auto_shard_dataset = False  # each process feeds its own half below
    keras.distribution.set_distribution(distribution)
    assert jax.device_count() == 2 and jax.local_device_count() == 1
    rng = np.random.default_rng(0)
    x = rng.random((32, 12, 12, 3), dtype=np.float32)
    y = rng.integers(0, 3, 32)
    model = keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    viz = CNNViz(logdir, probe_images=x[:3], budget=None, attribution_freq=0, actmax_freq=0)
    half = slice(16 * process, 16 * (process + 1))
    history = model.fit(x[half], y[half], epochs=2, batch_size=8, verbose=0, callbacks=[viz])
    print("LOSS", history.history["loss"])
    """
)


def test_a_fit_on_jax_imports_no_installed_tensorflow_for_its_snapshots(tmp_path):
    """On JAX beside an installed TensorFlow, the snapshots' architecture (Keras' to_json, which
    imports TensorFlow wherever it is installed: 2 s of a tutorial's budget) imports none, and
    the architecture written names every layer."""
    pytest.importorskip("jax")
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed here: there is none to keep out")
    weights = make_weights(tmp_path)
    # SAME_WEIGHTS keeps CNNViz's snapshots on (its default); TensorFlow is not hidden here.
    result = run_python(SAME_WEIGHTS, str(tmp_path / "logs"), weights, backend="jax")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BACKEND jax no-TF" in result.stdout
    [written] = pathlib.Path(tmp_path / "logs").rglob("model.json")
    layers = json.loads(written.read_text())["config"]["layers"]
    assert [layer["config"]["name"] for layer in layers[1:]] == ["c1", "max_pooling2d", "c2",
        "global_average_pooling2d", "out"]  # fmt: skip


def test_two_jax_processes_write_each_step_exactly_once(tmp_path, read_logdir):
    """Under keras.distribution across 2 JAX processes only process 0 writes, once per step."""
    pytest.importorskip("jax")
    port, logdir = str(free_port()), str(tmp_path / "logs")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ROOT}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_PROCESSES, str(i), port, logdir],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    losses = [out.split("LOSS")[-1].strip() for out, _ in outputs]
    assert losses[0] == losses[1]  # one model, trained data-parallel
    files = [f for _, _, fs in os.walk(logdir) for f in fs if "tfevents" in f]
    assert len(files) == 1, files  # one event file: process 1 wrote nothing
    # Saving weights spread over processes is a collective: the chief alone would hang.
    assert not [d for d, _, _ in os.walk(logdir) if d.endswith("cnnviz_snapshots")]
    assert "no copies of the weights while training spans several processes" in outputs[0][1]
    logs = read_logdir(logdir)
    tags = logs.cnnviz_tags()
    assert {("train", "c1/weights"), ("train", "c1/feature_maps")} <= tags
    for run, tag in tags:
        assert logs.steps(run, tag) == [0, 1], tag  # each step exactly once


UNSUPPORTED = textwrap.dedent(
    """
    import keras
    from tb_cnnviz.callbacks import CNNViz, FilterWeights
    for make in (lambda: CNNViz("logs"), lambda: FilterWeights("logs")):
        try:
            make()
        except ValueError as e:
            print("ERROR", e)
    """
)


def test_an_unsupported_backend_is_named_when_the_callback_is_made(tmp_path):
    """On Keras' numpy backend the callbacks raise a ValueError naming it and the supported ones."""
    pytest.importorskip("jax")  # Keras' numpy backend imports JAX
    result = run_python(UNSUPPORTED, backend="numpy")
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2, result.stdout
    for line in errors:
        assert "Keras backend 'numpy'" in line
        assert "tensorflow, jax, torch" in line
    assert not (tmp_path / "logs").exists()


IN_JIT = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp
    from tb_cnnviz import summary

    writer = summary.create_file_writer(sys.argv[1])

    @jax.jit
    def step(kernel):
        with writer.as_default(step=0):
            summary.filter_weights("c", kernel)
        return kernel

    try:
        step(jnp.zeros((3, 3, 3, 4)))
    except RuntimeError as e:
        print("ERROR", e)
    """
)


def test_summary_functions_inside_jax_jit_raise_a_clear_error(tmp_path):
    """Inside jax.jit the summary functions say they run eagerly, and how to call them instead."""
    pytest.importorskip("jax")
    result = run_python(IN_JIT, str(tmp_path), backend="jax", hide_tf=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ERROR tb_cnnviz.summary functions run eagerly" in result.stdout
    assert "outside the compiled function" in result.stdout
