"""Any head: softmax, binary and multi-label sigmoid, regression and several outputs are read
right by attribution and by the Attribution callback, on whichever backend runs the suite."""

from __future__ import annotations

import re
import warnings

import keras
import numpy as np
import pytest

from tb_cnnviz import attribution, heads
from tb_cnnviz.callbacks import Attribution

SHAPE = (12, 12, 3)


def conv_model(units, activation=None, loss=None, seed=0):
    """A small CNN ending in `Dense(units, activation)`, compiled with `loss` when given."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(units, activation=activation, name="head"),
        ]
    )
    if loss is not None:
        model.compile("adam", loss)
    return model


def images(n=4, seed=0):
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


@pytest.mark.parametrize(
    ("units", "activation", "loss", "kind"),
    [
        (3, "softmax", None, "softmax"),
        (1, "sigmoid", None, "binary"),
        (4, "sigmoid", None, "multilabel"),
        (3, None, keras.losses.SparseCategoricalCrossentropy(from_logits=True), "softmax"),
        (1, None, keras.losses.BinaryCrossentropy(from_logits=True), "binary"),
        (4, None, "binary_crossentropy", "multilabel"),
        (2, None, "mse", "regression"),
        (1, None, keras.losses.Huber(), "regression"),
        (1, None, None, "regression"),
        (3, None, None, "softmax"),
    ],
)
def test_final_activation_then_compiled_loss_decide_the_kind(units, activation, loss, kind):
    """A final softmax or sigmoid decides; a linear output is what its loss trains."""
    head = heads.read(conv_model(units, activation, loss))
    assert (head.kind, head.name, head.units) == (kind, "head", units)


def test_binary_head_scores_class_one_by_its_logit_and_class_zero_by_minus_the_logit():
    """Target 1 scores the logit, target 0 minus the logit; -1 picks the predicted class."""
    model = conv_model(1, "sigmoid")
    x = images()
    with heads.logits(model):
        z = keras.ops.convert_to_numpy(model(x))[:, 0]
    for target, expected in [(1, z), (0, -z), (None, np.abs(z))]:
        checked = attribution.check_target(model, x, target)
        with heads.logits(model):
            got = keras.ops.convert_to_numpy(heads.score(checked, model(x)))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_binary_predictions_are_the_side_of_one_half_not_class_zero_at_full_confidence():
    """A sigmoid unit predicts 1 above 0.5, with the probability of the class it predicts."""
    model = conv_model(1, "sigmoid", seed=3)
    model.get_layer("head").bias.assign([0.05])  # probabilities on both sides of 0.5
    x = images(8, seed=1)
    p = keras.ops.convert_to_numpy(model(x))[:, 0]
    classes, confidence = attribution.predicted_classes(model, x)
    assert classes.tolist() == (p > 0.5).astype(int).tolist()
    np.testing.assert_allclose(confidence, np.where(p > 0.5, p, 1 - p), rtol=1e-5)
    assert attribution.num_classes(model, x) == 2


def test_multilabel_predictions_are_the_most_probable_label_with_its_own_probability():
    """Several sigmoid units: the top label, and that label's probability (not a softmax)."""
    model = conv_model(4, "sigmoid")
    x = images()
    p = keras.ops.convert_to_numpy(model(x))
    classes, confidence = attribution.predicted_classes(model, x)
    assert classes.tolist() == p.argmax(-1).tolist()
    np.testing.assert_allclose(confidence, p.max(-1), rtol=1e-5)


def test_regression_maps_explain_the_value_and_several_values_need_a_target():
    """A one-value regression gets maps of its value; with several values a target is needed."""
    one = conv_model(1, loss="mse")
    maps = attribution.gradcam(one, images())
    assert maps.shape == (4, 12, 12) and maps.max() == pytest.approx(1.0)
    several = conv_model(3, loss="mse")
    message = (
        "target: the output 'head' (regression with 3 values) has several values; say which "
        "one to explain with target=<index in 0..2>"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        attribution.gradcam(several, images())
    assert attribution.gradcam(several, images(), target=2).shape == (4, 12, 12)
    with pytest.raises(ValueError, match="is a regression: it has no predicted class"):
        attribution.predicted_classes(several, images())


def two_output_model():
    keras.utils.set_random_seed(5)
    inp = keras.Input(SHAPE)
    pooled = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inp)
    )
    kind = keras.layers.Dense(3, activation="softmax", name="kind")(pooled)
    age = keras.layers.Dense(1, name="age")(pooled)
    model = keras.Model(inp, {"kind": kind, "age": age})
    model.compile("adam", {"kind": "sparse_categorical_crossentropy", "age": "mse"})
    return model


def test_an_output_name_a_pair_and_a_callable_pick_the_same_score():
    """("kind", 2) and a callable reading class 2's logit give one map; "age" reads the value."""
    model, x = two_output_model(), images()
    assert heads.read(model, "age").kind == "regression"
    assert heads.read(model, "kind").kind == "softmax"
    by_pair = attribution.gradcam(model, x, target=("kind", 2))

    def logit_of_class_two(outputs):
        return outputs["kind"][:, 2]

    np.testing.assert_allclose(
        attribution.gradcam(model, x, target=logit_of_class_two), by_pair, atol=1e-5
    )
    by_name = attribution.gradcam(model, x, target="age")
    np.testing.assert_allclose(
        by_name, attribution.gradcam(model, x, target=lambda o: o["age"][:, 0]), atol=1e-5
    )
    with pytest.raises(ValueError, match=re.escape("Outputs: ['age', 'kind']")):
        attribution.gradcam(model, x, target="colour")


class EpochCounter(keras.callbacks.Callback):
    """Counts the epochs that ended."""

    def __init__(self):
        super().__init__()
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1


def test_binary_model_logs_labels_one_and_the_right_captions(tmp_path, read_logdir):
    """labels=1 is a class of a sigmoid unit; predicted, confidence and correct follow p > 0.5."""
    model = conv_model(1, "sigmoid", "binary_crossentropy", seed=3)
    model.get_layer("head").bias.assign([0.05])
    x, labels = images(6, seed=1), np.array([1, 0, 1, 1, 0, 0])
    callback = Attribution(tmp_path, x, labels=labels, class_names=["cat", "dog"], budget=None)
    model.fit(x, labels, epochs=1, verbose=0, callbacks=[callback])
    p = keras.ops.convert_to_numpy(model(x))[:, 0]
    index, _ = read_logdir(tmp_path).datum("train", "gradcam/attribution", 0)
    predicted = (p > 0.5).astype(int)
    assert index["stats"]["predicted"] == predicted.tolist()
    np.testing.assert_allclose(index["stats"]["confidence"], np.where(p > 0.5, p, 1 - p), 1e-5)
    assert index["stats"]["true"] == labels.tolist()
    assert index["stats"]["correct"] == (predicted == labels).tolist()
    assert 0 < len(set(predicted)) and index["stats"]["confidence"] != [1.0] * 6


def test_multilabel_model_logs_the_top_label_and_whether_it_is_a_true_one(tmp_path, read_logdir):
    """Multi-hot labels: correct when the top label is a true one, true otherwise its first."""
    model = conv_model(4, "sigmoid", "binary_crossentropy")
    x = images(4)
    p = keras.ops.convert_to_numpy(model(x))
    top = p.argmax(-1)
    labels = np.zeros((4, 4), int)
    labels[np.arange(4), top] = [1, 1, 0, 0]  # the top label is right for the first two
    labels[2:, (top[2:] + 1) % 4] = 1
    callback = Attribution(tmp_path, x, labels=labels, budget=None)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(0)
    callback.on_train_end()
    index, _ = read_logdir(tmp_path).datum("train", "gradcam/attribution", 0)
    assert index["stats"]["predicted"] == top.tolist()
    np.testing.assert_allclose(index["stats"]["confidence"], p.max(-1), rtol=1e-5)
    assert index["stats"]["correct"] == [True, True, False, False]
    assert index["stats"]["true"] == [*top[:2].tolist(), *((top[2:] + 1) % 4).tolist()]


def test_a_regression_is_explained_through_its_value_captioned_with_true_values(
    tmp_path, read_logdir
):
    """A one-value regression logs Grad-CAM with each probe's value and true value, no classes."""
    model = conv_model(1, loss="mse")
    x, truth = images(), np.array([0.5, 1.0, -2.0, 3.25])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nothing fails, nothing is skipped
        model.fit(
            x,
            truth,
            epochs=2,
            verbose=0,
            callbacks=[Attribution(tmp_path, x, labels=truth, budget=None)],
        )
    logs = read_logdir(tmp_path)
    assert logs.steps("train", "gradcam/attribution") == [0, 1]
    index, _ = logs.datum("train", "gradcam/attribution", 1)
    value = keras.ops.convert_to_numpy(model(x))[:, 0]
    np.testing.assert_allclose(index["stats"]["value"], value, rtol=1e-4, atol=1e-5)
    assert index["stats"]["true_value"] == truth.tolist()
    assert index["stats"]["predicted"] == [None] * 4 and index["stats"]["correct"] == [None] * 4
    mae = np.abs(np.asarray(index["stats"]["value"]) - truth).mean()
    assert index["layer_stats"]["mean_absolute_error"] == pytest.approx(mae, rel=1e-3)
    assert index["layer_stats"]["mean_confidence"] is None


def test_a_regression_of_several_values_without_a_target_warns_once_and_trains(
    tmp_path, read_logdir
):
    """Several regression values and no target: one warning naming the output, training goes on."""
    model = conv_model(3, loss="mse")
    x, counter = images(), EpochCounter()
    with pytest.warns(
        RuntimeWarning, match="the output 'head' \\(regression with 3 values\\) without a target"
    ):
        model.fit(
            x,
            np.zeros((4, 3)),
            epochs=2,
            verbose=0,
            callbacks=[Attribution(tmp_path, x, budget=None), counter],
        )
    assert counter.epochs == 2
    tags = {tag for _, tag in read_logdir(tmp_path).cnnviz_tags()}
    assert not any(t.endswith("/attribution") for t in tags)


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        (
            lambda: conv_model(1, "sigmoid", "binary_crossentropy"),
            {"labels": [0, 1, 2, 1]},
            "labels must be classes of the output 'head' (binary: class 1 and its complement, "
            "class 0), in 0..1. Received: labels=[0, 1, 2, 1]",
        ),
        (
            lambda: conv_model(3, "softmax", "sparse_categorical_crossentropy"),
            {"target": 3},
            "target 3 is not a class of the output 'head' (softmax over 3 classes): it takes "
            "class indices in 0..2. Received: target=3",
        ),
        (
            two_output_model,
            {"target": "colour"},
            "target: 'colour' is not an output of the model",
        ),
        (
            lambda: conv_model(3, loss="mse"),
            {"target": 3},
            "target 3 is not a value of the output 'head' (regression with 3 values): it takes "
            "value indices in 0..2. Received: target=3",
        ),
        (
            lambda: conv_model(4, "sigmoid", "binary_crossentropy"),
            {"labels": np.zeros((4, 4))},
            "labels of the multi-label output 'head' (multi-label with 4 sigmoid labels) must "
            "be multi-hot rows of 0 and 1 with at least one true label per probe",
        ),
    ],
    ids=["binary-label-2", "class-out-of-range", "unknown-output", "regression-3", "no-label"],
)
def test_bad_target_or_labels_fail_before_the_first_epoch_naming_the_output(
    tmp_path, model, options, message
):
    """Unsupported targets and labels raise a ValueError before any epoch ends."""
    model, x, counter = model(), images(), EpochCounter()
    if len(model.outputs) > 1:
        y = {"kind": np.zeros(4), "age": np.zeros((4, 1))}
    elif model.loss == "sparse_categorical_crossentropy":
        y = np.zeros(4)
    else:
        y = np.zeros((4, model.outputs[0].shape[-1]))
    with pytest.raises(ValueError, match=re.escape(message)):
        model.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[Attribution(tmp_path, x, budget=None, **options), counter],
        )
    assert counter.epochs == 0


def test_class_score_reads_softmax_multilabel_and_regression_units_directly():
    """Every head but binary scores a class (or value) by its own unit."""
    z = np.array([[1.0, -2.0, 3.0]], "float32")
    for kind in ("softmax", "multilabel", "regression"):
        head = heads.Head(kind, 0, "out", 3)
        got = keras.ops.convert_to_numpy(heads.class_score(head, z, 1))
        assert got.tolist() == [-2.0]
    predicted = heads.class_score(heads.Head("softmax", 0, "out", 3), z, -1)
    assert keras.ops.convert_to_numpy(predicted).tolist() == [3.0]


def test_one_label_for_every_probe_of_a_binary_model(tmp_path, read_logdir):
    """labels=1 on a binary model gives every probe the positive class."""
    model = conv_model(1, "sigmoid", "binary_crossentropy")
    x = images(3)
    model.fit(
        x,
        np.ones(3),
        epochs=1,
        verbose=0,
        callbacks=[Attribution(tmp_path, x, labels=1, budget=None)],
    )
    index, _ = read_logdir(tmp_path).datum("train", "gradcam/attribution", 0)
    assert index["stats"]["true"] == [1, 1, 1]
    assert index["slices"]["labels"] == ["image", "predicted", "true"]
