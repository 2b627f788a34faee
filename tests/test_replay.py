"""`tb-cnnviz replay` and `tb_cnnviz.replay`: checkpoints of a real training, logged afterwards."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from tb_cnnviz import cli, reader
from tb_cnnviz.callbacks import CNNViz
from tb_cnnviz.replay import ReplayError, find_checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-epoch fit with CNNViz and ModelCheckpoint side by side, and the probes as .npy."""
    root = tmp_path_factory.mktemp("replay")
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(5, 3, activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="out"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(3)
    x, y = rng.random((12, 10, 10, 3), dtype=np.float32), rng.integers(0, 3, 12)
    probes, labels = x[:3], y[:3]
    np.save(root / "probes.npy", probes)
    np.save(root / "labels.npy", labels)
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=6,
        verbose=0,
        callbacks=[
            CNNViz(str(root / "callbacks"), probe_images=probes, labels=labels, budget=None),
            keras.callbacks.ModelCheckpoint(str(root / "ckpt" / "model_{epoch:02d}.keras")),
        ],
    )
    return root


def replay(*args):
    return cli.main(["replay", *map(str, args)])


def test_replay_logs_the_same_tags_at_the_same_steps_as_the_callbacks(
    trained, tmp_path, read_logdir, capsys
):
    """Replaying 3 ModelCheckpoint files gives CNNViz's tags, at steps 0-2, with equal weights."""
    out = tmp_path / "replayed"
    code = replay(
        trained / "ckpt",
        "--logdir",
        out,
        "--probe-images",
        trained / "probes.npy",
        "--probe-labels",
        trained / "labels.npy",
    )
    assert code == 0, capsys.readouterr().err
    replayed, logged = read_logdir(out), read_logdir(trained / "callbacks")
    assert replayed.cnnviz_tags() == logged.cnnviz_tags()
    assert {tag for _, tag in replayed.cnnviz_tags()} == {
        "cnnviz/plan",
        "conv1/weights",
        "conv2/weights",
        "conv1/feature_maps",
        "conv2/feature_maps",
        "conv1/actmax",
        "conv2/actmax",
        "gradcam/attribution",
    }
    for run, tag in replayed.cnnviz_tags():
        assert replayed.steps(run, tag) == logged.steps(run, tag) == [0, 1, 2]
    for step in (0, 1, 2):  # checkpoint N holds the weights the callbacks saw at step N-1
        mine, theirs = (
            replayed.datum("train", "conv2/weights", step)[0],
            logged.datum("train", "conv2/weights", step)[0],
        )
        np.testing.assert_allclose(mine["ranges"], theirs["ranges"], rtol=1e-6)
    assert ("train", "conv2/update_ratio") in replayed.scalar_tags()
    out_text = capsys.readouterr()
    assert f"Replayed 3 checkpoints into {out / 'train'} (steps 0-2)" in out_text.out
    assert [line.split(" (")[0] for line in out_text.err.splitlines()] == [
        "replay 1/3 model_01.keras -> step 0",
        "replay 2/3 model_02.keras -> step 1",
        "replay 3/3 model_03.keras -> step 2",
    ]


def test_replay_without_probe_images_skips_the_kinds_that_need_them(
    trained, tmp_path, read_logdir, capsys
):
    """Without --probe-images, weights and actmax are replayed, and the summary says so."""
    assert replay(trained / "ckpt", "--logdir", tmp_path / "w", "--layers", "conv2") == 0
    assert read_logdir(tmp_path / "w").cnnviz_tags() == {
        ("train", "cnnviz/plan"),
        ("train", "conv2/weights"),
        ("train", "conv2/actmax"),
    }
    assert "no --probe-images, so kinds that need images were skipped" in capsys.readouterr().out


def test_checkpoints_are_ordered_by_the_epoch_in_their_names(tmp_path):
    """Names sort naturally by the number that changes; Keras' 1-based epoch N becomes step N-1."""
    for name in ("ckpt_v2_e10-0.31.keras", "ckpt_v2_e9-0.45.keras", "ckpt_v2_e11-0.30.keras"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "readme.txt").write_text("not a checkpoint")
    found = find_checkpoints(tmp_path)
    assert [(os.path.basename(c.path), c.epoch, c.step) for c in found] == [
        ("ckpt_v2_e9-0.45.keras", 9, 8),
        ("ckpt_v2_e10-0.31.keras", 10, 9),
        ("ckpt_v2_e11-0.30.keras", 11, 10),
    ]


def test_checkpoints_numbered_from_zero_keep_their_numbers_as_steps(tmp_path):
    """Names counting from 0 are already 0-based epoch indexes and are logged at that step."""
    for epoch in range(3):
        (tmp_path / f"weights_{epoch}.keras").write_bytes(b"")
    assert [c.step for c in find_checkpoints(tmp_path)] == [0, 1, 2]


@pytest.mark.parametrize(
    "files, needle",
    [
        ([], "no .keras files in"),
        (["best.keras", "model_01.keras"], "cannot tell the epoch of 'best.keras'"),
        (["model_01.keras", "copy_of_model_01.keras"], "both look like epoch 1"),
        (["model_01.keras"], "cannot load"),  # an empty file is not a Keras archive
    ],
)
def test_bad_checkpoint_folders_fail_in_one_line(tmp_path, capsys, files, needle):
    """Empty, ambiguous or damaged checkpoint folders exit 2 with one line saying why."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(b"")
    assert replay(folder, "--logdir", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("tb-cnnviz replay: ") and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "out" / "train").exists() or not os.listdir(tmp_path / "out" / "train")


def test_bad_replay_arguments_fail_in_one_line(trained, tmp_path, capsys):
    """A missing folder, unreadable or ill-shaped probes, or a used run exit 2 with one line."""
    np.save(tmp_path / "small.npy", np.zeros((2, 5, 5, 3), np.float32))
    (tmp_path / "junk.npy").write_text("not numpy")
    used = tmp_path / "used"
    assert replay(trained / "ckpt", "--logdir", used, "--layers", "conv1") == 0
    capsys.readouterr()
    cases = [
        ((tmp_path / "nope", "--logdir", tmp_path / "o1"), "is not a directory"),
        ((trained / "ckpt", "--logdir", tmp_path / "o2", "--probe-images", tmp_path / "junk.npy"),
         "cannot read"),
        ((trained / "ckpt", "--logdir", tmp_path / "o3", "--probe-images", tmp_path / "small.npy"),
         "probe_images"),
        ((trained / "ckpt", "--logdir", tmp_path / "o4", "--layers", "conv9"), "conv9"),
        ((trained / "ckpt", "--logdir", used), "already holds CNN Viz pictures"),
        ((trained / "ckpt", "--logdir", tmp_path / "o5", "--probe-labels", trained / "labels.npy"),
         "--probe-labels needs --probe-images"),
    ]  # fmt: skip
    for args, needle in cases:
        assert replay(*args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("tb-cnnviz replay: ") and err.count("\n") == 1, err
        assert needle in err and "Traceback" not in err, err


def test_find_checkpoints_raises_replay_error_naming_the_folder(tmp_path):
    """The library raises ReplayError (a ValueError) that names the folder it looked in."""
    with pytest.raises(ReplayError, match="is not a directory"):
        find_checkpoints(tmp_path / "missing")
    assert issubclass(ReplayError, ValueError)


def test_replay_draws_the_convs_inside_custom_layers(tmp_path, read_logdir):
    """Checkpoints of a model of residual blocks replay every conv, those inside blocks too."""
    import zoo

    from tb_cnnviz.replay import replay as replay_fn

    model, x, y, probes = zoo.residual_blocks()
    save = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt" / "model_{epoch:02d}.keras"))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[save])
    replay_fn(tmp_path / "ckpt", tmp_path / "logs", probe_images=probes, progress=False)
    tags = {tag for _, tag in read_logdir(tmp_path / "logs").cnnviz_tags()}
    for path in ("stem", "res1/c1", "res1/c2", "res2/c1", "res2/c2"):
        assert {f"{path}/weights", f"{path}/feature_maps"} <= tags, path
    # The last checkpoint's block weights, not freshly initialized ones, were drawn.
    kernel = keras.ops.convert_to_numpy(model.get_layer("res2").c2.kernel)
    drawn = reader.Logdir(str(tmp_path / "logs")).read("train", "res2/c2", "weights", 1).tiles
    want = np.moveaxis(kernel, -1, 0)  # [filters, h, w, inputs]
    got = np.moveaxis(drawn[..., 0], 1, -1)  # [filters, slices, h, w] -> [filters, h, w, slices]
    span = np.ptp(want, axis=(1, 2, 3), keepdims=True)  # a filter's slices share its range
    assert np.all(np.abs(got - want) <= span / 255 + 1e-6)
