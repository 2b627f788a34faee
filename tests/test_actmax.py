"""Activation maximization: objective algebra, the engine's promises, summary and callbacks.

Backend-neutral: nothing here imports TensorFlow, and every test runs under any
`KERAS_BACKEND` (`bash scripts/test_backend.sh jax`).
"""

from __future__ import annotations

import importlib.util
import textwrap
import warnings

import keras
import numpy as np
import pytest
from keras import ops
from test_backends import REPORT, run_python

from tb_cnnviz import actmax, backend, summary
from tb_cnnviz.actmax import (
    Activations,
    channel,
    class_logit,
    l2,
    neuron,
    total_variation,
)
from tb_cnnviz.callbacks import ActivationMaximization, CNNViz


def small_cnn(input_shape=(16, 16, 3), seed=0):
    """Two conv layers (`c1`: 4 filters, `c2`: 6), then a softmax head of 3 classes.

    Its weights are drawn with NumPy (Glorot-uniform kernels, zero biases), so every backend
    gets the same model and the same pictures."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(6, 3, activation="relu", name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        if w.ndim == 1:
            weights.append(np.zeros_like(w))
        else:
            fan_in, fan_out = np.prod(w.shape[:-1]), np.prod(w.shape[:-2]) * w.shape[-1]
            limit = np.sqrt(6 / (fan_in + fan_out))
            weights.append(rng.uniform(-limit, limit, w.shape).astype(w.dtype))
    model.set_weights(weights)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def conv1d_model():
    """A sequence model: activation maximization cannot draw it."""
    model = keras.Sequential(
        [
            keras.Input((10, 2)),
            keras.layers.Conv1D(3, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    return model


@pytest.fixture(scope="module")
def model():
    return small_cnn()


def acts_of(outputs, n=2, targets=None, images=None):
    images = np.zeros((n, 4, 4, 3), np.float32) if images is None else images
    return Activations(outputs, images, targets)


def numpy(x):
    """A backend tensor as NumPy."""
    return backend.to_numpy(x)


# -- objectives without a model ----------------------------------------------------------------
def test_objective_algebra_adds_subtracts_scales_and_describes_itself():
    """Sums, differences, negation and scaling compute per image and print as code."""
    maps = np.arange(16.0, dtype=np.float32).reshape(2, 2, 2, 2)  # channel 0: evens, 1: odds
    acts = acts_of({"c": maps})
    a, b = channel("c", 0), channel("c", 1)
    cases = {
        "channel('c', 0) + channel('c', 1)": (a + b, [7.0, 23.0]),
        "channel('c', 0) - 0.5 * channel('c', 1)": (a - 0.5 * b, [1.0, 5.0]),
        "-(channel('c', 0) + 1)": (-(a + 1), [-4.0, -12.0]),
        "channel('c', 1) / 2": (b / 2, [2.0, 6.0]),
        "channel('c', 0) - (channel('c', 1) - channel('c', 0))": (a - (b - a), [2.0, 10.0]),
    }
    for text, (objective, expected) in cases.items():
        assert str(objective) == text
        np.testing.assert_allclose(numpy(objective(acts)), expected)
    assert sum([a, b]).needs == {"c": "feature_maps"}


def test_objectives_without_an_index_read_each_images_own_target():
    """`channel(layer)` gives image i the mean of filter targets[i]; `neuron` the centre value."""
    maps = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3)
    acts = acts_of({"c": maps}, targets=[2, 0])
    np.testing.assert_allclose(numpy(channel("c")(acts)), [14.0, 39.0])
    np.testing.assert_allclose(numpy(neuron("c")(acts)), [14.0, 39.0])
    np.testing.assert_allclose(numpy(neuron("c", 1, x=0, y=0)(acts)), [1.0, 28.0])
    logits = np.array([[1.0, 5.0], [7.0, 3.0]], np.float32)
    np.testing.assert_allclose(
        numpy(class_logit()(acts_of({actmax.LOGITS: logits}, targets=[1, 1]))), [5.0, 3.0]
    )


def test_regularizers_are_objectives_of_the_images():
    """total_variation and l2 read only the images, per image, in [0, 1] units."""
    flat = np.full((1, 4, 4, 3), 0.5, np.float32)
    checker = np.array([0.0, 1.0, 1.0, 0.0] * 4, np.float32).reshape(1, 4, 4, 1)
    images = np.concatenate([flat, np.tile(checker, [1, 1, 1, 3])], 0)
    acts = acts_of({}, images=images)
    np.testing.assert_allclose(numpy(total_variation()(acts)), [0.0, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(numpy(l2()(acts)), [0.0, 0.25])
    assert (channel("c") - 0.1 * total_variation()).needs == {"c": "feature_maps"}


def test_objective_algebra_rejects_what_it_cannot_mean():
    """Objectives multiply only by numbers; an objective without index needs targets."""
    with pytest.raises(TypeError):
        channel("c", 0) * channel("c", 1)
    with pytest.raises(ZeroDivisionError):
        channel("c", 0) / 0
    with pytest.raises(ValueError, match=r"Received: index=-1"):
        channel("c", -1)
    with pytest.raises(ValueError, match="per-image targets"):
        channel("c")(acts_of({"c": np.ones((2, 2, 2, 2), np.float32)}))


# -- the lower-level pieces ------------------------------------------------------------------
def test_fourier_parameterization_is_the_inverse_real_dft():
    """The matrix-product image of a spectrum equals numpy's irfft2 (non-square, odd width)."""
    h, w = 6, 9
    param = actmax.fourier(2, (h, w), decorrelate=False, std=1.0)
    values = param.variable.numpy()
    scale = np.asarray(param._scale)[:h]
    expected = np.fft.irfft2((values[:, :, :h] + 1j * values[:, :, h:]) * scale, s=(h, w))
    np.testing.assert_allclose(
        numpy(param._decode(param.variable.value)), expected.transpose(0, 2, 3, 1), atol=1e-5
    )
    images = numpy(param())
    assert images.shape == (2, h, w, 3) and images.min() > 0 and images.max() < 1


def test_composed_whole_pixel_transforms_are_exact_crops():
    """pad then jitter, fused into one resampling, equals padding and slicing by hand."""
    images = np.random.default_rng(1).random((2, 5, 7, 3), dtype=np.float32)
    draws = np.array([[0.0, 0.99], [0.5, 0.3]], np.float32)  # offsets (col, row): (0, 4), (2, 1)
    out = numpy(actmax.compose([actmax.pad(2), actmax.jitter(4)])(images, draws))
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)], constant_values=0.5)
    np.testing.assert_allclose(out[0], padded[0, 4:9, 0:7], atol=1e-6)
    np.testing.assert_allclose(out[1], padded[1, 1:6, 2:9], atol=1e-6)


def test_geometry_planned_on_the_host_resamples_as_the_same_geometry_in_a_compiled_step():
    """An Affine given NumPy draws (`plan`, then `resample`) equals the same one given tensors,
    traced into a compiled function: the renderer's host matrices change no image."""
    t = actmax.compose([actmax.standard(20), actmax.center_crop(20)])
    rng = np.random.default_rng(3)
    images = rng.random((5, 20, 20, 3), dtype=np.float32)
    draws = rng.random((5, t.draws), dtype=np.float32)
    rows, size = t.plan(draws, 20, 20)
    assert rows.shape == (5, 8) and rows.dtype == np.float32 and size == (20, 20)
    on_host = numpy(t(images, draws))
    traced = backend.compile(lambda x, d: t(x, d))
    in_graph = numpy(traced(ops.convert_to_tensor(images), ops.convert_to_tensor(draws)))
    np.testing.assert_allclose(on_host, in_graph, atol=1e-5)
    np.testing.assert_allclose(numpy(t.resample(images, rows, size)), on_host, atol=1e-6)


def test_a_renderer_plans_the_standard_transforms_on_the_host_as_a_custom_chain_draws_them():
    """The standard transforms' matrices made on the host give the images that a chain with a
    custom (tensor) part, whose geometry runs inside the step from the same draws, gives."""
    model = small_cnn()
    planned = actmax.Renderer(model, "c2", param="pixel")
    assert isinstance(planned.transforms, actmax.Affine)
    chained = actmax.Renderer(
        model, "c2", param="pixel", transforms=[actmax.standard(16), lambda images: images]
    )
    assert not isinstance(chained.transforms, actmax.Affine)
    a = planned([0, 3], steps=6, seed=2)
    b = chained([0, 3], steps=6, seed=2)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
    np.testing.assert_allclose(a.activations, b.activations, rtol=1e-4, atol=1e-6)
    unmoved = actmax.Renderer(model, "c2", param="pixel", transforms=None)([0, 3], steps=6, seed=2)
    assert np.abs(np.asarray(unmoved) - np.asarray(a)).max() > 0.05  # the transforms act


# `_uniform(7, keys=[0, 5], steps=[0, 3], 3)`, as the hash computed it in `keras.ops` inside the
# compiled step before it moved to the host (same on TensorFlow and PyTorch).
UNIFORM_7 = [
    [0.7147557139396667, 0.34311699867248535, 0.8334222435951233],
    [0.9881765842437744, 0.4069598913192749, 0.26773685216903687],
]


def test_transforms_without_random_numbers_render_and_each_step_gets_its_own_matrices():
    """A renderer whose transforms draw nothing (a pad) renders; with the standard ones, each
    step's planned matrices differ from the last, and a warm start resumes its count."""
    from tb_cnnviz.actmax import renderer as renderer_lib

    model = small_cnn()
    padded = actmax.Renderer(model, "c2", param="pixel", transforms=[actmax.pad(2)])
    assert padded.transforms.draws == 0
    assert np.asarray(padded([1], steps=2)).shape == (1, 16, 16, 3)
    standard = actmax.Renderer(model, "c2", param="pixel")
    slot = standard._slot(2)
    rows = numpy(slot.inputs(3, 0, [0, 1], np.zeros(2)))
    assert rows.shape == (3, 2, 8)
    assert not np.allclose(rows[0], rows[1]) and not np.allclose(rows[:, 0], rows[:, 1])
    resumed = numpy(slot.inputs(2, 0, [0, 1], np.ones(2)))
    np.testing.assert_array_equal(resumed, rows[1:])
    # The hash is pinned: the same seed gives the same images as every earlier version.
    got = renderer_lib._uniform(7, np.array([0, 5], np.uint32), np.array([0, 3], np.uint32), 3)
    np.testing.assert_array_equal(got, np.array(UNIFORM_7, np.float32))


def test_regularizers_ascend_with_the_low_level_pieces():
    """A hand-written loop over a pixel parameterization raises -total_variation() and -l2()."""
    for objective in (-total_variation(), -l2()):
        param = actmax.pixel(2, 8, std=1.0, seeds=[1, 2])
        optimizer = keras.optimizers.Adam(0.1)
        gradient = backend.value_and_grad(
            lambda values, objective=objective, param=param: (
                ops.sum(objective(Activations({}, param.images(values)))),
                None,
            )
        )
        scores = []
        for _ in range(6):
            (score, _), grad = gradient(param.variable.value)
            optimizer.apply_gradients([(-grad, param.variable)])
            scores.append(float(numpy(score)))
        assert scores[-1] > scores[0], (objective, scores)


# -- rendering ---------------------------------------------------------------------------------
OBJECTIVES = {
    "channel": lambda: channel("c2"),
    "neuron": lambda: neuron("c2", pre_activation=True),
    "class_logit": lambda: class_logit(),
    "channel - tv - l2": lambda: (
        channel("c2", pre_activation=True) - 0.1 * total_variation() - 0.1 * l2()
    ),
}


@pytest.mark.parametrize("param", ["fourier", "pixel"])
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_gradient_ascent_ascends(model, name, param):
    """For each objective and parameterization, a few more steps reach a higher objective."""
    objective = OBJECTIVES[name]()
    renderer = actmax.Renderer(model, "c2", objective=objective, param=param)
    targets = [0, 1, 2] if name == "class_logit" else [0, 3, 5]
    start = renderer(targets, steps=1).activations
    end = renderer(targets, steps=12).activations
    assert end.mean() > start.mean() + 1e-4, (start, end)


def test_render_returns_images_in_the_value_range_with_what_they_reached(model):
    """One image per filter, [n, h, w, c] in value_range, activations and filters attached."""
    for value_range in [(0, 1), (-1, 1), (0, 255)]:
        images = actmax.render(model, "c1", steps=3, value_range=value_range)
        assert isinstance(images, np.ndarray) and images.shape == (4, 16, 16, 3)
        assert images.min() >= value_range[0] and images.max() <= value_range[1]
        assert images.max() - images.min() > 0.01 * (value_range[1] - value_range[0])
        assert images.filters == [0, 1, 2, 3] and images.layer == "c1"
        assert images.activations.shape == (4,) and np.isfinite(images.activations).all()
    assert images[:2].activations is None  # derived arrays are plain data


def test_the_default_objective_measures_the_post_activation_of_each_filter(model):
    """Reported activations equal the layer's mean output on the returned images."""
    images = actmax.render(model, "c2", filters=[1, 4], steps=6)
    extractor = keras.Model(model.inputs[0], model.get_layer("c2").output)
    maps = numpy(extractor(np.asarray(images)))
    np.testing.assert_allclose(
        images.activations, maps.mean(axis=(1, 2))[[0, 1], [1, 4]], rtol=1e-4, atol=1e-6
    )


def test_class_logit_reads_past_a_final_softmax(model):
    """With a softmax head, class_logit reports the pre-softmax logit; the model is unchanged."""
    images = actmax.render(model, objective=class_logit(), filters=[2], steps=2)
    x = np.asarray(images)
    features = keras.Model(model.inputs[0], model.layers[-2].output)(x)
    out = model.get_layer("out")
    logits = numpy(features) @ out.kernel.numpy() + out.bias.numpy()
    np.testing.assert_allclose(images.activations, logits[:, 2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(numpy(model(x)).sum(), 1.0, rtol=1e-5)  # softmax is back


def test_class_logit_reads_a_binary_head_as_attribution_does():
    """A sigmoid unit has two classes: class 1 scores its logit, class 0 minus its logit."""
    keras.utils.set_random_seed(0)
    binary = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid", name="p"),
        ]
    )
    renderer = actmax.Renderer(binary, objective=class_logit())
    assert renderer.units == 2
    images = renderer(steps=3)
    features = keras.Model(binary.inputs[0], binary.layers[-2].output)(np.asarray(images))
    dense = binary.get_layer("p")
    logit = (numpy(features) @ dense.kernel.numpy() + dense.bias.numpy())[:, 0]
    np.testing.assert_allclose(images.activations, [-logit[0], logit[1]], rtol=1e-4, atol=1e-5)


def test_results_are_deterministic_per_seed_and_per_filter(model):
    """Same seed: same images; a filter's image does not depend on its batch or chunking."""
    renderer = actmax.Renderer(model, "c2")
    first = renderer([0, 2, 5], steps=5, seed=3)
    again = renderer([0, 2, 5], steps=5, seed=3)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    alone = renderer([2], steps=5, seed=3)
    np.testing.assert_allclose(np.asarray(alone)[0], np.asarray(first)[1], atol=1e-4)
    chunked = actmax.Renderer(model, "c2", batch_size=2)([0, 2, 5], steps=5, seed=3)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(first), atol=1e-4)
    other = renderer([0, 2, 5], steps=5, seed=4)
    assert np.abs(np.asarray(other) - np.asarray(first)).max() > 1e-3


def test_a_warm_start_continues_where_the_last_call_stopped(model):
    """5 steps then 5 warm steps equal 10 steps in one call; other filters start cold."""
    renderer = actmax.Renderer(model, "c2")
    ten = renderer([1, 3], steps=10)
    five = renderer([1, 3], steps=5)
    continued = renderer([1, 3, 4], steps=5, init=five)
    np.testing.assert_allclose(np.asarray(continued)[:2], np.asarray(ten), atol=1e-4)
    np.testing.assert_array_equal(continued.state.steps, [10, 10, 5])
    cold = renderer([4], steps=5)
    np.testing.assert_allclose(np.asarray(continued)[2], np.asarray(cold)[0], atol=1e-4)
    with pytest.raises(ValueError, match=r"Received: init with param='fourier'"):
        actmax.Renderer(model, "c2", param="pixel")([1], steps=1, init=five)


def test_the_second_moment_is_one_per_image_and_colour_channel(model):
    """Adam's v is [n, c, 1, 1] (Fourier) or [n, 1, 1, c] (pixel): steps keep the 1/f spectrum."""
    fourier = actmax.Renderer(model, "c2")([0, 1], steps=2)
    assert fourier.state.v.shape == (2, 3, 1, 1) and fourier.state.m.shape == (2, 3, 32, 9)
    pixel = actmax.Renderer(model, "c2", param="pixel")([0], steps=2)
    assert pixel.state.v.shape == (1, 1, 1, 3)
    # Per-variable normalization would move every coefficient alike; per channel, the step of a
    # coefficient follows its gradient, so the low frequencies (scaled up by 1/f) move most.
    step = np.abs(fourier.state.m / np.sqrt(fourier.state.v))[0, 0]  # real parts: rows :16
    assert step[:2, :2].mean() > 10 * step[6:11, 6:].mean()


def test_a_layer_inside_a_nested_model_renders():
    """A conv layer of a sub-model (unreachable by a truncated model) renders by path."""
    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [keras.Input((14, 14, 4)), keras.layers.Conv2D(5, 3, activation="relu", name="deep")],
        name="block",
    )
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="stem")(inputs)  # linear: no dead start for `deep`
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inner(x)))
    nested = keras.Model(inputs, outputs)
    renderer = actmax.Renderer(nested, "block/deep")
    assert not renderer._reader.truncated
    start, end = renderer(steps=1), renderer(steps=10)
    assert end.shape == (5, 16, 16, 3) and end.activations.mean() > start.activations.mean()


def test_grayscale_non_square_input_renders_gray_images_of_its_shape():
    """A (12, 20, 1) model gets (n, 12, 20, 1) images, without colour decorrelation."""
    gray = small_cnn((12, 20, 1))
    images = actmax.render(gray, "c1", filters=[0, 3], steps=4)
    assert images.shape == (2, 12, 20, 1)
    assert np.isfinite(images).all() and images.std() > 0


def test_mixed_precision_models_render_with_a_float32_objective():
    """Under mixed_float16 the objective is float32, finite, and rises."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = small_cnn()
    finally:
        keras.mixed_precision.set_global_policy(policy)
    renderer = actmax.Renderer(mixed, "c2")
    start, end = renderer([0, 1], steps=1), renderer([0, 1], steps=10)
    assert end.dtype == np.float32 and np.isfinite(end.activations).all()
    assert end.activations.mean() > start.activations.mean()


def test_bad_input_names_the_argument_and_the_value(model):
    """Unknown layer, filter out of range, steps <= 0, non-conv layer: ValueError with Received."""
    cases = [
        (lambda: actmax.render(model, "nope"), r"'nope' is not a layer.*Received: layer='nope'"),
        (
            lambda: actmax.render(model, "c1", filters=[4]),
            r"index 4 is out of range.*filters=\[4\]",
        ),
        (lambda: actmax.render(model, "c1", steps=0), r"Received: steps=0"),
        (lambda: actmax.render(model, "c1", steps=-3), r"Received: steps=-3"),
        (
            lambda: actmax.render(model, "out"),
            r"Dense layer, not a 2-D conv.*Received: layer='out'",
        ),
        (
            lambda: actmax.render(model, objective=channel("out", 1)),
            r"Dense layer.*Received: objective='out'",
        ),
        (lambda: actmax.render(model, "c1", value_range=(1, 0)), r"Received: value_range=\(1, 0\)"),
        (lambda: actmax.render(model), r"Received: layer=None"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


# -- the summary and the callbacks -------------------------------------------------------------
def test_summary_actmax_writes_one_index_with_the_activation_statistic(tmp_path, read_logdir):
    """RGB images get slice axis rgb, gray ones image; activations are the per-filter stat."""
    writer = summary.create_file_writer(str(tmp_path / "train"))
    with writer.as_default():
        assert summary.actmax("rgb", np.random.rand(3, 8, 8, 3), step=0, activations=[1, 2, 3])
        assert summary.actmax(
            "gray", np.random.rand(2, 8, 6), step=0, filters=[5, 9], total_filters=10
        )
    writer.close()
    logs = read_logdir(tmp_path)
    assert logs.cnnviz_tags() == {("train", "rgb/actmax"), ("train", "gray/actmax")}
    rgb, _ = logs.datum("train", "rgb/actmax", 0)
    assert rgb["kind"] == "actmax" and rgb["slices"] == {"axis": "rgb", "count": 1, "total": 1}
    assert rgb["stats"] == {"activation": [1.0, 2.0, 3.0]} and rgb["tile"] == [8, 8, 3]
    gray, _ = logs.datum("train", "gray/actmax", 0)
    assert gray["slices"]["axis"] == "image" and gray["tile"] == [8, 6, 1]
    assert gray["filters"] == [5, 9] and gray["total_filters"] == 10
    with pytest.raises(ValueError, match=r"Received: images.shape=\(2, 8, 8, 2\)"):
        summary.actmax("bad", np.zeros((2, 8, 8, 2)), step=0)


def test_callback_logs_every_conv_layer_each_epoch_and_warm_starts(tmp_path, read_logdir):
    """Two epochs: one actmax tag per conv layer at steps 0 and 1, refined, not restarted."""
    model = small_cnn()
    x = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    callback = ActivationMaximization(str(tmp_path), steps=3, budget=None)
    model.fit(x, np.zeros(8), epochs=2, verbose=0, callbacks=[callback])
    logs = read_logdir(tmp_path)
    assert logs.cnnviz_tags() == {
        ("train", "c1/actmax"),
        ("train", "c2/actmax"),
        ("train", "ActivationMaximization/plan"),
    }
    for tag in ("c1/actmax", "c2/actmax"):
        assert logs.steps("train", tag) == [0, 1]
        index, _ = logs.datum("train", tag, 1)
        assert len(index["stats"]["activation"]) == len(index["filters"])
    assert (callback._previous["c2"].steps == 6).all()  # 3 steps per epoch, continued


def test_callback_rejects_bad_arguments_before_training():
    """steps, max_layers and value_range errors end with Received: name=value."""
    for kwargs, message in [
        ({"steps": 0}, r"Received: steps=0"),
        ({"max_layers": 0}, r"Received: max_layers=0"),
        ({"value_range": (0, 0)}, r"Received: value_range=\(0, 0\)"),
        ({"freq": -1}, r"Received: freq=-1"),
    ]:
        with pytest.raises(ValueError, match=message):
            ActivationMaximization("logs", **kwargs)


def test_cnnviz_includes_actmax_and_drops_it_quietly_where_it_cannot_draw(tmp_path):
    """CNNViz renders actmax by default; for a Conv1D model it drops out without a warning."""
    assert any(isinstance(c, ActivationMaximization) for c in CNNViz(str(tmp_path)).callbacks)
    seq = conv1d_model()
    viz = CNNViz(str(tmp_path), weights_freq=0, budget=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seq.fit(np.zeros((4, 10, 2)), np.zeros(4), epochs=1, verbose=0, callbacks=[viz])
    assert [str(w.message) for w in caught if "tb-cnnviz" in str(w.message)] == []
    assert not any(isinstance(c, ActivationMaximization) for c in viz.callbacks)


def test_a_second_fit_of_the_same_model_reuses_the_renderers_and_continues(tmp_path, read_logdir):
    """fit() twice: the same compiled renderers, images refined 3+3 steps, steps 0 and 1 logged."""
    model = small_cnn()
    x = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    callback = ActivationMaximization(str(tmp_path), layers=["c2"], steps=3, budget=None)
    model.fit(x, np.zeros(8), epochs=1, verbose=0, callbacks=[callback])
    renderer = callback._renderers["c2"]
    model.fit(x, np.zeros(8), initial_epoch=1, epochs=2, verbose=0, callbacks=[callback])
    assert callback._renderers["c2"] is renderer
    assert (callback._previous["c2"].steps == 6).all()
    assert read_logdir(tmp_path).steps("train", "c2/actmax") == [0, 1]
    other = small_cnn(seed=1)  # another model: its own renderers, images from noise
    other.fit(x, np.zeros(8), epochs=1, verbose=0, callbacks=[callback])
    assert callback._renderers["c2"] is not renderer
    assert (callback._previous["c2"].steps == 3).all()


def test_cnnviz_asks_every_kind_again_on_each_fit(tmp_path, read_logdir):
    """A Conv1D fit drops actmax for that fit only; a later 2-D model gets it back and logs it."""
    seq = conv1d_model()
    # The Conv1D fit logs nothing.
    viz = CNNViz(str(tmp_path), weights_freq=0, actmax_steps=2, budget=None)
    seq.fit(np.zeros((4, 10, 2)), np.zeros(4), epochs=1, verbose=0, callbacks=[viz])
    assert not any(isinstance(c, ActivationMaximization) for c in viz.callbacks)
    model = small_cnn()
    x = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    model.fit(x, np.zeros(4), epochs=1, verbose=0, callbacks=[viz])
    assert any(isinstance(c, ActivationMaximization) for c in viz.callbacks)
    tags = read_logdir(tmp_path).cnnviz_tags()
    assert tags == {("train", "c1/actmax"), ("train", "c2/actmax"), ("train", "cnnviz/plan")}


# -- other backends, each in its own process ----------------------------------------------------
# The model of both scripts: two conv layers and a softmax head.
MODEL = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras

    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
        keras.layers.Conv2D(6, 3, activation="relu", name="c2"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ])
    """
)

# Loads the weights the test saved (so every backend has the same model), renders, and saves
# the images, what they reached, and the renderer's trace count.
RENDER = (
    MODEL
    + textwrap.dedent(
        """
        from tb_cnnviz import actmax

        weights, out = sys.argv[1], sys.argv[2]
        saved = np.load(weights)
        model.set_weights([saved[f"w{i}"] for i in range(len(saved.files))])
        plain = actmax.Renderer(model, "c2", transforms=None)
        images = plain(steps=8, seed=1)
        robust = actmax.Renderer(model, "c2")
        first = robust(steps=16, seed=1)
        warm = robust(steps=4, seed=1, init=first)
        np.savez(out, plain=images, plain_reached=images.activations, robust=first,
                 robust_reached=first.activations, traces=robust.tracing_count,
                 warm_steps=warm.state.steps)
        """
    )
    + REPORT
)

# A small fit() with ActivationMaximization, two epochs, TensorFlow hidden.
FIT = (
    "import keras\nkeras.utils.set_random_seed(0)\n"
    + MODEL
    + textwrap.dedent(
        """
        from tb_cnnviz.callbacks import ActivationMaximization

        model.compile("adam", "sparse_categorical_crossentropy")
        x = np.random.default_rng(0).random((16, 16, 16, 3), dtype=np.float32)
        callback = ActivationMaximization(sys.argv[1], steps=6, budget=None)
        model.fit(x, np.zeros(16), epochs=2, batch_size=8, verbose=0, callbacks=[callback])
        traces = {path: r.tracing_count for path, r in callback.renderers.items()}
        print("TRACES", sorted(traces.items()))
        """
    )
    + REPORT
)


def run_backend(code: str, *args: str, backend: str) -> str:
    """Runs `code` under `KERAS_BACKEND=backend`, TensorFlow hidden off TensorFlow (as where it
    is not installed); returns stdout and fails the test on an error."""
    done = run_python(code, *args, backend=backend, hide_tf=backend != "tensorflow")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.tensorflow  # runs TensorFlow beside JAX
def test_tensorflow_and_jax_render_the_same_images_for_the_same_weights(tmp_path):
    """Same weights, seed and steps: without transforms the same images on TF and JAX; with
    them (TF's resampling gradient is an approximation) close images reaching as much."""
    pytest.importorskip("jax")
    try:
        found = importlib.util.find_spec("tensorflow") is not None
    except ModuleNotFoundError:  # hidden (tests/conftest.py)
        found = False
    if not found:
        pytest.skip("needs TensorFlow beside JAX")
    model = small_cnn()
    weights = tmp_path / "weights.npz"
    np.savez(weights, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    got = {}
    for name in ("tensorflow", "jax"):
        out = tmp_path / f"{name}.npz"
        stdout = run_backend(RENDER, str(weights), str(out), backend=name)
        assert f"BACKEND {name}" in stdout
        got[name] = np.load(out)
    assert "no-TF" in stdout  # JAX rendered with TensorFlow hidden
    tf_run, jax_run = got["tensorflow"], got["jax"]
    # Within 1/255 but for a few border pixels, where rounding differences grow.
    plain = np.abs(jax_run["plain"] - tf_run["plain"])
    assert np.mean(plain < 1 / 255) > 0.99 and plain.max() < 0.05
    np.testing.assert_allclose(jax_run["plain_reached"], tf_run["plain_reached"], rtol=1e-4)
    assert np.abs(jax_run["robust"] - tf_run["robust"]).mean() < 0.01
    np.testing.assert_allclose(
        jax_run["robust_reached"], tf_run["robust_reached"], rtol=0.02, atol=1e-3
    )
    for run in (tf_run, jax_run):
        assert int(run["traces"]) == 2  # one step (or loop) and one evaluation, reused warm
        assert (run["warm_steps"] == 20).all()


def test_a_jax_fit_logs_activation_maximization_read_back_through_tensorboard(tmp_path):
    """fit() on JAX, TensorFlow hidden: each conv layer's images at both epochs, read back."""
    pytest.importorskip("jax")
    from tb_cnnviz import reader

    stdout = run_backend(FIT, str(tmp_path), backend="jax")
    assert "BACKEND jax no-TF" in stdout
    assert "TRACES [('c1', 2), ('c2', 2)]" in stdout  # the second epoch reused the traces
    logs = reader.Logdir(str(tmp_path))
    assert logs.layers("train") == {"c1": ["actmax"], "c2": ["actmax"]}
    for layer, filters in (("c1", 4), ("c2", 6)):
        assert logs.steps("train", layer, "actmax") == [0, 1]
        pictures = logs.read("train", layer, "actmax", step=1)
        assert pictures.tiles.shape == (filters, 1, 16, 16, 3)
        assert pictures.filters == list(range(filters))
        assert np.isfinite(pictures.index["stats"]["activation"]).all()
        per_image = pictures.tiles.reshape(filters, -1)
        assert (per_image.std(axis=1) > 0.01).all()  # pictures, not flat tiles


# -- Receptive fields --------------------------------------------------------------------------


def _residual_se_model():
    """A Keras-guide residual block with a dilated conv and a squeeze-and-excite gate."""
    x = inputs = keras.Input((48, 48, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(x)
    y = keras.layers.Conv2D(8, 3, dilation_rate=2, padding="same", name="dilated")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.Add()([x, keras.layers.Activation("relu")(y)])
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="after_pool")(x)
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = keras.layers.Conv2D(8, 1, activation="sigmoid", name="gate")(gate)
    x = keras.layers.Multiply()([x, gate])
    x = keras.layers.Conv2D(8, 3, padding="same", name="after_se")(x)
    return keras.Model(inputs, x)


def test_receptive_fields_from_the_graph_equal_the_measured_ones():
    """Fields derived from kernels, strides and dilations equal one backward pass's, branches
    and squeeze-and-excite included, without running the model."""
    from tb_cnnviz.actmax import forward

    model = _residual_se_model()
    derived = {p: forward.derived_field(model, p) for p in ("stem", "dilated", "after_pool")}
    assert derived == {"stem": (3, 3), "dilated": (11, 11), "after_pool": (21, 21)}
    assert forward.derived_field(model, "after_se") == (48, 48)  # the gate reads everything
    for path in ("stem", "dilated", "after_pool", "after_se"):
        assert forward.measured_field(model, path) == forward.receptive_field(model, path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "make",
    # Keras' EfficientNetB0 needs TensorFlow to run on PyTorch (ImportError from Functional.call).
    ["MobileNetV2", "ResNet50", pytest.param("EfficientNetB0", marks=pytest.mark.tensorflow)],
)
def test_receptive_fields_of_keras_applications_are_derived_as_measured(make):
    """On keras.applications at 96x96, the derived field of early, middle and late convs is
    the measured one (no pass runs for it)."""
    from tb_cnnviz import layers as layer_lib
    from tb_cnnviz.actmax import forward

    model = getattr(keras.applications, make)(weights=None, input_shape=(96, 96, 3), classes=4)
    paths = [p for p, _ in layer_lib.conv_layers(model)]
    for path in {paths[0], paths[2], paths[len(paths) // 3], paths[-1]}:
        derived = forward.derived_field(model, path)
        assert derived is not None, path
        assert derived == forward.measured_field(model, path), path


def test_a_conv_inside_a_custom_block_has_its_field_measured():
    """A conv inside a custom Layer is not in the model's graph: its field is measured."""
    from tb_cnnviz.actmax import forward

    class Block(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.conv = keras.layers.Conv2D(4, 5, padding="same", name="inner")

        def call(self, x):
            return self.conv(x)

    inputs = keras.Input((24, 24, 3))
    model = keras.Model(inputs, Block(name="block")(keras.layers.Conv2D(4, 3, name="c")(inputs)))
    assert forward.derived_field(model, "block/inner") is None
    assert forward.receptive_field(model, "block/inner") == (7, 7)


def test_picking_each_images_own_unit_matches_indexing_and_its_gradient():
    """`Activations.pick` (a one-hot product, cheaper to trace than a gather's gradient) gives
    each image's own unit of maps and of their vectors, and a gradient only there."""
    from tb_cnnviz.actmax import objectives as obj_lib

    values = np.random.default_rng(0).normal(size=(3, 4, 5, 6)).astype("float32")
    targets = [5, 0, 2]
    acts = obj_lib.Activations({}, np.zeros((3, 2, 2, 3), "float32"), targets)
    picked = keras.ops.convert_to_numpy(acts.pick(keras.ops.convert_to_tensor(values), None))
    np.testing.assert_allclose(picked, values[np.arange(3), ..., targets], rtol=1e-6)
    flat = keras.ops.convert_to_numpy(acts.pick(keras.ops.convert_to_tensor(values[:, 0, 0]), None))
    np.testing.assert_allclose(flat, values[np.arange(3), 0, 0, targets], rtol=1e-6)
    grad_fn = backend.value_and_grad(lambda x: (keras.ops.sum(acts.pick(x, None)), None))
    _, grad = grad_fn(keras.ops.convert_to_tensor(values))
    expected = np.zeros_like(values)
    expected[np.arange(3), ..., targets] = 1.0
    np.testing.assert_array_equal(backend.to_numpy(grad), expected)
