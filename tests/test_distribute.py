"""tf.distribute: training completes, only the chief writes, each summary exists exactly once."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap

from tbserver import free_port
from tensorboard.backend.event_processing import event_file_loader

TRAIN = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import tensorflow as tf
    import keras
    from tb_cnnviz.callbacks import CNNViz

    logdir, mode = sys.argv[1], sys.argv[2]
    if mode == "mirrored":
        [cpu] = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    rng = np.random.default_rng(0)
    x = rng.random((32, 12, 12, 3), dtype=np.float32)
    y = rng.integers(0, 3, 32)
    with strategy.scope():
        model = keras.Sequential([
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(6, 3, activation="relu", name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    viz = CNNViz(logdir, probe_images=x[:3], budget=None)
    if mode == "mirrored":
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[viz])
        print("EPOCHS", len(history.history["loss"]))
        sys.exit(0)

    # Keras 3's fit() cannot run under MultiWorkerMirroredStrategy (keras-team/keras#20585),
    # so multi-worker users write the loop and drive the callback themselves.
    with strategy.scope():
        optimizer = keras.optimizers.Adam()
        optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="none")
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(8))

    @tf.function
    def train_step(xb, yb):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(loss_fn(yb, model(xb, training=True)),
                                                  global_batch_size=8)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return strategy.run(replica_step, args=(xb, yb))

    viz.set_model(model)
    viz.on_train_begin()
    epochs = 0
    for epoch in range(2):
        for xb, yb in data:
            train_step(xb, yb)
        viz.on_epoch_end(epoch)
        epochs += 1
    viz.on_train_end()
    print("EPOCHS", epochs)
    """
)


def run_workers(logdir, mode, tf_configs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    procs = []
    for config in tf_configs:
        worker_env = dict(env)
        if config is not None:
            worker_env["TF_CONFIG"] = json.dumps(config)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", TRAIN, str(logdir), mode],
                env=worker_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            outputs.append(out)
            assert proc.returncode == 0, "\n".join(
                line for line in out.splitlines() if not line.lstrip().startswith(("[", "..."))
            )[-3000:]
    finally:
        for proc in procs:
            proc.kill()
    return outputs


def summary_counts(logdir) -> collections.Counter:
    """How many times each (run folder, tag, step) of cnnviz or scalar data was written."""
    counts = collections.Counter()
    for root, _, files in os.walk(logdir):
        for name in files:
            if "tfevents" not in name:
                continue
            for event in event_file_loader.EventFileLoader(os.path.join(root, name)).Load():
                for value in event.summary.value:
                    run = os.path.relpath(root, logdir)
                    counts[(run, value.tag, event.step)] += 1
    return counts


def expected_weight_and_map_keys():
    return {
        ("train", f"{layer}/{kind}", step)
        for layer in ("c1", "c2")
        for kind in ("weights", "feature_maps", "dead_fraction")
        for step in (0, 1)
    }


def check_one_copy_each(logdir):
    counts = summary_counts(logdir)
    assert counts, "nothing was written"
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    assert expected_weight_and_map_keys() <= set(counts)
    assert {run for run, _, _ in counts} == {"train"}


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    """MirroredStrategy over 2 CPU replicas: training completes and each summary is written once."""
    [out] = run_workers(tmp_path, "mirrored", [None])
    assert "EPOCHS 2" in out
    check_one_copy_each(tmp_path)


def test_multi_worker_mirrored_strategy_only_the_chief_writes(tmp_path):
    """Two MultiWorkerMirrored workers on loopback: both finish, worker 0 alone writes, once."""
    # Both workers get the same log_dir, as users launching one script on every host do.
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    configs = [
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}} for i in (0, 1)
    ]
    outputs = run_workers(tmp_path, "multiworker", configs)
    assert all("EPOCHS 2" in out for out in outputs)
    check_one_copy_each(tmp_path)
