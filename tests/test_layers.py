"""Every conv layer, wherever it lives: found by path, captured while the model runs, drawn.

Part of the core suite (scripts/core_tests.txt): it runs on TensorFlow, JAX and PyTorch. The
models are written the way Keras' guides and KerasHub write blocks (tests/zoo.py): custom
`Layer` subclasses holding `Conv2D` attributes, nested two deep in a config-built backbone.
"""

from __future__ import annotations

import logging
import threading

import keras
import numpy as np
import pytest
import zoo

from tb_cnnviz import actmax, attribution, reader
from tb_cnnviz import layers as layer_lib
from tb_cnnviz.callbacks import CNNViz, FeatureMaps

RESIDUAL_PATHS = ["stem", "res1/c1", "res1/c2", "res2/c1", "res2/c2"]


def numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def by_hand(model, x):
    """Every conv output of `zoo.residual_blocks`, computed by calling its sublayers by hand."""
    res1, res2 = model.get_layer("res1"), model.get_layer("res2")
    out = {"stem": model.get_layer("stem")(x)}
    out["res1/c1"] = res1.c1(out["stem"])
    out["res1/c2"] = res1.c2(out["res1/c1"])
    r1 = keras.ops.relu(out["stem"] + out["res1/c2"])
    out["res2/c1"] = res2.c1(r1)
    out["res2/c2"] = res2.c2(out["res2/c1"])
    return out, r1


def gradient(fn, x) -> np.ndarray:
    """d fn(x) / dx with the backend's own autodiff (a tape, jax.grad, torch.autograd)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return numpy(tape.gradient(y, x))
    if backend == "jax":
        import jax

        return numpy(jax.grad(fn)(keras.ops.convert_to_tensor(x)))
    import torch

    x = torch.tensor(numpy(x), dtype=torch.float32, requires_grad=True)
    fn(x).backward()
    return numpy(x.grad)


def shared_block_model():
    """One residual block applied twice: its convs run twice per forward pass."""
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inp)
    block = zoo.ResidualBlock(4, name="shared")
    x = block(block(x))
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class Looped(keras.layers.Layer):
    """A conv inside a keras.ops loop: traced once on JAX, run twice on TensorFlow and PyTorch."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")

    def call(self, x):
        return keras.ops.fori_loop(0, 2, lambda i, h: self.conv(h), x)


# -- discovery -----------------------------------------------------------------------------------


def test_every_conv_inside_custom_blocks_is_found_by_path():
    """A stem and two custom residual blocks: all 5 convs, named by path, in forward order."""
    model, *_ = zoo.residual_blocks()
    assert [p for p, _ in layer_lib.conv_layers(model)] == RESIDUAL_PATHS
    assert layer_lib.weights_only(model) == {}


def test_convs_are_listed_in_the_order_a_forward_pass_meets_them():
    """A block's 1x1 expansion, made in build() after the others, is listed first all the same."""
    model, *_ = zoo.kerashub_style()
    paths = [p for p, _ in layer_lib.conv_layers(model)]
    assert len(paths) == 15 and paths[0] == "backbone/input_conv/input_conv_conv"
    assert paths[1:4] == [
        "backbone/block_0/block_0_expand/block_0_expand_conv",
        "backbone/block_0/block_0_depthwise",
        "backbone/block_0/block_0_project",
    ]
    assert paths[-1] == "classifier_conv"


def test_without_an_example_input_the_order_is_the_order_the_model_holds_them():
    """A free input size and no example: no forward pass runs, depth first in tracked order."""
    inp = keras.Input((None, None, 3))
    x = zoo.InvertedResidual(8, name="block")(inp)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    assert layer_lib.forward_trace(model) is None
    assert [p for p, _ in layer_lib.conv_layers(model)] == [
        "block/block_depthwise",
        "block/block_project",
        "block/block_expand/block_expand_conv",
    ]
    example = np.zeros((1, 8, 8, 3), np.float32)
    assert [p for p, _ in layer_lib.conv_layers(model, example)][0] == (
        "block/block_expand/block_expand_conv"
    )


def test_layers_accepts_paths_into_custom_layers_and_an_unknown_name_lists_them():
    """`layers=` takes "res1/c1" (or a unique plain name); a wrong one's error lists every path."""
    model, *_ = zoo.residual_blocks()
    assert [p for p, _ in layer_lib.resolve_layers(model, ["res2/c1", "stem"])] == [
        "res2/c1",
        "stem",
    ]
    with pytest.raises(ValueError) as caught:
        layer_lib.resolve_layers(model, ["res3/c1"])
    message = str(caught.value)
    assert "'res3/c1' is not a layer of the model" in message
    assert str(RESIDUAL_PATHS) in message
    with pytest.raises(ValueError, match=r"names several layers .*'res1/c1', 'res2/c1'"):
        layer_lib.resolve_layers(model, ["c1"])


def test_a_layer_reached_twice_is_listed_once():
    """A conv held by two blocks (shared weights) is listed once, under its first path."""
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")

    class Holder(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = conv

        def call(self, x):
            return self.conv(x)

    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, Holder(name="b")(Holder(name="a")(inp)))
    assert [p for p, _ in layer_lib.conv_layers(model)] == ["a/conv"]


def test_graph_inputs_tells_which_inputs_each_graph_layer_reads_and_skips_the_rest():
    """Read from the graph: a merge reads both inputs; nested, shared and subclassed say nothing."""
    model, *_ = zoo.two_inputs()
    reads = layer_lib.graph_inputs(model)
    by_name = {name: reads.get(id(model.get_layer(name))) for name in ("rgb_conv", "depth_conv")}
    assert by_name == {"rgb_conv": {0}, "depth_conv": {1}}
    assert reads[id(model.get_layer("fused_conv"))] == {0, 1}
    nested, *_ = zoo.nested()
    reads = layer_lib.graph_inputs(nested)
    assert id(nested.get_layer("stem")) in reads
    assert id(nested.get_layer("block").get_layer("deep")) not in reads  # not a node of its own
    shared = keras.layers.Conv2D(3, 3, padding="same")
    inp = keras.Input((8, 8, 3))
    twice = keras.Model(inp, shared(shared(inp)))
    assert id(shared) not in layer_lib.graph_inputs(twice)
    subclassed, x, *_ = zoo.subclassed()
    assert layer_lib.graph_inputs(subclassed) is None


def test_gradcam_finds_its_layer_in_a_graph_model_without_running_the_model():
    """On a Functional model the layer search reads the graph: no forward or backward pass."""
    calls = []

    class Count(keras.layers.Layer):
        def call(self, x):
            calls.append(1)
            return x

    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="first")(inp)
    x = Count()(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="last")(x)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    images = np.random.default_rng(0).random((2, 12, 12, 3)).astype("float32")
    layer_lib.forward_trace(model, images[:1])  # what every kind's discovery runs once
    before = len(calls)
    assert attribution.gradcam_layers(model, images) == ["last"]
    assert len(calls) == before


def test_the_tail_after_a_last_conv_is_a_model_of_the_same_layers_and_none_where_it_cannot_be():
    """A plain CNN's last conv has a tail running the model's layers, with no extras; a conv
    inside a nested model, a layer called twice and a conv whose residual sum reads the image
    itself have none; the model's graph is left as it was."""
    if not zoo.functions_from_inner_tensors():
        pytest.skip("this Keras builds no function from an inner tensor, so no tail")
    model = zoo.head_after_last_conv()
    after = layer_lib.tail(model, model.get_layer("last"))
    assert after.extras == ()
    assert [type(op).__name__ for op in after.operations] == [
        "BatchNormalization",
        "ReLU",
        "GlobalAveragePooling2D",
        "Dense",
    ]
    assert after.operations[0] is model.get_layer("bn")
    x = np.random.default_rng(0).random((2, 12, 12, 3)).astype("float32")
    (maps,) = layer_lib.extractor(model, [model.get_layer("last")])(x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(after(maps)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )
    assert layer_lib.tail(model, model.get_layer("first")) is not None  # all paths run through
    inp = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")
    from_image = keras.Model(inp, keras.layers.Add()([inp, conv(inp)]))
    assert layer_lib.tail(from_image, conv) is None  # the tail would read the image itself
    nested, *_ = zoo.nested()
    assert layer_lib.tail(nested, nested.get_layer("block").get_layer("deep")) is None
    shared = keras.layers.Conv2D(3, 3, padding="same")
    twice = keras.Model(inp, shared(shared(inp)))
    assert layer_lib.tail(twice, shared) is None
    # Making tails adds nothing to the model's graph: each layer is still called once.
    assert all(len(layer._inbound_nodes) == 1 for layer in from_image.layers)


def test_a_residual_sums_last_conv_has_a_tail_that_also_reads_the_skip_tensor():
    """A conv whose residual sum also reads the block's input (a ResNet's last conv) has a tail
    with that input's layer as its one extra, computing the model's outputs from both; a cut
    crossed by more than `MAX_TAIL_EXTRAS` tensors has none, and the tail checks its inputs.
    Where Keras would run operations from before the cut again (3.6), there is none."""
    model = zoo.residual_head()
    if not zoo.functions_from_inner_tensors():
        assert layer_lib.tail(model, model.get_layer("last")) is None
        inp = keras.Input((8, 8, 3))
        skip = keras.layers.Conv2D(3, 3, padding="same", name="skip")(inp)
        branch = keras.layers.Conv2D(3, 3, padding="same", name="branch")
        short = keras.Model(inp, keras.layers.Add()([skip, branch(skip)]))
        assert layer_lib.tail(short, branch) is None  # it would run `branch` on the skip again
        return
    after = layer_lib.tail(model, model.get_layer("last"))
    assert [layer.name for layer in after.extras] == ["stem_out"]
    assert [op.name for op in after.operations][:2] == ["bn", "sum"]
    x = np.random.default_rng(0).random((2, 12, 12, 3)).astype("float32")
    skip, last = layer_lib.extractor(model, [model.get_layer("stem_out"), model.get_layer("last")])(
        x
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(after(last, [skip])),
        keras.ops.convert_to_numpy(model(x)),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match=r"reads 1 tensors besides the layer's output"):
        after(last)

    def sum_of(skips):  # a conv whose sum also reads `skips` tensors from before it
        inp = keras.Input((8, 8, 3))
        stems = [keras.layers.Conv2D(3, 1, name=f"s{i}")(inp) for i in range(skips)]
        out = keras.layers.Add()([keras.layers.Conv2D(3, 1, name="conv")(stems[0]), *stems])
        return keras.Model(inp, out)

    wide = sum_of(layer_lib.MAX_TAIL_EXTRAS + 1)
    assert layer_lib.tail(wide, wide.get_layer("conv")) is None
    narrow = sum_of(layer_lib.MAX_TAIL_EXTRAS)
    assert [e.name for e in layer_lib.tail(narrow, narrow.get_layer("conv")).extras] == [
        f"s{i}" for i in range(layer_lib.MAX_TAIL_EXTRAS)
    ]


def test_a_model_whose_only_conv_is_inside_a_custom_layer_has_one():
    """No more "has no convolution layer": the encoder's conv is found and selected."""
    model, *_ = zoo.only_conv_in_a_custom_layer()
    assert [p for p, _ in layer_lib.resolve_layers(model, None)] == ["encoder/conv"]


def test_a_model_without_any_conv_says_where_it_looked():
    """The error names the graph and the layers' insides, and lists the conv classes."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="in its graph or inside its layers. .*Conv2D"):
        layer_lib.resolve_layers(model, None)


# -- capture -------------------------------------------------------------------------------------


def test_feature_maps_of_block_convs_equal_the_sublayers_called_by_hand(tmp_path):
    """FeatureMaps of every conv, logged and read back, match a by-hand pass within 1/255."""
    model, x, y, probes = zoo.residual_blocks()
    model.fit(
        x,
        y,
        epochs=1,
        verbose=0,
        callbacks=[FeatureMaps(str(tmp_path), probe_images=probes, budget=None)],
    )
    expected, _ = by_hand(model, probes)
    logs = reader.Logdir(str(tmp_path))
    for path in RESIDUAL_PATHS:
        tiles = logs.read("train", path, "feature_maps", 0).tiles[..., 0]  # [filters, probes, h, w]
        want = np.moveaxis(numpy(expected[path]), -1, 0)
        span = np.ptp(want, axis=(2, 3), keepdims=True)
        assert tiles.shape == want.shape, path
        assert np.all(np.abs(tiles - want) <= span / 255 + 1e-5), path


def test_gradcam_on_a_block_conv_equals_a_hand_written_gradient():
    """The default Grad-CAM layer is the last block's conv; its map equals a by-hand one."""
    model, x, _, _ = zoo.residual_blocks()
    images = x[:4]
    assert attribution.gradcam_layers(model, images) == ["res2/c2"]
    outs, r1 = by_hand(model, images)
    a = outs["res2/c2"]
    head = model.get_layer("head")
    classes = numpy(model(images)).argmax(-1)
    mask = keras.ops.convert_to_tensor(np.eye(3, dtype=np.float32)[classes])

    def score(acts):
        pooled = keras.ops.mean(keras.ops.relu(r1 + acts), axis=(1, 2))
        return keras.ops.sum(head(pooled) * mask)

    g = gradient(score, a)
    a = numpy(a)
    cam = np.maximum((a * g.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    cam = cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
    got = attribution.gradcam(model, images)
    np.testing.assert_allclose(got, cam, atol=1e-3)


def test_actmax_of_a_block_conv_excites_its_filter_more_than_random_images():
    """Activation maximization reads a conv inside a block: each image beats random inputs."""
    keras.utils.set_random_seed(0)  # an untrained model: its filters as initialized
    model, *_ = zoo.residual_blocks()
    layer = model.get_layer("res1").c2
    images = actmax.render(model, "res1/c2", filters=[0, 1, 2, 3], steps=48, seed=1)
    noise = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    with layer_lib.capture_outputs([layer]) as out:
        model(np.asarray(images, np.float32), training=False)
    reached = numpy(out[id(layer)]).mean(axis=(1, 2))[np.arange(4), np.arange(4)]
    with layer_lib.capture_outputs([layer]) as out:
        model(noise, training=False)
    random = numpy(out[id(layer)]).mean(axis=(1, 2))[:, :4].max(axis=0)
    assert np.all(reached > random), (reached, random)


def test_a_capture_sees_only_its_own_threads_forward_passes():
    """Another thread's pass through a hooked layer is neither recorded nor changed."""
    model, x, _, _ = zoo.residual_blocks()
    layer = model.get_layer("res1").c1
    plain = numpy(model(x[4:8], training=False))
    hooked, release = threading.Event(), threading.Event()
    seen = {}

    def capture():
        with layer_lib.capture_outputs([layer]) as out:
            hooked.set()
            release.wait(60)
            model(x[:2], training=False)
        seen.update(calls=out.calls[id(layer)], shape=tuple(out[id(layer)].shape))

    worker = threading.Thread(target=capture)
    worker.start()
    try:
        assert hooked.wait(60)
        assert "call" in vars(layer)  # the hook is installed ...
        other = numpy(model(x[4:8], training=False))  # ... and this thread runs through it
    finally:
        release.set()
        worker.join(60)
    np.testing.assert_array_equal(other, plain)
    assert seen == {"calls": 1, "shape": (2, 16, 16, 8)}
    assert "call" not in vars(layer)


def test_captures_nest_and_an_exception_leaves_the_model_as_it_was():
    """Two captures of one layer both record; an error inside restores the layer's call."""
    model, x, _, _ = zoo.residual_blocks()
    layer = model.get_layer("res2").c2
    activation = layer.activation
    with layer_lib.capture_outputs([layer]) as outer:
        with layer_lib.capture_outputs([layer], pre_activation=[layer]) as inner:
            model(x[:1], training=False)
        model(x[:2], training=False)
    assert outer.calls[id(layer)] == 2 and inner.calls[id(layer)] == 1
    assert id(layer) in inner.pre
    with pytest.raises(RuntimeError, match="boom"):
        with layer_lib.capture_outputs([layer]):
            raise RuntimeError("boom")
    assert "call" not in vars(layer) and layer.activation is activation
    with layer_lib.capture_outputs([layer]) as again:
        model(x[:1], training=False)
    assert again.calls[id(layer)] == 1


# -- honest where it cannot ----------------------------------------------------------------------


def test_a_shared_block_is_drawn_with_weights_only_and_the_plan_and_log_say_why(
    tmp_path, read_logdir, caplog
):
    """A block run twice per pass: its convs get weights, no feature maps, and one reason."""
    model = shared_block_model()
    reasons = layer_lib.weights_only(model)
    assert set(reasons) == {"shared/c1", "shared/c2"}
    assert reasons["shared/c1"] == (
        "weights only: it runs 2 times per forward pass (a shared layer or block)"
    )
    x = np.random.default_rng(0).random((16, 12, 12, 3), dtype=np.float32)
    viz = CNNViz(str(tmp_path), probe_images=x[:2], reference_images=x, budget=None)
    with caplog.at_level(logging.WARNING, logger="tb_cnnviz"):
        model.fit(x, np.zeros(16), epochs=2, verbose=0, callbacks=[viz])
    told = [r.getMessage() for r in caplog.records if "weights only" in r.getMessage()]
    assert len(told) == 1 and "shared/c1: it runs 2 times" in told[0]
    logs = read_logdir(tmp_path)
    tags = {tag for _, tag in logs.cnnviz_tags()}
    assert {"stem/weights", "shared/c1/weights", "shared/c2/weights"} <= tags
    assert "stem/feature_maps" in tags and "shared/c1/feature_maps" not in tags
    plan = logs.client().get("/data/plugin/cnnviz/plan?run=train").get_json()
    assert plan["left_out"]["shared/c1/feature_maps"] == reasons["shared/c1"]
    assert plan["left_out"]["shared/c2/actmax"] == reasons["shared/c2"]
    assert plan["left_out"]["shared/c2/responses"] == reasons["shared/c2"]
    assert "stem/responses" in tags and "shared/c2/responses" not in tags


def test_a_conv_inside_a_keras_ops_loop_is_drawn_with_weights_only():
    """Traced once inside a JAX loop, or run twice on TF and PyTorch: no one output to draw."""
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, Looped(name="loop")(inp))
    why = layer_lib.weights_only(model)["loop/conv"]
    assert why.startswith("weights only: it runs ")
    with pytest.raises(ValueError, match="Grad-CAM cannot read 'loop/conv'"):
        attribution.gradcam_layers(model, np.zeros((1, 8, 8, 3)), "loop/conv")
    with pytest.raises(ValueError, match="has no output activation maximization can read"):
        actmax.Renderer(model, "loop/conv")


def test_gradcam_defaults_to_the_last_block_conv_with_a_map_not_the_pooled_head_conv():
    """A classifier conv after global pooling has a 1x1 map: the backbone's last conv is read."""
    model, x, _, _ = zoo.kerashub_style()
    assert [p for p, _ in layer_lib.conv_layers(model)][-1] == "classifier_conv"
    assert attribution.gradcam_layers(model, x[:2]) == ["backbone/output_conv/output_conv_conv"]
    maps = attribution.gradcam(model, x[:2])
    assert maps.shape == (2, 32, 32) and np.ptp(maps[0]) > 0


def test_a_kerashub_style_backbone_draws_weights_and_feature_maps_of_every_conv(
    tmp_path, read_logdir
):
    """Blocks holding Conv2D, DepthwiseConv2D and BatchNormalization, two deep: every conv."""
    model, x, y, probes = zoo.kerashub_style()
    viz = CNNViz(str(tmp_path), probe_images=probes, labels=y[:4], budget=None)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[viz])
    paths = [p for p, _ in layer_lib.conv_layers(model)]
    logs = read_logdir(tmp_path)
    tags = {tag for _, tag in logs.cnnviz_tags()}
    for path in paths:
        assert {f"{path}/weights", f"{path}/feature_maps"} <= tags, path
    # The plugin lists every conv layer with its place in the network, for the tab's order.
    listed = logs.client().get("/data/plugin/cnnviz/tags").get_json()["train"]
    order = {info["layer"]: info["order"] for info in listed.values() if "order" in info}
    assert sorted(order, key=order.get) == paths
    assert "gradcam/attribution" in tags
    assert any(t.endswith("/actmax") and t.startswith("backbone/block_") for t in tags)
