"""Snapshots of the model at logged steps, and `tb_cnnviz.probe` running them on new images."""

from __future__ import annotations

import json
import os
import warnings

import keras
import numpy as np
import pytest
from test_callbacks import data, fit, small_cnn

import tb_cnnviz
from tb_cnnviz import attribution, metadata, probe
from tb_cnnviz.callbacks import CNNViz, Snapshots


def snapshot_dir(log_dir) -> str:
    return os.path.join(str(log_dir), "train", metadata.SNAPSHOTS_DIR)


def weight_files(log_dir) -> list[str]:
    return sorted(n for n in os.listdir(snapshot_dir(log_dir)) if n.endswith(".weights.npz"))


def index_of(log_dir) -> dict:
    with open(os.path.join(snapshot_dir(log_dir), metadata.SNAPSHOTS_INDEX), "rb") as f:
        return metadata.parse_snapshot_index(f.read())


def restored(log_dir, step):
    """The model at `step`, rebuilt straight from the snapshot files (not through the probe)."""
    folder = snapshot_dir(log_dir)
    with open(os.path.join(folder, "model.json"), encoding="utf-8") as f:
        model = keras.models.model_from_json(f.read())
    path = os.path.join(folder, index_of(log_dir)["steps"][step]["weights"])
    if not path.endswith(".npz"):  # a ModelCheckpoint's file
        model.load_weights(path)
        return model
    with np.load(path) as arrays:
        model.set_weights([arrays[f"arr_{i}"] for i in range(len(arrays.files))])
    return model


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A 3-epoch fit of the small CNN with CNNViz's defaults: `(log_dir, probe images, viz)`."""
    log_dir = tmp_path_factory.mktemp("probe")
    probes, labels = data(n=4, seed=1)
    viz = CNNViz(str(log_dir), probes, labels=labels, class_names=["a", "b"])
    fit(small_cnn(), [viz], 3)
    return log_dir, probes, viz


@pytest.fixture(scope="module")
def logged(logged_run):
    """`(log_dir, probe images)` of `logged_run`."""
    return logged_run[:2]


def test_defaults_keep_the_first_and_latest_step_only(logged):
    """CNNViz's defaults leave the architecture, steps 0 and 2 and an index saying how to feed."""
    log_dir, probes = logged
    assert sorted(os.listdir(snapshot_dir(log_dir))) == [
        "index.json",
        "model.json",
        "step_000000.weights.npz",
        "step_000002.weights.npz",
    ]
    index = index_of(log_dir)
    assert sorted(index["steps"]) == [0, 2]
    assert index["input_shape"] == [12, 12, 3]
    assert 0 <= probes.min() < probes.max() <= 1
    assert index["value_range"] == [0.0, 1.0]  # CNNViz's value_range, not the probes' extremes
    assert index["class_names"] == ["a", "b"]
    assert index["backend"] == keras.backend.backend()
    assert index["keras_version"] == keras.version()
    sizes = [os.path.getsize(os.path.join(snapshot_dir(log_dir), n)) for n in weight_files(log_dir)]
    assert sum(sizes) <= 2 * max(sizes)
    assert all(index["steps"][s]["seconds"] >= 0 for s in (0, 2))


def test_snapshot_time_counts_as_the_callbacks_own(logged_run):
    """The snapshots' writing is profiled in CNNViz's budget, inside its own time."""
    budget = logged_run[2].time_budget
    spent = sum(budget.profile.table()["snapshots"].values())
    assert 0 < spent <= budget.own_seconds


@pytest.mark.parametrize(
    ("keep", "steps"), [("all", [0, 1, 2, 3]), (2, [0, 1, 3]), ("first_and_latest", [0, 3])]
)
def test_keep_policies_choose_the_steps(tmp_path, keep, steps):
    """'all', every 2 epochs (first and latest too) and the default keep exactly these steps."""
    fit(small_cnn(), [Snapshots(str(tmp_path), keep=keep)], epochs=4)
    assert sorted(index_of(tmp_path)["steps"]) == steps
    assert weight_files(tmp_path) == [f"step_{s:06d}.weights.npz" for s in steps]


@pytest.mark.parametrize(
    ("fraction", "seen"),
    # Under any budget the latest copy is replaced at most every LATEST_INTERVAL (60) seconds:
    # these epochs take milliseconds, so only the last one replaces it.
    [(None, [0, 1, 2, 3]), (1e-6, [0, 0, 0, 3]), (1.0, [0, 0, 0, 3])],
)
def test_a_spent_budget_defers_the_latest_snapshot_to_the_last_epoch(tmp_path, fraction, seen):
    """With no budget left, or within a minute of the last copy, the latest step waits; the
    first and the last epoch are kept."""
    from tb_cnnviz import budget as budget_lib

    snapshots = Snapshots(str(tmp_path))
    snapshots.use_budget(budget_lib.TimeBudget(fraction, floor=0.0))
    latest = []
    after = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: latest.append(max(index_of(tmp_path)["steps"]))
    )
    fit(small_cnn(), [snapshots, after], epochs=4)
    assert latest == seen
    assert sorted(index_of(tmp_path)["steps"]) == [0, 3]


def test_snapshots_none_writes_no_snapshot(tmp_path):
    """snapshots=None leaves no snapshot folder, and the probe says the run has none."""
    probes, _ = data(n=2, seed=1)
    fit(small_cnn(), [CNNViz(str(tmp_path), probes, snapshots=None, budget=None)], epochs=1)
    assert not os.path.exists(snapshot_dir(tmp_path))
    with pytest.raises(ValueError, match="has no model snapshots"):
        probe.probe(tmp_path, "train", probes[0])


@pytest.mark.parametrize(
    "value_range, low, high, expected",
    [
        ((0, 1), 0.01, 0.98, [0.0, 1.0]),
        ((0, 1), -0.7, 0.9, [-1.0, 1.0]),
        ((0, 1), 0.0, 200.0, [0.0, 255.0]),
        ((0, 1), -5.0, 300.0, [-5.0, 300.0]),
        ((-2, 2), -1.5, 1.5, [-2.0, 2.0]),
        ((0, 255), 0.2, 0.7, [0.0, 255.0]),
    ],
)
def test_recorded_range_is_the_given_one_or_the_smallest_common_that_holds_the_probes(
    tmp_path, value_range, low, high, expected
):
    """The index records `value_range`, else [0,1], [-1,1] or [0,255] holding the probes, else
    their min and max."""
    probes = np.linspace(low, high, 2 * 12 * 12 * 3, dtype=np.float32).reshape(2, 12, 12, 3)
    model = small_cnn()
    x, y = data(n=4, seed=2)
    snapshots = Snapshots(str(tmp_path), probe_images=probes, value_range=value_range)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[snapshots])
    assert index_of(tmp_path)["value_range"] == expected


def test_bad_snapshots_argument_names_the_choices():
    """A snapshots value that is no policy is a ValueError naming the choices and the value."""
    with pytest.raises(ValueError, match=r"'first_and_latest', 'all'.*Received: snapshots=0"):
        CNNViz("logs", snapshots=0)


def test_probe_equals_gradcam_and_layer_outputs_of_the_restored_model(logged):
    """At two steps the probe's heatmap and feature maps equal those computed directly."""
    log_dir, probes = logged
    results = {}
    for step in (0, 2):
        result = tb_cnnviz.probe(log_dir, "train", probes[0], step=step, layer="conv_a")
        model = restored(log_dir, step)
        x = result.image[None]
        direct = attribution.gradcam(model, x, target=result.target)[0]
        np.testing.assert_allclose(result.heatmap, direct, atol=1e-3)
        outputs = keras.Model(model.inputs, model.get_layer("conv_a").output)(x)
        expected = keras.ops.convert_to_numpy(outputs)[0]
        span = float(np.ptp(expected)) or 1.0
        assert np.abs(result.feature_maps - expected).max() <= span / 255
        np.testing.assert_allclose(result.filter_strength, expected.mean((0, 1)), atol=1e-5)
        results[step] = result
    assert results[2].steps == [0, 2] and results[2].layer == "conv_a"
    # The weights of the two steps differ, and so does what the probe returns.
    assert not np.allclose(results[0].feature_maps, results[2].feature_maps)


def test_probe_defaults_and_predictions(logged):
    """Latest step, last conv layer, and predictions as probabilities named by class_names."""
    log_dir, probes = logged
    result = probe.probe(log_dir, "train", probes[1])
    assert (result.step, result.layer, result.head) == (2, "conv_b", "softmax")
    assert result.feature_maps.shape == (8, 8, 6) and result.filter_strength.shape == (6,)
    assert [p.name for p in result.predictions] == ["ab"[p.class_id] for p in result.predictions]
    assert sum(p.probability for p in result.predictions) == pytest.approx(1.0, abs=1e-5)
    assert result.predictions[0].probability >= result.predictions[1].probability
    assert result.target == result.predictions[0].class_id
    other = probe.probe(log_dir, "train", probes[1], target=1 - result.target)
    assert other.target == 1 - result.target


def test_probe_scales_and_resizes_a_uint8_image_to_the_recorded_input(logged):
    """A uint8 24x24 image becomes a 12x12 float image inside the recorded value range."""
    log_dir, _ = logged
    pixels = np.full((24, 24, 3), 255, np.uint8)
    result = probe.probe(log_dir, "train", pixels)
    low, high = result.value_range
    assert result.image.shape == (12, 12, 3) and result.image.dtype == np.float32
    np.testing.assert_allclose(result.image, high, atol=1e-5)
    grey = probe.probe(log_dir, "train", np.zeros((12, 12), np.uint8))
    np.testing.assert_allclose(grey.image, low, atol=1e-6)


def test_step_without_snapshot_names_the_steps_that_have_one(logged):
    """Step 1 (replaced by the latest) is a ValueError listing steps 0 and 2."""
    log_dir, probes = logged
    with pytest.raises(
        ValueError, match="step 1 of run 'train' has no snapshot; steps with one: 0, 2"
    ):
        probe.probe(log_dir, "train", probes[0], step=1)


@pytest.mark.parametrize("run", ["../probe0", "/etc", "train/../../x", "..\\x"])
def test_run_escaping_the_logdir_is_refused(logged, run):
    """A run name that is absolute or climbs out of the logdir is a ValueError, nothing opened."""
    log_dir, probes = logged
    with pytest.raises(ValueError, match="inside the logdir"):
        probe.probe(log_dir, run, probes[0])


def test_run_name_finds_its_train_folder_and_unknown_runs_are_listed(logged):
    """'.' finds ./train (as NAME finds NAME/train); an unknown run lists the runs that have."""
    log_dir, probes = logged
    assert probe.snapshot_steps(log_dir, ".") == [0, 2]
    with pytest.raises(ValueError, match=r"runs that have: 'train'"):
        probe.probe(log_dir, "nope", probes[0])


def test_unimportable_custom_layer_is_named(tmp_path):
    """A model with an unregistered custom layer fails to load with a message naming it."""

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            Doubler(),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fit(model, [Snapshots(str(tmp_path))], epochs=1)
    with pytest.raises(ValueError, match=r"'Doubler'.*register_keras_serializable"):
        probe.probe(tmp_path, "train", np.zeros((12, 12, 3)))


def test_weights_that_do_not_fit_the_architecture_are_named_and_nothing_is_lost(tmp_path):
    """A snapshot whose arrays do not fit model.json: a ModelLoadError naming the first
    mismatched weight, and the run's other step still probes."""
    fit(small_cnn(), [Snapshots(str(tmp_path))], epochs=2)
    folder = snapshot_dir(tmp_path)
    first = os.path.join(folder, index_of(tmp_path)["steps"][0]["weights"])
    with np.load(first) as arrays:
        kept = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    np.savez(first, kept[0][:2], *kept[1:])  # the first kernel cut short
    with pytest.raises(probe.ModelLoadError, match=r"weight 0 has shape \(3, 3, 3, 4\)"):
        probe.probe(tmp_path, "train", np.zeros((12, 12, 3)), step=0)
    assert probe.probe(tmp_path, "train", np.zeros((12, 12, 3)), step=1).step == 1


def test_failed_snapshot_warns_once_and_the_pictures_are_intact(tmp_path, read_logdir):
    """A file where the snapshot folder goes: one RuntimeWarning, training and pictures go on."""
    os.makedirs(tmp_path / "train")
    (tmp_path / "train" / metadata.SNAPSHOTS_DIR).write_text("in the way")
    probes, _ = data(n=2, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(small_cnn(), [CNNViz(str(tmp_path), probes, budget=None)], epochs=2)
    ours = [w for w in caught if "Snapshots could not" in str(w.message)]
    assert len(ours) == 1 and ours[0].category is RuntimeWarning
    assert len(history.history["loss"]) == 2
    tags = read_logdir(tmp_path).cnnviz_tags()
    assert {("train", "conv_b/weights"), ("train", "conv_b/feature_maps")} <= tags
    assert read_logdir(tmp_path).steps("train", "conv_b/feature_maps") == [0, 1]


def test_model_checkpoint_files_are_recorded_instead_of_copies(tmp_path):
    """With the fit's ModelCheckpoint, the index points at its files and no copy is written."""
    path = str(tmp_path / "ckpt" / "model_{epoch:02d}.weights.h5")
    os.makedirs(tmp_path / "ckpt")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    probes, _ = data(n=2, seed=1)
    # CNNViz before the checkpoint: each epoch's file appears after CNNViz's epoch end.
    viz = CNNViz(str(tmp_path), probes, snapshots=checkpoint, budget=None, actmax_freq=0)
    fit(small_cnn(), [viz, checkpoint], epochs=3)
    index = index_of(tmp_path)
    assert {s: e["weights"] for s, e in index["steps"].items()} == {
        s: f"../../ckpt/model_{s + 1:02d}.weights.h5" for s in (0, 1, 2)
    }
    assert weight_files(tmp_path) == []
    result = probe.probe(tmp_path, "train", probes[0], step=1)
    direct = attribution.gradcam(restored(tmp_path, 1), result.image[None], target=result.target)
    np.testing.assert_allclose(result.heatmap, direct[0], atol=1e-3)


def test_an_overwritten_checkpoint_file_stands_for_its_latest_step_only(tmp_path):
    """A ModelCheckpoint writing one file name each epoch is recorded for the last step alone."""
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "last.weights.h5"), save_weights_only=True
    )
    fit(small_cnn(), [checkpoint, Snapshots(str(tmp_path), keep=checkpoint)], epochs=3)
    assert {s: e["weights"] for s, e in index_of(tmp_path)["steps"].items()} == {
        2: "../../last.weights.h5"
    }


def test_loaded_models_are_cached_within_the_bound_and_shared_safely(logged, monkeypatch):
    """A second call reuses the loaded model; the LRU drops the oldest beyond MAX_MODELS; two
    threads probing one model at once both get the same answer."""
    import concurrent.futures

    log_dir, probes = logged
    probe.clear_cache()
    probe.probe(log_dir, "train", probes[0], step=0)
    [entry] = probe._CACHE.values()
    probe.probe(log_dir, "train", probes[1], step=0)
    assert list(probe._CACHE.values()) == [entry]
    monkeypatch.setattr(probe, "MAX_MODELS", 1)
    probe.probe(log_dir, "train", probes[0], step=2)
    assert len(probe._CACHE) == 1 and entry not in probe._CACHE.values()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: probe.probe(log_dir, "train", probes[2]), range(2))
    np.testing.assert_array_equal(a.heatmap, b.heatmap)
    np.testing.assert_array_equal(a.feature_maps, b.feature_maps)


def test_a_replayed_run_can_be_probed(tmp_path):
    """`tb-cnnviz replay` of .keras checkpoints keeps snapshots the probe runs."""
    from tb_cnnviz.replay import replay

    folder = tmp_path / "ckpt"
    save = keras.callbacks.ModelCheckpoint(str(folder / "model_{epoch:02d}.keras"))
    fit(small_cnn(), [save], epochs=2)
    probes, _ = data(n=2, seed=1)
    replay(folder, tmp_path / "logs", probe_images=probes, progress=False)
    assert probe.snapshot_steps(tmp_path / "logs", "train") == [0, 1]
    result = probe.probe(tmp_path / "logs", "train", probes[0], step=0)
    assert result.feature_maps.shape == (8, 8, 6)


def test_index_is_replaced_whole(logged):
    """The index is complete JSON and no temporary file is left beside it."""
    log_dir, _ = logged
    names = os.listdir(snapshot_dir(log_dir))
    assert not [n for n in names if n.startswith(".tmp")]
    with open(os.path.join(snapshot_dir(log_dir), "index.json"), encoding="utf-8") as f:
        assert json.load(f)["version"] == 1


def test_cli_probe_draws_a_png(logged, tmp_path, capsys):
    """`tb-cnnviz probe IMAGE -o probe.png` writes a PNG of the image, predictions and maps."""
    from PIL import Image

    from tb_cnnviz import cli

    log_dir, probes = logged
    image = tmp_path / "in.png"
    Image.fromarray((probes[0] * 255).astype(np.uint8)).save(image)
    out = tmp_path / "probe.png"
    argv = ["probe", "--logdir", str(log_dir), "--run", "train", "--step", "2"]
    assert cli.main([*argv, "--layer", "conv_a", str(image), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(out).size[0] > 100
    assert f"Wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda p: p.write_text("not a picture"), [], "is not an image Pillow can read"),
        (lambda p: None, [], "no image file"),
        (lambda p: p.write_bytes(b""), ["--step", "1"], "steps with one: 0, 2"),
    ],
    ids=["non-image", "missing", "no-snapshot"],
)
def test_cli_probe_fails_cleanly(logged, tmp_path, capsys, make, extra, message):
    """Bad input ends with status 2 and one line on stderr saying what is wrong."""
    from PIL import Image

    from tb_cnnviz import cli

    log_dir, _ = logged
    image = tmp_path / "in.png"
    make(image)
    if "--step" in extra:
        Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(image)
    argv = ["probe", "--logdir", str(log_dir), "--run", "train", *extra, str(image)]
    assert cli.main([*argv, "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tb-cnnviz probe: ") and message in err and "\n" not in err
    assert not (tmp_path / "out.png").exists()
