"""Faults users meet: serving while training writes, and logdirs with thousands of tags."""

from __future__ import annotations

import json
import time
import urllib.request

import keras
import numpy as np
import tensorflow as tf
from tbserver import get_json, tensorboard

from tb_cnnviz import summary
from tb_cnnviz.callbacks import CNNViz


def test_tensorboard_shows_new_steps_while_training_writes(tmp_path):
    """A live `tensorboard` sees each epoch's pictures while fit() runs, and logs no error."""
    seen = []

    class WaitForTheServer(keras.callbacks.Callback):
        """After CNNViz logged an epoch, polls the live server until that step shows."""

        def __init__(self, base):
            super().__init__()
            self.base = base

        def on_epoch_end(self, epoch, logs=None):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                tags = get_json(f"{self.base}/tags").get("train", {})
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
    with tensorboard(tmp_path, "--reload_interval", "1") as (port, output):
        get_json(f"http://127.0.0.1:{port}/data/plugins_listing")  # the server is up
        base = f"http://127.0.0.1:{port}/data/plugin/cnnviz"
        viz = CNNViz(str(tmp_path), probe_images=x[:2])
        model.fit(x, np.zeros((8, 2)), epochs=3, verbose=0, callbacks=[viz, WaitForTheServer(base)])
        with urllib.request.urlopen(f"{base}/layer?run=train&tag=c1/weights&step=2") as r:
            assert json.loads(r.read())["index"]["filters"] == [0, 1, 2, 3]
    assert seen == [[0], [0, 1], [0, 1, 2]]
    assert "Traceback" not in output[0] and " E " not in output[0], output[0][-3000:]


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
