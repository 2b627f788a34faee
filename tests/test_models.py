"""Every model shape users train logs every kind that applies, and the plugin serves it all."""

from __future__ import annotations

import warnings

import keras
import pytest
import zoo

from tb_cnnviz import layers as layer_lib
from tb_cnnviz.callbacks import CNNViz


@pytest.fixture
def restore_policy():
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


@pytest.mark.parametrize(
    "name",
    # keras.applications models take 15-45 s each here: the oldest-versions run leaves them out
    # (scripts/test.sh), the smaller models beside them take the same code paths.
    [pytest.param(n, marks=pytest.mark.slow) if n in zoo.APPLICATIONS else n for n in zoo.MODELS],
)
def test_model_logs_every_kind_and_the_plugin_serves_it(
    name, tmp_path, read_logdir, restore_policy
):
    """One epoch with CNNViz defaults: no warning, each kind logged, each layer drawable."""
    model, x, y, probes = zoo.MODELS[name]()
    if name in zoo.APPLICATIONS:
        # Training steps run eagerly here: tracing a keras.applications model's train step takes
        # 10-40 s on two cores, and it has no part in what the callback draws or the plugin serves.
        model.run_eagerly = True
    viz = CNNViz(str(tmp_path), probe_images=probes, budget=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[viz])
    assert [str(w.message) for w in caught if "tb-cnnviz" in str(w.message)] == []

    client = read_logdir(tmp_path).client()
    tags = client.get("/data/plugin/cnnviz/tags").get_json()["train"]
    kinds = {info["kind"] for info in tags.values()}
    assert kinds == {callback.kind for callback in viz.callbacks}
    conv_paths = [path for path, _ in layer_lib.conv_layers(model)]
    for kind in ("weights", "feature_maps"):
        assert sorted(info["layer"] for info in tags.values() if info["kind"] == kind) == sorted(
            conv_paths
        )
    for kind in kinds:
        tag = next(t for t, info in tags.items() if info["kind"] == kind)
        layer = client.get("/data/plugin/cnnviz/layer", query_string={"run": "train", "tag": tag})
        assert layer.status_code == 200, layer.get_data(as_text=True)
        body = layer.get_json()
        assert body["index"] is not None and body["atlases"]
        png = client.get(f"/data/plugin/cnnviz/{body['atlases'][0]}")
        assert png.status_code == 200 and png.data[:4] == b"\x89PNG"


def test_a_layer_with_thousands_of_filters_is_sampled_and_says_so(tmp_path, read_logdir):
    """2048 filters: 256 drawn evenly from first to last, and the cap is stated in the index."""
    model, x, y, probes = zoo.wide_layer()
    model.fit(
        x,
        y,
        epochs=1,
        verbose=0,
        callbacks=[CNNViz(str(tmp_path), probe_images=probes, budget=None)],
    )
    logs = read_logdir(tmp_path)
    for kind in ("weights", "feature_maps"):
        index, _ = logs.datum("train", f"wide/{kind}", 0)
        assert index["total_filters"] == 2048 and len(index["filters"]) == 256
        assert index["filters"][0] == 0 and index["filters"][-1] == 2047
        assert "sampled 256 of 2048 filters" in index["notes"]
    weights, _ = logs.datum("train", "wide/weights", 0)
    assert weights["slices"]["axis"] == "input_channel_grid"
    assert weights["tile"] == [4, 4, 1]  # 16 input channels of a 1x1 kernel as a 4x4 grid
