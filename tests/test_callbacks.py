"""The Keras callbacks: real training on small models, read back through TensorBoard."""

from __future__ import annotations

import os
import re
import warnings

import keras
import numpy as np
import pytest
import zoo

from tb_cnnviz import backend, tiles
from tb_cnnviz import budget as budget_lib
from tb_cnnviz.callbacks import (
    ActivationMaximization,
    Attribution,
    CNNViz,
    FeatureMaps,
    FilterWeights,
)


def on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def small_cnn(input_shape=(12, 12, 3), *, build=True):
    layers = [
        keras.layers.Conv2D(4, 3, activation="relu", name="conv_a"),
        keras.layers.Conv2D(6, 3, activation="relu", name="conv_b"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, name="out"),
    ]
    if build:
        layers.insert(0, keras.Input(input_shape))
    model = keras.Sequential(layers)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def data(n=16, shape=(12, 12, 3), seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, 2, n)


def fit(model, callbacks, epochs=2, shape=(12, 12, 3)):
    x, y = data(shape=shape)
    return model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=callbacks)


def test_two_epoch_fit_writes_exactly_the_expected_tags_and_steps(tmp_path, read_logdir):
    """A 2-epoch fit with CNNViz (beside keras' TensorBoard on TF) yields exactly these tags."""
    model = small_cnn()
    probes, _ = data(n=3, seed=1)
    # Keras' own TensorBoard callback writes through TensorFlow: beside it where TF runs.
    beside = [keras.callbacks.TensorBoard(str(tmp_path))] if on_tensorflow() else []
    fit(model, [*beside, CNNViz(str(tmp_path), probe_images=probes, budget=None)])
    logs = read_logdir(tmp_path)
    assert logs.cnnviz_tags() == {
        ("train", "cnnviz/plan"),
        ("train", "conv_a/weights"),
        ("train", "conv_b/weights"),
        ("train", "conv_a/feature_maps"),
        ("train", "conv_b/feature_maps"),
        ("train", "conv_a/actmax"),
        ("train", "conv_b/actmax"),
        ("train", "gradcam/attribution"),
    }
    for run, tag in logs.cnnviz_tags():
        assert logs.steps(run, tag) == [0, 1]
    scalars = logs.scalar_tags()
    if beside:
        assert ("train", "epoch_loss") in scalars  # Keras' own scalars stand in the same run
    assert {
        ("train", "conv_a/update_ratio"),
        ("train", "conv_b/update_ratio"),
        ("train", "conv_a/dead_fraction"),
        ("train", "conv_b/dead_fraction"),
    } <= scalars
    assert [s for s, _ in logs.scalars("train", "conv_a/update_ratio")] == [1]


def test_a_fit_reads_back_through_the_plugin(tmp_path, read_logdir):
    """What a fit wrote (on whichever backend) is served by the real plugin, atlases included."""
    import urllib.parse

    probes, _ = data(n=3, seed=1)
    fit(small_cnn(), [CNNViz(str(tmp_path), probe_images=probes, budget=None)], epochs=1)
    client = read_logdir(tmp_path).client()
    prefix = "/data/plugin/cnnviz/"
    tags = client.get(prefix + "tags").get_json()["train"]
    assert {"conv_b/weights", "conv_b/feature_maps", "conv_b/actmax", "gradcam/attribution"} <= set(
        tags
    )
    for tag in tags:
        query = urllib.parse.urlencode({"run": "train", "tag": tag, "step": 0})
        body = client.get(f"{prefix}layer?{query}").get_json()
        assert body["step"] == 0 and body["index"]["filters"], tag
        for url in body["atlases"]:
            png = client.get(prefix + url)
            assert png.status_code == 200 and png.data[:8] == b"\x89PNG\r\n\x1a\n", tag


@pytest.mark.parametrize("kind", ["cnnviz", "feature_maps"])
def test_the_first_epochs_batches_reach_the_budget_and_its_compiling_leaves_the_projection(
    tmp_path, kind
):
    """CNNViz, and a kind on its own, pass the first epoch's batch begins to the time budget: it
    counts them and keeps the first batch's extra time (the train step's compiling) out of the
    training it projects for the epochs to come."""
    model = small_cnn()
    probes, _ = data(n=3, seed=1)
    make = CNNViz if kind == "cnnviz" else FeatureMaps
    callback = make(str(tmp_path), probe_images=probes)
    x, y = data(n=32)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    budget = callback.time_budget
    assert budget.first_epoch_batches == 4  # the first epoch's; the second's not again
    if backend.name() in ("tensorflow", "jax"):  # compiled train steps: a slow first batch
        assert 0 < budget.warmup_seconds < budget.train_seconds


def test_drawn_weight_tile_equals_the_kernel(tmp_path, read_logdir):
    """Every drawn weight tile decodes to the kernel within 1/255 of its filter's range (a
    filter's slices share it)."""
    model = small_cnn()
    fit(model, [FilterWeights(str(tmp_path))], epochs=1)
    index, atlases = read_logdir(tmp_path).datum("train", "conv_b/weights", 0)
    kernel = model.get_layer("conv_b").kernel.numpy()  # [3, 3, 4, 6]
    assert index["slices"] == {"axis": "input_channel", "count": 4, "total": 4}
    assert index["tile"] == [3, 3, 1]
    drawn = tiles.unpack_tiles(
        [(png, a["cols"]) for png, a in zip(atlases, index["atlases"], strict=True)],
        tuple(index["tile"]),
        index["ranges"],
    )
    expected = np.moveaxis(kernel, (-1, -2), (0, 1)).reshape(-1, 3, 3, 1)  # filter-major
    span = np.repeat(np.ptp(expected.reshape(6, -1), axis=1), 4)[:, None, None, None]
    assert np.all(np.abs(drawn - expected) <= span / 255 + 1e-6)
    by_filter = expected.reshape(6, -1)
    np.testing.assert_allclose(np.asarray(index["ranges"])[::4, 1], by_filter.max(axis=1))


def test_first_rgb_layer_is_drawn_in_colour(tmp_path, read_logdir):
    """A first conv layer reading RGB gets one colour tile per filter; a deeper one does not."""
    fit(small_cnn(), [FilterWeights(str(tmp_path))], epochs=1)
    logs = read_logdir(tmp_path)
    first, _ = logs.datum("train", "conv_a/weights", 0)
    assert first["slices"]["axis"] == "rgb" and first["tile"] == [3, 3, 3]
    assert len(first["ranges"]) == 4


def test_feature_map_statistics_flag_dead_filters(tmp_path, read_logdir):
    """Feature-map stats hold mean, max, zero fraction and a dead flag matching the activations."""
    model = small_cnn()
    fit(model, [], epochs=1)
    kernel, bias = model.get_layer("conv_b").get_weights()
    kernel[..., 0] = 0.0
    bias[0] = -1.0  # filter 0 of conv_b now outputs relu(-1) = 0 everywhere: dead
    bias[1:] = 5.0  # and the others are surely alive
    model.get_layer("conv_b").set_weights([kernel, bias])
    probes, _ = data(n=2, seed=3)
    callback = FeatureMaps(str(tmp_path), probes, layers=["conv_b"], budget=None)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(0)
    callback.on_train_end()
    logs = read_logdir(tmp_path)
    index, _ = logs.datum("train", "conv_b/feature_maps", 0)
    assert index["stats"]["dead"][0] is True
    assert index["stats"]["zero_fraction"][0] == 1.0
    assert index["layer_stats"]["dead_fraction"] == pytest.approx(1 / 6)
    assert index["slices"] == {"axis": "probe", "count": 2, "total": 2}
    assert logs.scalars("train", "conv_b/dead_fraction")[0][1] == pytest.approx(1 / 6)


def test_layers_inside_a_nested_model_are_found_and_named_by_path(tmp_path, read_logdir):
    """Conv layers in a sub-model are logged under `outer/inner` paths, feature maps too."""
    inner = keras.Sequential(
        [keras.Input((10, 10, 4)), keras.layers.Conv2D(5, 3, name="deep")], name="block"
    )
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, name="stem")(inp)
    x = inner(x)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probes, _ = data(n=2)
    fit(model, [CNNViz(str(tmp_path), probe_images=probes, budget=None)], epochs=1)
    assert read_logdir(tmp_path).cnnviz_tags() == {
        ("train", "cnnviz/plan"),
        ("train", "stem/weights"),
        ("train", "block/deep/weights"),
        ("train", "stem/feature_maps"),
        ("train", "block/deep/feature_maps"),
        ("train", "stem/actmax"),
        ("train", "block/deep/actmax"),
        ("train", "gradcam/attribution"),
    }


def test_unbuilt_sequential_and_layer_selection(tmp_path, read_logdir):
    """A Sequential built only by fit() works, and layers= selects by name."""
    fit(small_cnn(build=False), [FilterWeights(str(tmp_path), layers=["conv_b"])], epochs=1)
    assert read_logdir(tmp_path).cnnviz_tags() == {
        ("train", "conv_b/weights"),
        ("train", "FilterWeights/plan"),
    }


def test_frequency_zero_turns_a_kind_off_and_two_skips_epochs(tmp_path, read_logdir):
    """*_freq=0 turns a kind off; feature_maps_freq=2 logs epochs 1 and 3 (steps 1, 3)."""
    probes, _ = data(n=2)
    viz = CNNViz(
        str(tmp_path),
        probes,
        weights_freq=0,
        feature_maps_freq=2,
        attribution_freq=0,
        actmax_freq=0,
        budget=None,
    )
    fit(small_cnn(), [viz], epochs=4)
    logs = read_logdir(tmp_path)
    assert {tag for _, tag in logs.cnnviz_tags()} == {
        "conv_a/feature_maps",
        "conv_b/feature_maps",
        "cnnviz/plan",
    }
    assert logs.steps("train", "conv_a/feature_maps") == [1, 3]
    assert logs.steps("train", "cnnviz/plan") == [1, 3]  # nothing due, nothing planned


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: FilterWeights(d, freq=-1), "freq=-1"),
        (lambda d: FilterWeights(d, freq=1.5), "freq=1.5"),
        (lambda d: FilterWeights(d, max_filters=0), "max_filters=0"),
        (lambda d: FilterWeights(d, layers=[3]), "layers=[3]"),
        (lambda d: FeatureMaps(d), "probe_images=None"),
        (lambda d: FeatureMaps(d, probe_images=np.zeros((0, 12, 12, 3))), "shape=(0, 12, 12, 3)"),
        (lambda d: FeatureMaps(d, probe_images=np.array([["a"]])), "dtype=<U1"),
        (lambda d: FeatureMaps(d, probe_images=np.zeros(5)), "shape=(5,)"),
        (lambda d: FeatureMaps(d, probe_images=np.full((1, 12, 12, 3), np.nan)), "NaN"),
    ],
)
def test_bad_arguments_raise_a_clear_value_error_at_construction(tmp_path, make, message):
    """Bad constructor arguments raise ValueError quoting the value received."""
    with pytest.raises(ValueError, match=re.escape(message)):
        make(str(tmp_path))


def _train_then_fail(tmp_path, read_logdir, bad_callback):
    """Trains once successfully, then a second fit with `bad_callback` must fail before epoch 0."""
    model = small_cnn()
    fit(model, [FilterWeights(str(tmp_path))], epochs=1)
    before = read_logdir(tmp_path).steps("train", "conv_a/weights")
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError) as err:
        fit(model, [bad_callback], epochs=1)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert read_logdir(tmp_path).steps("train", "conv_a/weights") == before == [0]
    return str(err.value)


def test_unknown_layer_fails_before_training_and_lists_valid_names(tmp_path, read_logdir):
    """An unknown layer name raises before any epoch, lists valid names, and keeps earlier logs."""
    message = _train_then_fail(tmp_path, read_logdir, FilterWeights(str(tmp_path), layers="nope"))
    assert "'nope'" in message and "['conv_a', 'conv_b']" in message


def test_probe_images_of_the_wrong_shape_fail_before_training(tmp_path, read_logdir):
    """Probe images that do not fit the model raise before any epoch and keep earlier logs."""
    bad = FeatureMaps(str(tmp_path), probe_images=np.zeros((2, 12, 12, 5)))
    message = _train_then_fail(tmp_path, read_logdir, bad)
    assert "probe_images" in message and "(2, 12, 12, 5)" in message


def test_model_without_conv_layers_fails_before_training(tmp_path):
    """A model with no conv layer raises a ValueError naming the conv classes."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no convolution layer"):
        model.fit(
            np.zeros((4, 4)), np.zeros((4, 2)), verbose=0, callbacks=[FilterWeights(str(tmp_path))]
        )


def test_unwritable_log_dir_fails_before_training(tmp_path):
    """A log_dir that cannot be created raises a ValueError quoting it."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="log_dir"):
        fit(small_cnn(), [FilterWeights(str(blocker / "logs"))], epochs=1)


def test_a_failing_visualization_warns_once_and_training_goes_on(tmp_path, read_logdir):
    """NaN weights from epoch 1 on: one warning, all epochs run, epoch 0's pictures intact."""

    class PoisonAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                layer = self.model.get_layer("conv_b")
                kernel, bias = layer.get_weights()
                layer.set_weights([np.full_like(kernel, np.nan), bias])

    model = small_cnn()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, [PoisonAfterFirstEpoch(), FilterWeights(str(tmp_path))], epochs=3)
    ours = [w for w in caught if "tb-cnnviz" in str(w.message)]
    assert len(ours) == 1 and "NaN" in str(ours[0].message)
    assert len(history.history["loss"]) == 3
    logs = read_logdir(tmp_path)
    # The NaNs spread to conv_a through training; both keep the picture of epoch 0.
    assert logs.steps("train", "conv_b/weights") == [0]
    assert logs.steps("train", "conv_a/weights") == [0]
    index, _ = logs.datum("train", "conv_b/weights", 0)
    assert np.isfinite(index["ranges"]).all()


def test_event_files_land_in_the_train_run_of_log_dir(tmp_path):
    """Pictures are written under <log_dir>/train, the run Keras' TensorBoard callback uses."""
    fit(small_cnn(), [FilterWeights(str(tmp_path))], epochs=1)
    assert os.listdir(tmp_path) == ["train"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "train"))


# -- Nothing is lost: an outer tf.summary.record_if never drops what a callback draws ---------


@pytest.mark.tensorflow
@pytest.mark.parametrize("update_freq", [3, "batch"])
@pytest.mark.parametrize("cnnviz_first", [True, False])
def test_keras_tensorboard_update_freq_never_drops_an_epoch(
    tmp_path, read_logdir, update_freq, cnnviz_first
):
    """Beside TensorBoard(update_freq=3 or "batch"), in either order, every epoch of every kind."""
    probes, _ = data(n=2, seed=1)
    viz = CNNViz(str(tmp_path), probe_images=probes, budget=None)
    keras_tb = keras.callbacks.TensorBoard(str(tmp_path), update_freq=update_freq)
    fit(small_cnn(), [viz, keras_tb] if cnnviz_first else [keras_tb, viz], epochs=5)
    logs = read_logdir(tmp_path)
    tags = {tag for _, tag in logs.cnnviz_tags()}
    assert {"conv_b/weights", "conv_b/feature_maps", "conv_b/actmax", "gradcam/attribution"} <= tags
    for tag in tags:
        assert logs.steps("train", tag) == [0, 1, 2, 3, 4], tag
    for scalar in ("conv_b/update_ratio", "conv_b/dead_fraction"):
        assert [s for s, _ in logs.scalars("train", scalar)] == (
            [1, 2, 3, 4] if "update" in scalar else [0, 1, 2, 3, 4]
        )


@pytest.mark.tensorflow
@pytest.mark.parametrize(
    "make",
    [
        lambda d, p: FilterWeights(d),
        lambda d, p: FeatureMaps(d, p, budget=None),
        lambda d, p: Attribution(d, p, budget=None),
        lambda d, p: ActivationMaximization(d, steps=2, budget=None),
    ],
    ids=["FilterWeights", "FeatureMaps", "Attribution", "ActivationMaximization"],
)
def test_each_per_kind_callback_logs_every_epoch_under_update_freq(tmp_path, read_logdir, make):
    """Each per-kind callback beside TensorBoard(update_freq=3) logs all 4 epochs."""
    probes, _ = data(n=2, seed=1)
    callback = make(str(tmp_path), probes)
    fit(small_cnn(), [keras.callbacks.TensorBoard(str(tmp_path), update_freq=3), callback], 4)
    logs = read_logdir(tmp_path)
    pictures = [tag for _, tag in logs.cnnviz_tags() if not tag.endswith("/plan")]
    assert pictures
    for tag in pictures:
        assert logs.steps("train", tag) == [0, 1, 2, 3], tag


@pytest.mark.tensorflow
def test_summary_functions_inside_record_if_false_write_nothing(tmp_path, read_logdir):
    """In a custom loop, summary functions obey record_if(False) as tf.summary does."""
    import tensorflow as tf

    from tb_cnnviz import summary

    writer = tf.summary.create_file_writer(str(tmp_path / "train"))
    kernel = np.random.default_rng(0).random((3, 3, 3, 4))
    with writer.as_default(step=0):
        with tf.summary.record_if(False):
            assert summary.filter_weights("off", kernel) is False
        assert summary.filter_weights("on", kernel) is True
    writer.close()
    assert read_logdir(tmp_path).cnnviz_tags() == {("train", "on/weights")}


# -- The time budget ---------------------------------------------------------------------------


class SlowTraining(keras.callbacks.Callback):
    """Makes each batch take `seconds` longer, as a bigger model or dataset would."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        import time

        time.sleep(self.seconds)


def plans(logs, owner="cnnviz"):
    """Every plan record of the train run, by step."""
    out = {}
    for step in logs.steps("train", f"{owner}/plan"):
        index, _ = logs.datum("train", f"{owner}/plan", step)
        out[step] = index
    return out


def test_a_second_one_epoch_fit_draws_its_own_step(tmp_path, read_logdir):
    """Two fit() calls of one epoch (both epoch 0; the second with another model) each run their
    own probe pass: no stale or missing outputs; the second one's step continues at 1, with the
    one warning saying so (issue 22: each step kept once)."""
    probes, labels = data(n=3, seed=1)
    viz = CNNViz(str(tmp_path), probe_images=probes, labels=labels, budget=None, actmax_freq=0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit(small_cnn(), [viz], epochs=1)
        fit(small_cnn(), [viz], epochs=1)
    said = [str(w.message) for w in seen if "tb-cnnviz" in str(w.message)]
    assert len(said) == 1 and "steps continue at 1" in said[0], said
    logs = read_logdir(tmp_path)
    assert logs.steps("train", "conv_b/feature_maps") == [0, 1]
    assert ("train", "gradcam/attribution") in logs.cnnviz_tags()


def test_the_feature_maps_first_drawing_times_a_compiled_pass_for_estimates(tmp_path):
    """The feature maps' first drawing of a model times a second, compiled pass at once (on
    PyTorch, which compiles nothing, its second drawing's pass): from then on the budget's
    ModelTiming knows the compiled speed per image, which the estimates of Grad-CAM and
    activation maximization use."""
    probes, _ = data(n=4, seed=1)
    viz = CNNViz(str(tmp_path), probe_images=probes, budget=1.0, attribution_freq=0, actmax_freq=0)
    eager = backend.name() == "torch"
    for _ in range(2):  # each model is timed afresh
        model = small_cnn()
        fit(model, [viz], epochs=1)
        timing = viz.time_budget.timing
        assert viz.time_budget.timed(model)
        assert (timing.compiled_per_image is None) == eager
    fit(model, [viz], epochs=2)
    per_image = viz.time_budget.timing.compiled_per_image
    assert per_image is not None and 0 < per_image < 1.0


def test_on_tensorflow_a_one_image_pass_splits_the_compiled_pass_before_the_first_epoch(
    tmp_path, monkeypatch
):
    """Where the feature maps' pass is traced for any batch (TensorFlow), one image's pass is
    timed with the probe batch's, so estimates of larger batches do not carry the call's fixed
    part per image; elsewhere no second trace is paid for it."""
    seen = []
    observe = budget_lib.ModelTiming.observe_compiled

    def spy(self, images, seconds, *, one=None):
        seen.append((images, one))
        return observe(self, images, seconds, one=one)

    monkeypatch.setattr(budget_lib.ModelTiming, "observe_compiled", spy)
    probes, _ = data(n=4, seed=1)
    viz = CNNViz(str(tmp_path), probe_images=probes, budget=1.0, attribution_freq=0, actmax_freq=0)
    fit(small_cnn(), [viz], epochs=1)
    if backend.name() == "torch":
        assert seen == []  # nothing compiles: the eager speed is the speed
    else:
        images, one = seen[0]
        assert images == 4
        assert (one is not None) == (backend.name() == "tensorflow")
        assert one is None or one > 0


@pytest.mark.timing
def test_default_budget_keeps_own_time_within_five_percent(tmp_path, read_logdir):
    """CNNViz defaults: own time within 5% of training, plus what is left of the floor at ~9 s
    of training (+ one drawing), weights every epoch."""
    probes, labels = data(n=4, seed=1)
    viz = CNNViz(str(tmp_path), probe_images=probes, labels=labels)
    fit(small_cnn(), [viz, SlowTraining(0.75)], epochs=6)  # 1.5 s per epoch
    budget = viz.time_budget
    assert budget.fraction == 0.05 and budget.train_seconds > 9
    assert budget.floor == budget_lib.DEFAULT_FLOOR_SECONDS
    allowed = 0.05 * budget.train_seconds + budget.allowance()
    assert budget.own_seconds <= allowed + budget.largest_drawing()
    logs = read_logdir(tmp_path)
    assert logs.steps("train", "conv_a/weights") == [0, 1, 2, 3, 4, 5]
    record = plans(logs)
    assert sorted(record) == [0, 1, 2, 3, 4, 5]
    for step, index in record.items():
        assert "conv_a/weights" in index["drawn"]
        assert index["budget"] == 0.05
        # Every costly tag is either drawn or skipped with a reason at every epoch.
        due = {"conv_a/feature_maps", "conv_b/feature_maps", "gradcam/attribution"}
        assert due <= set(index["drawn"]) | set(index["skipped"]), step


@pytest.mark.timing
def test_costly_kinds_take_turns_and_each_is_drawn_when_the_budget_allows(tmp_path, read_logdir):
    """budget=0.2 on a 9 s run: feature maps of both layers and Grad-CAM each drawn, in turns."""
    probes, labels = data(n=4, seed=1)
    viz = CNNViz(str(tmp_path), probe_images=probes, labels=labels, actmax_freq=0, budget=0.2)
    fit(small_cnn(), [viz, SlowTraining(0.75)], epochs=6)
    budget = viz.time_budget
    assert budget.own_seconds <= 0.2 * budget.train_seconds + budget.largest_drawing()
    logs = read_logdir(tmp_path)
    for tag in ("conv_a/feature_maps", "conv_b/feature_maps", "gradcam/attribution"):
        assert logs.steps("train", tag), f"{tag} was never drawn"
    last = plans(logs)[5]
    assert not [reason for reason in last["skipped"].values() if reason.startswith("left out")]


def test_a_run_too_short_for_a_kind_keeps_cheap_kinds_and_says_why(tmp_path, read_logdir, caplog):
    """Two quick epochs: weights at both, actmax left out once in the log and in the plan."""
    probes, _ = data(n=2, seed=1)
    viz = CNNViz(str(tmp_path), probe_images=probes, feature_maps_freq=0, attribution_freq=0)
    viz.time_budget.floor = 0.0  # without the floor, which would afford the run every kind
    with caplog.at_level("WARNING", logger="tb_cnnviz"):
        fit(small_cnn(), [viz], epochs=2)
    logs = read_logdir(tmp_path)
    assert logs.steps("train", "conv_a/weights") == [0, 1]
    assert ("train", "conv_a/actmax") not in logs.cnnviz_tags()
    messages = [r.getMessage() for r in caplog.records if "conv_a/actmax" in r.getMessage()]
    assert len(messages) == 1  # once, though the kind was due at both epochs
    assert "left out" in messages[0] and "budget=" in messages[0] and "budget=None" in messages[0]
    last = plans(logs)[1]
    assert last["skipped"]["conv_a/actmax"].startswith("left out")


def test_the_last_epoch_plans_again_once_a_kinds_first_drawing_was_measured(tmp_path, caplog):
    """Last epoch: a second layer left out on a cautious estimate (0.8 s) is drawn once the
    first layer's real cost (0.05 s) is known, and the plan record says it was drawn."""
    import time

    from tb_cnnviz.budget import Drawing, TimeBudget
    from tb_cnnviz.callbacks import base as callback_base

    budget = TimeBudget(1.0, floor=0.0)
    budget.start_fit(1, now=0.0)
    budget.tick(now=1.0)  # one second of training: a one-second budget
    budget.end_epoch()
    drawn = []

    def drawer(tag):
        def draw():
            time.sleep(0.05)
            drawn.append(tag)

        return draw

    drawings = [
        Drawing(f"l{i}/actmax", "actmax", drawer(f"l{i}/actmax"), estimate=0.8, order=i)
        for i in range(2)
    ]

    class Source(callback_base.VizCallback):
        def __init__(self, log_dir):
            super().__init__(log_dir)
            self._selected = [("l0", None)]  # as `_select` would: a layer to draw

        def _drawings(self, step):
            return drawings

    source = Source(str(tmp_path))
    run = callback_base.RunWriter(str(tmp_path / "train"))
    try:
        with budget.own(), caplog.at_level("WARNING", logger="tb_cnnviz"):
            out = callback_base.log_epoch("cnnviz", [source], budget, run, 0, final=True)
        run.flush()
    finally:
        run.close()
    assert drawn == ["l0/actmax", "l1/actmax"]
    assert out["drawn"] == ["l0/actmax", "l1/actmax"] and not out["skipped"]
    assert not [r for r in caplog.records if "not drawn" in r.getMessage()]


def test_the_drawing_after_a_first_grad_cam_is_expected_without_its_tracing(tmp_path):
    """After one Grad-CAM drawing, the next is expected to cost the first less what a later one
    does not pay again (tracing, finding the layer), never more than the first."""
    from tb_cnnviz.budget import Drawing

    probes, labels = data(n=4, seed=1)
    viz = Attribution(str(tmp_path), probe_images=probes, labels=labels, budget=None)
    fit(small_cnn(), [viz], epochs=1)
    budget = viz.time_budget
    first = budget.largest_drawing()  # the only drawing: its first cost
    expected = budget.estimate(Drawing("gradcam/attribution", "attribution", lambda: None))
    assert 0 < expected <= first
    assert first - expected <= budget.profile.one_time("attribution") + 1e-9
    # The layer of a Sequential model is found before the first epoch, from its graph, so on
    # PyTorch, which traces nothing, the first drawing pays nothing once.
    if keras.backend.backend() != "torch":
        assert expected < first


@pytest.mark.parametrize("value", [0, -0.1, 1.5, "5%", True, float("nan")])
def test_bad_budget_raises_a_value_error_naming_it(tmp_path, value):
    """budget outside (0, 1] or not a number: ValueError naming it, at construction."""
    for make in (
        lambda: CNNViz(str(tmp_path), budget=value),
        lambda: FilterWeights(str(tmp_path), budget=value),
        lambda: ActivationMaximization(str(tmp_path), budget=value),
    ):
        with pytest.raises(ValueError, match=re.escape(f"budget={value!r}")):
            make()


# -- No retracing ------------------------------------------------------------------------------

traced_backends = pytest.mark.skipif(
    keras.backend.backend() == "torch", reason="PyTorch runs eagerly: nothing traces"
)


@traced_backends
def test_a_second_fit_and_new_epochs_never_retrace(tmp_path):
    """Compiled actmax and attribution functions trace once; more epochs and fits reuse them."""
    from tb_cnnviz import attribution

    probes, labels = data(n=3, seed=1)
    model = small_cnn()
    viz = CNNViz(str(tmp_path), probe_images=probes, labels=labels, budget=None, actmax_steps=2)
    fit(model, [viz], epochs=2)
    actmax_cb = next(c for c in viz.callbacks if isinstance(c, ActivationMaximization))
    traced = {path: r.tracing_count for path, r in actmax_cb.renderers.items()}
    cams = attribution.tracing_count(model)
    assert set(traced) == {"conv_a", "conv_b"} and all(n == 2 for n in traced.values())
    assert cams == 1
    fit(model, [viz], epochs=3)
    assert {p: r.tracing_count for p, r in actmax_cb.renderers.items()} == traced
    assert attribution.tracing_count(model) == cams


@traced_backends
def test_feature_maps_of_every_layer_come_from_one_pass_traced_once(tmp_path):
    """One compiled extractor for all layers: one trace over epochs and fits, none per layer."""
    from tb_cnnviz import layers as layer_lib

    probes, _ = data(n=3, seed=1)
    model = small_cnn()
    maps = FeatureMaps(str(tmp_path), probe_images=probes, budget=None)
    fit(model, [maps], epochs=2)
    fit(model, [maps], epochs=2)
    chosen = [layer for _, layer in layer_lib.conv_layers(model)]
    assert len(chosen) == 2
    assert layer_lib.extractor(model, chosen).tracing_count == 1


@traced_backends
def test_a_second_model_traces_its_own_functions_without_a_retracing_warning(tmp_path):
    """New models (the demo's second run) trace once per function, and TF does not warn."""
    import logging

    from tb_cnnviz import attribution

    probes, labels = data(n=2, seed=1)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(handler)
    try:
        for run in range(4):
            model = small_cnn()
            viz = CNNViz(
                str(tmp_path / str(run)),
                probes,
                labels=labels,
                actmax_steps=2,
                budget=None,
            )
            fit(model, [viz], epochs=2)
            [actmax_cb] = [c for c in viz.callbacks if isinstance(c, ActivationMaximization)]
            assert all(r.tracing_count == 2 for r in actmax_cb.renderers.values())
            assert attribution.tracing_count(model) == 1
    finally:
        tf_logger.removeHandler(handler)
    ours = [r.getMessage() for r in records if "retracing" in r.getMessage()]
    assert [m for m in ours if "tb_cnnviz" in m or "_build_" in m] == []


@pytest.mark.tensorflow
def test_summary_functions_inside_tf_function_raise_a_clear_error(tmp_path):
    """Inside tf.function (graph mode) the summary functions say they run eagerly, and why."""
    import tensorflow as tf

    from tb_cnnviz import summary

    writer = tf.summary.create_file_writer(str(tmp_path / "train"))

    @tf.function
    def step(kernel):
        with writer.as_default(step=0):
            summary.filter_weights("c", kernel)
        return kernel

    with pytest.raises(
        RuntimeError, match="run eagerly.*tf.function.*outside the compiled function"
    ):
        step(tf.zeros((3, 3, 3, 4)))


def test_cnnviz_takes_an_image_input_beside_a_vector_input(tmp_path, read_logdir):
    """Probe images for an image and a vector input: one rule accepts them for every kind."""
    image, vector = keras.Input((12, 12, 3), name="image"), keras.Input((5,), name="extra")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(image))
    out = keras.layers.Dense(2)(keras.layers.Concatenate()([x, keras.layers.Dense(3)(vector)]))
    model = keras.Model([image, vector], out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x_img, x_vec = rng.random((8, 12, 12, 3), "float32"), rng.random((8, 5), "float32")
    viz = CNNViz(str(tmp_path), probe_images=[x_img[:2], x_vec[:2]], budget=None)
    model.fit([x_img, x_vec], rng.integers(0, 2, 8), epochs=1, verbose=0, callbacks=[viz])
    tags = {tag for _, tag in read_logdir(tmp_path).cnnviz_tags()}
    assert {"conv/weights", "conv/feature_maps", "gradcam/attribution"} <= tags
    with pytest.raises(ValueError, match=r"images \[n_images, \*spatial, channels\] for at least"):
        CNNViz(str(tmp_path), probe_images=[x_vec[:2], x_vec[:2]])


def test_keras_asynchronous_batch_end_dispatch_stays_on_with_the_callbacks(tmp_path, read_logdir):
    """fit() with CNNViz and a per-kind callback dispatches batch-end hooks asynchronously
    wherever it does without them (JAX and PyTorch; TensorFlow too on Keras before 3.7)."""
    model = small_cnn()
    probes, _ = data(n=2, seed=1)
    plain = keras.callbacks.CallbackList([], model=model)
    callbacks = keras.callbacks.CallbackList(
        [
            CNNViz(str(tmp_path / "a"), probe_images=probes, budget=None),
            FeatureMaps(str(tmp_path / "b"), probe_images=probes, budget=None),
        ],
        add_history=True,
        model=model,
    )
    fit(model, callbacks, epochs=1)
    assert callbacks._async_train == plain._async_train
    if not on_tensorflow():
        assert callbacks._async_train
    assert ("train", "conv_b/feature_maps") in read_logdir(tmp_path / "a").cnnviz_tags()
    assert ("train", "conv_b/feature_maps") in read_logdir(tmp_path / "b").cnnviz_tags()


def test_a_model_built_by_fit_is_checked_before_its_first_epoch_ends(tmp_path, read_logdir):
    """A Sequential without an Input, one batch per epoch: its checks run, every kind draws."""
    model = small_cnn(build=False)
    probes, _ = data(n=2, seed=1)
    x, y = data(n=8)
    viz = CNNViz(str(tmp_path), probe_images=probes, budget=None)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[viz])
    tags = read_logdir(tmp_path).cnnviz_tags()
    assert {("train", "conv_a/weights"), ("train", "conv_b/feature_maps")} <= tags
    assert ("train", "gradcam/attribution") in tags
    with pytest.raises(ValueError, match=r"probe_images (do not fit|must have shape)"):
        bad = CNNViz(str(tmp_path / "bad"), probe_images=np.zeros((2, 5, 5, 3)), budget=None)
        small_cnn(build=False).fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[bad])


@pytest.mark.timing
def test_a_tutorial_sized_run_draws_every_kind_within_the_floor(tmp_path, read_logdir):
    """Two conv layers, epochs of 64 images: every kind at least once, within the floor."""
    x, y = data(n=64)
    probes, labels = data(n=4, seed=1)
    viz = CNNViz(str(tmp_path), probe_images=probes, labels=labels)
    small_cnn().fit(x, y, epochs=5, batch_size=32, verbose=0, callbacks=[viz])
    budget = viz.time_budget
    assert budget.own_seconds <= budget.floor + budget.largest_drawing()
    logs = read_logdir(tmp_path)
    tags = logs.cnnviz_tags()
    kinds = ("weights", "feature_maps", "actmax")
    wanted = [f"{layer}/{kind}" for kind in kinds for layer in ("conv_a", "conv_b")]
    wanted.append("gradcam/attribution")
    missing = [tag for tag in wanted if ("train", tag) not in tags]
    if missing:
        # Only the time budget may leave a tag out, and only where this machine is slower now
        # than the floor is sized for (a shared CI machine running other suites beside).
        last = plans(logs)[max(plans(logs))]["skipped"]
        reasons = {tag: last.get(tag, "no reason recorded") for tag in missing}
        budgeted = ("left out: one drawing costs", "deferred by the time budget")
        assert all(r.startswith(budgeted) for r in reasons.values()), reasons
        pytest.skip(f"this machine is too slow now for the floor: {reasons}")


def event_order(run_dir) -> list[tuple[int, str]]:
    """`(step, tag)` of every summary value of a run's event files, in file order."""
    from tensorboard.backend.event_processing import event_file_loader

    order = []
    for name in sorted(os.listdir(run_dir)):
        if "tfevents" in name:
            path = os.path.join(run_dir, name)
            for event in event_file_loader.EventFileLoader(path).Load():
                order += [(event.step, v.tag) for v in event.summary.value]
    return order


def test_background_writes_keep_steps_in_order_and_plans_carry_costs(tmp_path, read_logdir):
    """Encoded in the background, each step's pictures precede its plan record, steps ascend,
    and the plan record gives every drawn tag's seconds and bytes."""
    probes, labels = data(n=3, seed=1)
    viz = CNNViz(str(tmp_path), probe_images=probes, labels=labels, budget=None)
    fit(small_cnn(), [viz], epochs=3)
    order = event_order(tmp_path / "train")
    steps = [step for step, _ in order]
    assert steps == sorted(steps) and set(steps) == {0, 1, 2}
    for step in (0, 1, 2):
        tags = [tag for s, tag in order if s == step]
        assert tags[-1] == "cnnviz/plan" and tags.count("cnnviz/plan") == 1
        assert {"conv_a/weights", "conv_b/feature_maps", "gradcam/attribution"} <= set(tags)
    for step, record in plans(read_logdir(tmp_path)).items():
        assert set(record["costs"]) == set(record["drawn"]), step
        for tag, cost in record["costs"].items():
            assert cost["seconds"] > 0 and cost["bytes"] > 0, (step, tag)


def test_the_feature_maps_pass_is_the_kinds_cost_not_the_first_drawn_layers(tmp_path, read_logdir):
    """Three 64-filter convs before a tiny one: the pass of the probes costs far more than the
    tiny layer's maps, and the plan record gives the layer its own cost and the pass apart."""
    shape = (96, 96, 3)
    layers = [keras.Input(shape)]
    layers += [keras.layers.Conv2D(64, 3, padding="same", name=f"wide{i}") for i in range(3)]
    layers += [keras.layers.Conv2D(2, 3, strides=8, name="tiny")]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
    model = keras.Sequential(layers)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probes, _ = data(n=8, shape=shape, seed=1)
    maps = FeatureMaps(str(tmp_path), probes, layers=["tiny"], budget=1.0)
    fit(model, [maps], epochs=3, shape=shape)
    budget = maps.time_budget
    if backend.has_accelerator():
        pytest.skip("on an accelerator both take a fraction of a millisecond: nothing to tell")
    records = plans(read_logdir(tmp_path), owner="FeatureMaps")
    passes = [r for r in records.values() if "tiny/feature_maps" in r["costs"]]
    assert len(passes) == 3
    each_pass = budget.pass_seconds("feature_maps") / len(passes)
    own = [r["costs"]["tiny/feature_maps"]["seconds"] for r in passes]
    assert max(own) < 0.5 * each_pass, (own, each_pass)
    # The records give the pass on its own, so a step's costs and passes add up to its time.
    recorded = [r.get("passes", {}).get("feature_maps", {}).get("seconds", 0.0) for r in passes]
    assert sum(recorded) == pytest.approx(budget.pass_seconds("feature_maps"), abs=2e-4)
    assert sum(recorded) > 0


@pytest.mark.timing
def test_own_time_is_what_the_profile_shows_waits_for_the_worker_counted_once(tmp_path):
    """Sixteen conv layers fill the background worker's queue: on a machine without an
    accelerator the training thread's waits for it are not counted on top of the jobs' time."""
    if backend.has_accelerator():
        pytest.skip("with an accelerator the wait itself counts")
    layers = [keras.Input((16, 16, 3))]
    layers += [keras.layers.Conv2D(32, 3, padding="same", name=f"c{i}") for i in range(16)]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
    model = keras.Sequential(layers)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    viz = CNNViz(str(tmp_path), probe_images=None, budget=None, actmax_freq=0)
    fit(model, [viz], epochs=3, shape=(16, 16, 3))
    budget = viz.time_budget
    # What the profile does not see: taking the writer, the layer order, the log's last words.
    assert abs(budget.own_seconds - budget.profile.total()) <= 0.05 + 0.05 * budget.own_seconds


def test_a_tensorflow_half_imported_by_another_thread_is_taken_as_not_in_use(
    tmp_path, monkeypatch, read_logdir
):
    """Keras on JAX imports TF on the training thread while the writer runs: no AttributeError."""
    import sys
    import types

    from tb_cnnviz import events, summary, writers

    # What another thread's `import tensorflow` leaves in sys.modules before it finishes.
    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    writers.check_eager()
    assert writers.current() is None
    writer = events.FileWriter(str(tmp_path / "train"))
    with writer.as_default(step=0):
        summary.filter_weights("conv", np.ones((3, 3, 1, 2), np.float32), step=0)
    writer.close()
    monkeypatch.undo()
    assert read_logdir(tmp_path).steps("train", "conv/weights") == [0]


def test_writers_begun_in_one_second_past_the_tenth_are_read_in_the_order_they_were_begun(
    tmp_path, monkeypatch, read_logdir
):
    """Files of the 9th and 10th writer of a process, begun in one second, keep their steps."""
    import itertools

    from tb_cnnviz import events, summary

    monkeypatch.setattr(events, "_file_ids", itertools.count(7))  # the count crosses 9 -> 10
    second = int(events.time.time())
    monkeypatch.setattr(events.time, "time", lambda: float(second))  # all begun in one second
    paths = []
    for step in range(5):  # one short fit() after another: a writer each, within a second
        writer = events.FileWriter(str(tmp_path / "train"))
        with writer.as_default(step=step):
            summary.filter_weights("conv", np.full((3, 3, 1, 2), step, np.float32), step=step)
        writer.close()
        paths.append(os.path.basename(writer.path))
    monkeypatch.undo()  # the clock runs again for TensorBoard's reader
    assert sorted(paths) == paths
    assert read_logdir(tmp_path).steps("train", "conv/weights") == [0, 1, 2, 3, 4]


def test_a_layer_too_costly_for_its_part_of_the_budget_draws_fewer_filters_and_keeps_them(
    tmp_path, read_logdir, monkeypatch
):
    """Activation maximization of a layer whose drawing would take more than its part of the
    run's budget draws the filters `filters_within` allows, evenly spaced, the same ones at
    every step (warm starts continue them) and says so; a layer within it keeps all of its."""
    from tb_cnnviz.callbacks import actmax as actmax_module

    sized = []

    def within(full, once, steps, part):  # as if every layer of more than 16 were over its part
        sized.append((full, part))
        return full if full <= 16 else actmax_module.MIN_FILTERS

    monkeypatch.setattr(actmax_module, "filters_within", within)
    model, *_ = zoo.wide_layer()  # 16 filters, then 2048 (CNNViz draws up to 64 of them)
    viz = CNNViz(
        str(tmp_path), None, feature_maps_freq=0, attribution_freq=0, actmax_steps=4, budget=1.0
    )
    viz.time_budget.floor = 600.0  # whatever this machine's speed, the run affords every layer
    fit(model, [viz], epochs=3, shape=(8, 8, 3))
    logs = read_logdir(tmp_path)
    steps = logs.steps("train", "wide/actmax")
    assert steps, "the wide layer was not drawn at all"
    drawn = [logs.datum("train", "wide/actmax", s)[0] for s in steps]
    expected = tiles.sample_filters(2048, actmax_module.MIN_FILTERS)
    assert all(index["filters"] == expected for index in drawn), [i["filters"] for i in drawn]
    assert all(index["total_filters"] == 2048 for index in drawn)
    about = logs.mux.SummaryMetadata("train", "wide/actmax").summary_description
    assert f"{actmax_module.MIN_FILTERS} of the 2048 filters" in about and "budget" in about
    narrow = [
        logs.datum("train", "narrow/actmax", s)[0] for s in logs.steps("train", "narrow/actmax")
    ]
    assert narrow and all(index["filters"] == list(range(16)) for index in narrow)
    # Sized against the run's budget at each epoch until its first drawing, then kept.
    wide = [(full, part) for full, part in sized if full == 64]
    assert wide and all(part > 0 for _, part in wide)
    assert len(wide) == steps[0] + 1, (sized, steps)


def test_filters_within_keeps_every_filter_that_fits_and_sizes_the_steps_to_the_room():
    """The filter count a layer's drawing keeps: all that fit its part; else the steps get
    what is left of the part after the tracing (at least as long as the tracing), never fewer
    than `MIN_FILTERS` filters nor more than there are."""
    from tb_cnnviz.callbacks.actmax import MIN_FILTERS, filters_within

    assert filters_within(64, once=0.1, steps=0.3, part=0.5) == 64
    assert filters_within(64, once=0.1, steps=0.8, part=0.5) == 32  # 0.4 s of room of 0.8
    assert filters_within(64, once=0.4, steps=0.8, part=0.5) == 32  # room: the tracing's 0.4
    assert filters_within(64, once=0.01, steps=100.0, part=0.5) == MIN_FILTERS
    assert filters_within(4, once=0.01, steps=100.0, part=0.5) == 4  # never more than there are
