"""Attribution maps: they point where the class is decided, survive the weight-randomization
sanity check, work on any model shape, and the `Attribution` callback logs them readably."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import zoo

from tb_cnnviz import attribution, backend, metadata, summary, tiles
from tb_cnnviz.callbacks import Attribution, CNNViz

SIZE = 32
HALF = SIZE // 2
#: The quadrant that decides the class: top right.
QUADRANT = (slice(0, HALF), slice(HALF, SIZE))
CLASSES = 4


def quadrant_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean noise images whose class is set only by a stripe pattern in the top-right
    quadrant: horizontal, vertical, diagonal stripes or a checkerboard, at a random phase."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    # Every pixel has the same variance, so the quadrant stands out by its structure alone: a
    # map that only tracks contrast, as a randomly initialized network's does, cannot find it.
    noise = 0.3
    images = rng.normal(0.0, np.sqrt(0.25 + noise**2), (n, SIZE, SIZE, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:HALF, 0:HALF]
    phase = rng.integers(0, 8, (n, 1, 1))
    rows, cols = (yy + phase) // 4, (xx + phase) // 4
    patterns = np.stack([rows % 2, cols % 2, ((yy + xx + phase) // 4) % 2, (rows + cols) % 2], 1)
    chosen = patterns[np.arange(n), labels][..., None] - 0.5  # +-0.5: variance 0.25
    images[:, QUADRANT[0], QUADRANT[1]] = chosen + rng.normal(0.0, noise, (n, HALF, HALF, 3))
    return images, labels


#: The L1 activity penalty of the quadrant model's last conv layer, per example. Keras 3.14
#: began dividing activity regularization by the batch size; before, it summed over the batch,
#: so there the weight is divided by the batch size the model trains with (64).
ACTIVITY_L1 = 1e-4 if tuple(map(int, keras.__version__.split(".")[:2])) >= (3, 14) else 1e-4 / 64


def quadrant_model(seed: int = 0) -> keras.Model:
    # The L1 penalty on the last conv layer's activity teaches the model to stay silent where
    # there is nothing to see. Without it a global-average-pooled CNN keeps firing, class-
    # neutrally, on the noise, and the sensitivity methods (Grad-CAM++, SmoothGrad) rightly
    # show that sensitivity all over the image.
    keras.utils.set_random_seed(seed)
    conv = {"kernel_size": 3, "padding": "same", "activation": "relu"}
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(16, **conv),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, **conv),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(
                32,
                name="last_conv",
                activity_regularizer=keras.regularizers.L1(ACTIVITY_L1),
                **conv,
            ),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES),
        ]
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


@pytest.fixture(scope="module")
def trained():
    """The quadrant model trained to >= 90% validation accuracy, with 32 validation probes."""
    x, y = quadrant_images(2000, seed=0)
    x_val, y_val = quadrant_images(200, seed=1)
    model = quadrant_model()
    model.fit(x, y, batch_size=64, epochs=6, verbose=0)
    accuracy = model.evaluate(x_val, y_val, verbose=0)[1]
    assert accuracy >= 0.9, f"the quadrant model reached only {accuracy:.3f} accuracy"
    return model, x_val[:32], y_val[:32]


def quadrant_fraction(maps: np.ndarray) -> np.ndarray:
    """Share of each map's mass inside the deciding quadrant."""
    inside = maps[:, QUADRANT[0], QUADRANT[1]].sum(axis=(1, 2))
    return inside / np.maximum(maps.sum(axis=(1, 2)), 1e-12)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation with tied values sharing their mean rank; 0 for a constant."""
    ra, rb = _ranks(a.ravel()), _ranks(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inverse, ranks)
    return (sums / counts)[inverse]


def small_classifier(*, activation=None, dtype=None, name="small"):
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv_a"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv_b"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation=activation, dtype=dtype, name="scores"),
        ],
        name=name,
    )


def probes(n=4, shape=(16, 16, 3), seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


# -- correctness on a known answer --------------------------------------------------------------


def test_model_decides_by_the_quadrant(trained):
    """Swapping the top-right quadrant between probes moves the prediction with it."""
    model, x, y = trained
    swapped = x.copy()
    order = np.roll(np.arange(len(x)), 1)
    swapped[:, QUADRANT[0], QUADRANT[1]] = x[order][:, QUADRANT[0], QUADRANT[1]]
    predicted, _ = attribution.predicted_classes(model, swapped)
    assert np.mean(predicted == y[order]) >= 0.9


@pytest.mark.parametrize(
    ("method", "threshold"),
    [("gradcam", 0.6), ("gradcam_plus_plus", 0.6), ("smoothgrad", 0.5)],
)
def test_maps_point_at_the_deciding_quadrant(trained, method, threshold):
    """Correctly classified probes put most map mass in the deciding quadrant (chance: 25%)."""
    model, x, y = trained
    predicted, _ = attribution.predicted_classes(model, x)
    correct = predicted == y
    assert correct.mean() >= 0.9
    maps = attribution.METHODS[method](model, x[correct])
    fractions = quadrant_fraction(maps)
    print(f"{method}: quadrant mass mean {fractions.mean():.3f}, min {fractions.min():.3f}")
    assert fractions.mean() >= threshold
    assert np.median(fractions) >= threshold


@pytest.mark.parametrize("method", ["gradcam", "gradcam_plus_plus", "smoothgrad"])
def test_maps_change_when_the_weights_are_rerandomized(trained, method):
    """Adebayo et al. (2018): maps of three re-initialized copies share little rank order with
    the trained model's (mean Spearman < 0.3) and lose the quadrant."""
    model, x, _ = trained
    predicted, _ = attribution.predicted_classes(model, x)
    fn = attribution.METHODS[method]
    trained_maps = fn(model, x, class_index=predicted)
    correlations, fractions = [], []
    for seed in range(3):
        keras.utils.set_random_seed(100 + seed)
        randomized = keras.models.clone_model(model)  # same architecture, fresh initial weights
        random_maps = fn(randomized, x, class_index=predicted)
        pairs = zip(trained_maps, random_maps, strict=True)
        correlations += [rank_correlation(a, b) for a, b in pairs]
        fractions.append(quadrant_fraction(random_maps).mean())
    print(
        f"{method}: Spearman trained vs re-randomized mean {np.mean(correlations):.3f}, "
        f"max {np.max(correlations):.3f}; quadrant mass after {np.mean(fractions):.3f}"
    )
    assert np.mean(correlations) < 0.3
    assert np.mean(fractions) < 0.45


# -- the functions' contract --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "gradcam_plus_plus", "smoothgrad"])
def test_maps_are_float32_unit_range_at_input_size(method):
    """Each method returns float32 [n, h, w] in [0, 1] at the input's size, reaching 1."""
    maps = attribution.METHODS[method](small_classifier(), probes(5))
    assert maps.shape == (5, 16, 16) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert np.allclose(maps.reshape(5, -1).max(axis=1), 1.0)


def test_class_index_none_int_and_per_image_agree():
    """None means the predicted class; an int and a per-image array pick classes explicitly."""
    model, x = small_classifier(), probes(4)
    predicted, _ = attribution.predicted_classes(model, x)
    by_default = attribution.gradcam(model, x)
    np.testing.assert_allclose(attribution.gradcam(model, x, class_index=predicted), by_default)
    one = attribution.gradcam(model, x, class_index=2)
    per_image = attribution.gradcam(model, x, class_index=np.full(4, 2))
    np.testing.assert_allclose(one, per_image)


def test_smoothgrad_is_deterministic_per_seed():
    """The same seed gives the same SmoothGrad maps; another seed gives other maps."""
    model, x = small_classifier(), probes(3)
    first = attribution.smoothgrad(model, x, samples=4, seed=7)
    np.testing.assert_array_equal(first, attribution.smoothgrad(model, x, samples=4, seed=7))
    assert not np.array_equal(first, attribution.smoothgrad(model, x, samples=4, seed=8))


@pytest.mark.parametrize("method", ["gradcam", "gradcam_plus_plus", "smoothgrad"])
def test_final_softmax_is_differentiated_as_logits_and_left_in_place(method):
    """A softmax model gives the same maps as its logit twin, and keeps its softmax afterwards."""
    with_softmax = small_classifier(activation="softmax")
    logits = small_classifier(name="twin")
    logits.set_weights(with_softmax.get_weights())
    x = probes(3)
    fn = attribution.METHODS[method]
    np.testing.assert_allclose(fn(with_softmax, x, class_index=1), fn(logits, x, class_index=1))
    assert with_softmax.get_layer("scores").activation is keras.activations.softmax
    outputs = keras.ops.convert_to_numpy(with_softmax(x))
    np.testing.assert_allclose(outputs.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.skipif(backend.name() == "torch", reason="PyTorch runs eagerly: nothing traces")
def test_repeated_calls_reuse_one_compiled_function():
    """Grad-CAM calls with batches of 4, 3 and 6 images trace the compiled function once."""
    model, x = small_classifier(), probes(6)
    for n in (4, 3, 6):
        attribution.gradcam(model, x[:n])
    assert attribution.tracing_count(model) == 1


def test_layer_none_finds_the_last_conv_inside_a_nested_model():
    """layer=None reads the nested model's last conv, and maps equal a flat twin's."""
    keras.utils.set_random_seed(2)
    inner = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(6, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
        ],
        name="backbone",
    )
    inp = keras.Input((16, 16, 3))
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inner(inp)))
    nested = keras.Model(inp, out)
    flat = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    flat.set_weights(nested.get_weights())
    x = probes(3)
    assert attribution.gradcam_layers(nested, x) == ["backbone/c2"]
    for fn in (attribution.gradcam, attribution.gradcam_plus_plus):
        np.testing.assert_allclose(fn(nested, x), fn(flat, x), atol=1e-5)
    np.testing.assert_allclose(
        attribution.gradcam(nested, x, layer="c1"),
        attribution.gradcam(flat, x, layer=flat.layers[0].name),
        atol=1e-5,
    )


def test_multi_input_model_gets_one_map_per_image_input():
    """Two image inputs get a map each at their own size; the vector input gets None."""
    keras.utils.set_random_seed(3)
    a, b, v = (
        keras.Input((16, 16, 3), name="a"),
        keras.Input((12, 12, 1), name="b"),
        keras.Input((5,)),
    )
    pa = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv_a")(a))
    pb = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv_b")(b))
    out = keras.layers.Dense(3)(keras.layers.Concatenate()([pa, pb, v]))
    model = keras.Model([a, b, v], out)
    x = [probes(2), probes(2, (12, 12, 1)), np.ones((2, 5), np.float32)]
    assert attribution.gradcam_layers(model, x) == ["conv_a", "conv_b", None]
    for fn in attribution.METHODS.values():
        maps = fn(model, x)
        assert [None if m is None else m.shape for m in maps] == [(2, 16, 16), (2, 12, 12), None]


@pytest.mark.parametrize(
    ("conv", "shape"), [(keras.layers.Conv1D, (24, 2)), (keras.layers.Conv3D, (6, 8, 8, 1))]
)
def test_one_and_three_dimensional_inputs_get_maps_of_their_shape(
    conv, shape, tmp_path, read_logdir
):
    """Conv1D and Conv3D models get [n, length] and [n, d, h, w] maps, logged as one row and at
    the middle depth."""
    keras.utils.set_random_seed(4)
    pool = {1: keras.layers.GlobalAveragePooling1D, 3: keras.layers.GlobalAveragePooling3D}
    model = keras.Sequential(
        [
            keras.Input(shape),
            conv(4, 3, activation="relu", name="c"),
            pool[len(shape) - 1](),
            keras.layers.Dense(3),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = probes(3, shape)
    for fn in attribution.METHODS.values():
        maps = fn(model, x)
        assert maps.shape == (3, *shape[:-1]) and 0 <= maps.min() and maps.max() <= 1
    model.fit(
        x,
        np.array([0, 1, 2]),
        epochs=1,
        verbose=0,
        callbacks=[Attribution(tmp_path, x, budget=None)],
    )
    index, _ = read_logdir(tmp_path).datum("train", "gradcam/attribution", 0)
    assert index["tile"] == ([1, 24, 1] if len(shape) == 2 else [8, 8, 1])


def test_mixed_precision_maps_match_float32():
    """Under mixed_float16 the maps are float32 and match the float32 twin's closely."""
    reference = small_classifier()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = small_classifier(dtype="float32", name="mixed")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(reference.get_weights())
    assert mixed.get_layer("conv_a").compute_dtype == "float16"
    x = probes(4)
    for fn in attribution.METHODS.values():
        half, full = fn(mixed, x, class_index=1), fn(reference, x, class_index=1)
        assert half.dtype == np.float32
        assert np.corrcoef(half.ravel(), full.ravel())[0, 1] > 0.99


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x: attribution.gradcam(m, x, class_index=3), "Received: class_index=3"),
        (lambda m, x: attribution.gradcam(m, x, class_index=-1), "Received: class_index=-1"),
        (
            lambda m, x: attribution.smoothgrad(m, x, class_index=[0, 1, 9, 0]),
            "Received: class_index=[0, 1, 9, 0]",
        ),
        (lambda m, x: attribution.gradcam(m, x, class_index=[0, 1]), "class_index=[0, 1]"),
        (lambda m, x: attribution.gradcam(m, x, layer="scores"), "Received: layer='scores'"),
        (lambda m, x: attribution.gradcam(m, x, layer="nope"), "Received: layer='nope'"),
        (lambda m, x: attribution.gradcam(m, x[:, :15]), "images.shape=(4, 15, 16, 3)"),
        (lambda m, x: attribution.gradcam_plus_plus(m, x[0]), "images.shape=(16, 16, 3)"),
        (lambda m, x: attribution.smoothgrad(m, x, samples=0), "Received: samples=0"),
        (lambda m, x: attribution.smoothgrad(m, x, noise=-1.0), "Received: noise=-1.0"),
    ],
)
def test_bad_input_gets_a_value_error_naming_argument_and_value(call, message):
    """Out-of-range classes, non-conv layers, wrong shapes: a ValueError with the value received."""
    with pytest.raises(ValueError, match=re.escape(message)):
        call(small_classifier(), probes(4))


def test_callback_rejects_labels_of_the_wrong_length_and_unknown_methods(tmp_path):
    """Labels must match the probes; methods must be known; both fail in the constructor."""
    with pytest.raises(ValueError, match="labels with length 3"):
        Attribution(tmp_path, probes(4), labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"Received: methods=\('gradcam', 'lime'\)"):
        Attribution(tmp_path, probes(4), methods=("gradcam", "lime"))


def test_callback_rejects_out_of_range_labels_before_training(tmp_path):
    """Labels beyond the model's classes raise in on_train_begin, before any epoch."""
    model = small_classifier()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = probes(4)
    with pytest.raises(ValueError, match=r"Received: labels=\[0, 1, 2, 5\]"):
        model.fit(
            x,
            np.zeros(4),
            epochs=1,
            verbose=0,
            callbacks=[Attribution(tmp_path, x, labels=[0, 1, 2, 5])],
        )


# -- logging --------------------------------------------------------------------------------------


def test_callback_logs_image_and_heatmaps_per_probe_with_predictions(tmp_path, read_logdir):
    """Two epochs, three methods: exact tags, steps, slice labels, stats, and decodable tiles."""
    model = small_classifier()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, labels = probes(4), np.array([0, 1, 2, 1])
    callback = Attribution(
        tmp_path,
        x,
        labels=labels,
        methods=("gradcam", "gradcam_plus_plus", "smoothgrad"),
        class_names=["cat", "dog", "eel"],
        budget=None,
    )
    model.fit(x, labels, epochs=2, verbose=0, callbacks=[callback])
    logs = read_logdir(tmp_path)
    assert logs.cnnviz_tags() == {
        ("train", "Attribution/plan"),
        ("train", "gradcam/attribution"),
        ("train", "gradcam_plus_plus/attribution"),
        ("train", "smoothgrad/attribution"),
    }
    predicted, confidence = attribution.predicted_classes(model, x)
    for _, tag in logs.cnnviz_tags():
        assert logs.steps("train", tag) == [0, 1]
        if tag.endswith("/plan"):
            continue
        index, atlases = logs.datum("train", tag, 1)
        assert index["kind"] == "attribution" and index["filters"] == [0, 1, 2, 3]
        assert index["slices"] == {
            "axis": "image",
            "count": 3,
            "total": 3,
            "labels": ["image", "predicted", "true"],
        }
        assert index["tile"] == [16, 16, 3]
        assert index["stats"]["predicted"] == predicted.tolist()
        assert index["stats"]["true"] == labels.tolist()
        assert index["stats"]["correct"] == (predicted == labels).tolist()
        np.testing.assert_allclose(index["stats"]["confidence"], confidence, rtol=1e-5)
        assert index["layer_stats"]["accuracy"] == pytest.approx(np.mean(predicted == labels))
        decoded = tiles.unpack_tiles(
            [(png, a["cols"]) for png, a in zip(atlases, index["atlases"], strict=True)],
            tuple(index["tile"]),
            index["ranges"],
        )
        assert decoded.shape == (12, 16, 16, 3)
        span = np.ptp(x.reshape(4, -1), axis=1)[:, None, None, None]
        assert np.all(np.abs(decoded[0::3] - x) <= span / 255 + 1e-6)  # the probe images
        heat = decoded.reshape(4, 3, 16, 16, 3)[:, 1:]
        assert heat.min() >= -1e-6 and heat.max() <= 1 + 1e-6
        assert np.all(heat[..., 0] == heat[..., 2])  # heatmaps are gray
    md = logs.provider.list_blob_sequences(logs.ctx, experiment_id="", plugin_name="cnnviz")
    static = metadata.parse_plugin_metadata(md["train"]["gradcam/attribution"].plugin_content)
    assert static.kind == "attribution" and static.layer == "gradcam"
    assert static.extra == {
        "method": "gradcam",
        "target_layer": "conv_b",
        "class_names": ["cat", "dog", "eel"],
    }


def test_callback_without_labels_logs_predicted_class_only(tmp_path, read_logdir):
    """Without labels the slices are image and predicted; true and correct are null."""
    model = small_classifier()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = probes(2)
    model.fit(
        x, np.zeros(2), epochs=1, verbose=0, callbacks=[Attribution(tmp_path, x, budget=None)]
    )
    index, _ = read_logdir(tmp_path).datum("train", "gradcam/attribution", 0)
    assert index["slices"]["labels"] == ["image", "predicted"]
    assert index["stats"]["true"] == [None, None] and index["stats"]["correct"] == [None, None]
    assert index["layer_stats"]["accuracy"] is None


def test_true_class_map_is_that_class_where_the_prediction_is_wrong(tmp_path, read_logdir):
    """A wrong probe's "true" tile is Grad-CAM of its true class; a right probe's repeats its
    "predicted" tile."""
    model, x = small_classifier(), probes(3)
    predicted, _ = attribution.predicted_classes(model, x)
    labels = predicted.copy()
    labels[1] = (predicted[1] + 1) % 3
    callback = Attribution(tmp_path, x, labels=labels, budget=None)
    callback.set_model(model)  # the Keras callback protocol, driven without training
    callback.on_train_begin()
    callback.on_epoch_end(0)
    callback.on_train_end()
    index, atlases = read_logdir(tmp_path).datum("train", "gradcam/attribution", 0)
    decoded = tiles.unpack_tiles(
        [(png, a["cols"]) for png, a in zip(atlases, index["atlases"], strict=True)],
        tuple(index["tile"]),
        index["ranges"],
    ).reshape(3, 3, 16, 16, 3)[..., 0]
    assert index["stats"]["correct"] == [True, False, True]
    expected_true = attribution.gradcam(model, x[1:2], class_index=int(labels[1]))[0]
    np.testing.assert_allclose(decoded[1, 2], expected_true, atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(decoded[0, 2], decoded[0, 1])
    expected_predicted = attribution.gradcam(model, x)
    np.testing.assert_allclose(decoded[:, 1], expected_predicted, atol=1 / 255 + 1e-6)


def test_summary_attribution_validates_and_skips_without_a_writer():
    """Mismatched heatmaps raise; with no default writer nothing is written."""
    x = probes(2)
    with pytest.raises(ValueError, match=r"heatmaps.shape=\(2, 8, 8\)"):
        summary.attribution(
            "gradcam", x, np.zeros((2, 8, 8)), step=0, predicted=[0, 1], confidence=[1, 1]
        )
    with pytest.raises(ValueError, match="true_classes=None"):
        summary.attribution(
            "gradcam",
            x,
            np.zeros((2, 16, 16)),
            step=0,
            predicted=[0, 1],
            confidence=[1, 1],
            true_heatmaps=np.zeros((2, 16, 16)),
        )
    assert not summary.attribution(
        "gradcam", x, np.zeros((2, 16, 16)), step=0, predicted=[0, 1], confidence=[1, 1]
    )


def test_callback_works_with_a_sequential_built_by_fit(tmp_path, read_logdir):
    """A Sequential without an Input, built only by fit(), is checked after the first batch."""
    model = keras.Sequential(
        [keras.layers.Conv2D(4, 3, name="only_conv"), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = probes(2)
    callback = Attribution(
        tmp_path, x, labels=[0, 2], methods=("gradcam", "smoothgrad"), budget=None
    )
    model.fit(x, np.array([0, 2]), epochs=1, verbose=0, callbacks=[callback])
    logs = read_logdir(tmp_path)
    assert {tag for _, tag in logs.cnnviz_tags()} == {
        "Attribution/plan",
        "gradcam/attribution",
        "smoothgrad/attribution",
    }
    assert callback._target_layers == ["only_conv"]


def test_multi_input_callback_writes_one_tag_per_image_input(tmp_path, read_logdir):
    """Each image input of a multi-input model gets its own `<method>/<input>` tag."""
    keras.utils.set_random_seed(3)
    a, b = keras.Input((16, 16, 3), name="left"), keras.Input((12, 12, 1), name="right")
    pa = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(a))
    pb = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(b))
    model = keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Concatenate()([pa, pb])))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = [probes(2), probes(2, (12, 12, 1))]
    model.fit(
        x, np.zeros(2), epochs=1, verbose=0, callbacks=[Attribution(tmp_path, x, budget=None)]
    )
    logs = read_logdir(tmp_path)
    assert logs.cnnviz_tags() == {
        ("train", "Attribution/plan"),
        ("train", "gradcam/left/attribution"),
        ("train", "gradcam/right/attribution"),
    }
    index, _ = logs.datum("train", "gradcam/right/attribution", 0)
    assert index["tile"] == [12, 12, 1]


def test_cnnviz_includes_attribution_only_with_probe_images(tmp_path):
    """CNNViz adds Attribution (with labels and attribution_freq) when probe images are given."""
    with_probes = CNNViz(tmp_path, probes(2), labels=[0, 1], attribution_freq=3)
    [added] = [c for c in with_probes.callbacks if isinstance(c, Attribution)]
    assert added.freq == 3 and added.labels.tolist() == [0, 1]
    assert not any(isinstance(c, Attribution) for c in CNNViz(tmp_path).callbacks)


# -- every backend -------------------------------------------------------------------------------

#: Runs in a fresh interpreter with KERAS_BACKEND set: the model from its JSON and .npz weights,
#: then Grad-CAM and Grad-CAM++ of each image's predicted class and of class 0.
BACKEND_SCRIPT = """
import sys, numpy as np, keras
from tb_cnnviz import attribution
folder = sys.argv[1]
model = keras.models.model_from_json(open(folder + "/model.json").read())
weights = np.load(folder + "/weights.npz")
model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
x = np.load(folder + "/images.npy")
np.savez(
    folder + "/" + keras.backend.backend() + ".npz",
    gradcam=attribution.gradcam(model, x),
    plus_plus=attribution.gradcam_plus_plus(model, x),
    class_zero=attribution.gradcam(model, x, target=0),
)
"""


@pytest.mark.tensorflow  # runs TensorFlow beside JAX
@pytest.mark.slow
def test_gradcam_maps_agree_on_tensorflow_and_jax_within_1e_3(tmp_path):
    """The same weights give the same Grad-CAM and Grad-CAM++ maps on TF and JAX (<= 1e-3)."""
    pytest.importorskip("jax")
    import os
    import subprocess
    import sys

    model = quadrant_model(seed=3)
    model.fit(*quadrant_images(256, seed=3), epochs=1, verbose=0)  # weights off their init
    (tmp_path / "model.json").write_text(model.to_json())
    np.savez(tmp_path / "weights.npz", *model.get_weights())
    np.save(tmp_path / "images.npy", quadrant_images(6, seed=4)[0])
    maps = {}
    for name in ("tensorflow", "jax"):
        env = {**os.environ, "KERAS_BACKEND": name}
        done = subprocess.run(
            [sys.executable, "-c", BACKEND_SCRIPT, str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        maps[name] = np.load(tmp_path / f"{name}.npz")
    for key in ("gradcam", "plus_plus", "class_zero"):
        tf_maps, jax_maps = maps["tensorflow"][key], maps["jax"][key]
        assert tf_maps.shape == jax_maps.shape == (6, SIZE, SIZE)
        assert tf_maps.max() == pytest.approx(1.0)
        difference = np.abs(tf_maps - jax_maps).max()
        print(f"{key}: max |TF - JAX| = {difference:.2e}")
        assert difference <= 1e-3


def test_cnnviz_explains_a_resnets_last_conv_through_its_feature_maps_pass_and_the_tail(
    tmp_path, read_logdir
):
    """On a model ending in a residual sum (a ResNet's last conv), CNNViz's feature-maps pass
    also captures the sum's skip tensor, so Grad-CAM differentiates the small tail alone (no
    Grad-CAM of the whole model is built) and the skip layer gets no feature maps of its own."""
    if not zoo.functions_from_inner_tensors():
        pytest.skip("this Keras builds no function from an inner tensor, so no tail")
    model = zoo.residual_head()
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 12, 12, 3), dtype=np.float32), rng.integers(0, 3, 16)
    viz = CNNViz(str(tmp_path), x[:4], labels=y[:4], budget=None, actmax_freq=0)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[viz])
    built = [key[0] for key in attribution._CACHE[model]]
    assert "tail-cam" in built and "cam" not in built, built
    logs = read_logdir(tmp_path)
    assert logs.steps("train", "gradcam/attribution") == [0, 1]
    maps = {tag for _, tag in logs.cnnviz_tags() if tag.endswith("/feature_maps")}
    assert maps == {"stem/feature_maps", "first/feature_maps", "last/feature_maps"}


@pytest.mark.parametrize("build", ["head_after_last_conv", "residual_head"])
def test_a_step_runs_the_probe_images_through_the_model_once_for_maps_gradcam_and_predictions(
    tmp_path, read_logdir, monkeypatch, build
):
    """At each step the feature maps, Grad-CAM of the last conv (through the model's tail) and
    the probes' predictions read one pass of the probe images (`layers.reusing_passes`), not
    three; each step's pass sees that step's weights."""
    if not zoo.functions_from_inner_tensors():
        pytest.skip("this Keras builds no function from an inner tensor, so no tail")
    from tb_cnnviz import layers as layer_lib

    passes = []
    run = layer_lib.Extractor._outputs

    def counted(self, arrays):
        passes.append(len(arrays[0]))
        return run(self, arrays)

    monkeypatch.setattr(layer_lib.Extractor, "_outputs", counted)
    model = getattr(zoo, build)()
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 12, 12, 3), dtype=np.float32), rng.integers(0, 3, 16)
    viz = CNNViz(str(tmp_path), x[:4], labels=y[:4], budget=None, actmax_freq=0)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[viz])
    logs = read_logdir(tmp_path)
    assert logs.steps("train", "gradcam/attribution") == [0, 1, 2]
    assert logs.steps("train", "last/feature_maps") == [0, 1, 2]
    built = [key[0] for key in attribution._CACHE[model]]  # through the tail, not the model
    assert "tail-cam" in built and "cam" not in built, built
    assert passes == [4, 4, 4]  # budget=None: no timed pass before epoch 0; one per step
    # Each step's maps are that step's: the weights changed between steps.
    first = logs.datum("train", "last/feature_maps", 0)[1]
    last = logs.datum("train", "last/feature_maps", 2)[1]
    assert first != last


def test_reusing_passes_reuses_only_the_same_inputs_asked_to_inside_it():
    """Outside `reusing_passes` every call runs the model; inside, a call with `reuse=True` and
    the inputs of an earlier such call does not, other inputs or a call without `reuse` (the
    reference images' batches) do; nested scopes keep the outer one's passes."""
    from tb_cnnviz import layers as layer_lib

    model = zoo.head_after_last_conv()
    ex = layer_lib.extractor(model, [model.get_layer("last")])
    a = np.random.default_rng(0).random((2, 12, 12, 3)).astype("float32")
    b = a[::-1].copy()
    ex(a, reuse=True)
    ex(a, reuse=True)
    assert not ex.reused  # no scope: the model runs again
    with layer_lib.reusing_passes():
        (maps_a,) = ex(a, reuse=True)
        assert not ex.reused
        (maps_b,) = ex(b, reuse=True)
        assert not ex.reused  # other inputs
        (fresh,) = ex(a)
        assert not ex.reused and fresh is not maps_a  # not asked to reuse
        with layer_lib.reusing_passes():
            (again,) = ex(a, reuse=True)
            assert ex.reused and again is maps_a
        (again,) = ex(a.copy(), reuse=True)  # the same values in another array
        assert ex.reused and again is maps_a
    (after,) = ex(a, reuse=True)
    assert not ex.reused
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(after), keras.ops.convert_to_numpy(maps_a)
    )
    assert not np.allclose(keras.ops.convert_to_numpy(maps_a), keras.ops.convert_to_numpy(maps_b))


@pytest.mark.parametrize("build", ["head_after_last_conv", "residual_head"])
@pytest.mark.parametrize("binary", [False, True])
def test_gradcam_through_a_traced_pass_and_the_tail_equals_the_whole_models_and_runs_no_model(
    binary, build
):
    """Once a compiled pass includes the last conv (the feature maps') and what its tail reads
    besides (a residual sum's skip tensor), Grad-CAM and the predictions come from it and the
    model's tail: the same maps and classes as from the whole model, and on a compiling backend
    the model itself is not run (or traced) again."""
    if not zoo.functions_from_inner_tensors():
        pytest.skip("this Keras builds no function from an inner tensor, so no tail")
    model = getattr(zoo, build)(binary)
    images = np.random.default_rng(1).random((5, 12, 12, 3)).astype("float32")
    whole = attribution.gradcam(model, images)
    repeated = images[[0, 3, 0]]  # a probe explained for a second class repeats it
    whole_repeated = attribution.gradcam(model, repeated, target=[0, 1, 1])
    _, whole_predictions = attribution.predictions(model, images)
    assert not attribution.runs_through_tail(model, "last")
    from tb_cnnviz import layers as layer_lib

    convs = [layer for _, layer in layer_lib.conv_layers(model)]
    extras = list(layer_lib.tail(model, model.get_layer("last")).extras)
    assert [e.name for e in extras] == (["stem_out"] if build == "residual_head" else [])
    if extras:  # a pass without the skip tensor cannot serve the tail
        layer_lib.extractor(model, convs)(images)
        assert not attribution.runs_through_tail(model, "last")
    layer_lib.extractor(model, convs + extras)(images)  # the feature maps' pass, traced
    assert attribution.runs_through_tail(model, "last")
    calls = []
    plain_call = model.call
    model.call = lambda *a, **kw: calls.append(1) or plain_call(*a, **kw)
    try:
        tail = attribution.gradcam(model, images)
        tail_repeated = attribution.gradcam(model, repeated, target=[0, 1, 1])
        _, tail_predictions = attribution.predictions(model, images)
    finally:
        del model.call
    np.testing.assert_allclose(tail, whole, atol=1e-5)
    np.testing.assert_allclose(tail_repeated, whole_repeated, atol=1e-5)
    assert tail.std() > 0.05  # maps with something in them
    np.testing.assert_array_equal(tail_predictions["predicted"], whole_predictions["predicted"])
    np.testing.assert_allclose(tail_predictions["confidence"], whole_predictions["confidence"])
    if backend.name() != "torch":  # PyTorch runs the feature maps' pass eagerly, model and all
        assert calls == []
