"""Faults users meet: serving while training writes, and logdirs with thousands of tags."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

import keras
import numpy as np
import tensorflow as tf
from tbserver import free_port, get_json, serve

from tb_cnnviz import summary
from tb_cnnviz.callbacks import CNNViz


def test_tensorboard_shows_new_steps_while_training_writes(tmp_path):
    """A live `tensorboard` sees each epoch's pictures while fit() runs, and logs no error."""
    port = free_port()
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    proc = serve(
        [
            tensorboard,
            "--logdir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
        ]
    )
    base = f"http://127.0.0.1:{port}/data/plugin/cnnviz"
    get_json(f"http://127.0.0.1:{port}/data/plugins_listing")  # the server is up
    seen = []

    class WaitForTheServer(keras.callbacks.Callback):
        """After CNNViz logged an epoch, polls the live server until that step shows."""

        def on_epoch_end(self, epoch, logs=None):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                tags = get_json(f"{base}/tags").get("train", {})
                steps = tags.get("c1/weights", {}).get("steps", [])
                if epoch in steps:
                    seen.append(steps)
                    return
                time.sleep(0.5)
            raise AssertionError(f"step {epoch} never appeared; last tags: {tags}")

    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(4, 3, name="c1"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile("adam", "mse")
    x = np.random.default_rng(0).random((8, 10, 10, 3), dtype=np.float32)
    try:
        model.fit(
            x,
            np.zeros((8, 2)),
            epochs=3,
            verbose=0,
            callbacks=[CNNViz(str(tmp_path), probe_images=x[:2]), WaitForTheServer()],
        )
        with urllib.request.urlopen(f"{base}/layer?run=train&tag=c1/weights&step=2") as r:
            assert json.loads(r.read())["index"]["filters"] == [0, 1, 2, 3]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert seen == [[0], [0, 1], [0, 1, 2]]
    assert "Traceback" not in out and " E " not in out, out[-3000:]


def test_a_logdir_with_thousands_of_tags_is_listed_and_served(tmp_path, read_logdir):
    """3000 tags in one run: /tags lists them all and any one layer is drawable."""
    writer = tf.summary.create_file_writer(str(tmp_path / "big"))
    kernel = np.random.default_rng(0).normal(size=(3, 3, 1, 2))
    with writer.as_default():
        for i in range(1500):
            summary.filter_weights(f"block{i}/conv", kernel, step=0)
            summary.feature_maps(f"block{i}/conv", np.abs(kernel[None, ..., 0, :]), step=0)
    writer.close()
    client = read_logdir(tmp_path).client()
    tags = client.get("/data/plugin/cnnviz/tags").get_json()["big"]
    assert len(tags) == 3000
    layer = client.get(
        "/data/plugin/cnnviz/layer", query_string={"run": "big", "tag": "block1499/conv/weights"}
    )
    assert layer.status_code == 200 and layer.get_json()["index"]["layer"] == "block1499/conv"
