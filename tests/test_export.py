"""`tb-cnnviz export`, `tb_cnnviz.plot` and `tb_cnnviz.reader` on logs of a short real training."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import keras
import matplotlib
import numpy as np
import pytest
from PIL import Image

from tb_cnnviz import cli, plot
from tb_cnnviz.callbacks import CNNViz
from tb_cnnviz.progress import Progress
from tb_cnnviz.reader import Logdir

matplotlib.use("Agg")

CLI = os.path.join(os.path.dirname(sys.executable), "tb-cnnviz")
MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".svg": b"<?xml"}


def tiny_cnn(seed):
    """A compiled tiny CNN (conv1, conv2, out) for 10×10 RGB images, seeded."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(5, 3, activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="out"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def train(logdir, epochs, seed):
    """Fits a tiny CNN for a few epochs with CNNViz (weights, feature maps, Grad-CAM)."""
    model = tiny_cnn(seed)
    rng = np.random.default_rng(seed)
    x, y = rng.random((12, 10, 10, 3), dtype=np.float32), rng.integers(0, 3, 12)
    viz = CNNViz(str(logdir), probe_images=x[:3], labels=y[:3], budget=None)
    model.fit(x, y, epochs=epochs, batch_size=6, verbose=0, callbacks=[viz])


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """Two runs: `a` logged 3 epochs (steps 0-2), `b` 2 epochs (steps 0-1)."""
    path = tmp_path_factory.mktemp("logs")
    train(path / "a", epochs=3, seed=0)
    train(path / "b", epochs=2, seed=1)
    return path


@pytest.fixture(scope="module")
def logs(logdir):
    return Logdir(logdir)


def export(*args):
    return cli.main(["export", *map(str, args)])


def assert_one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("tb-cnnviz export: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_reader_lists_runs_layers_kinds_and_steps(logs):
    """The reader sees both runs, every layer with its kinds, and every logged step."""
    assert logs.runs() == ["a/train", "b/train"]
    assert logs.layers("a") == {
        "conv1": ["weights", "feature_maps", "actmax"],
        "conv2": ["weights", "feature_maps", "actmax"],
        "gradcam": ["attribution"],
    }
    assert logs.steps("a", "conv2", "weights") == [0, 1, 2]
    assert logs.steps("b/train", "conv2", "weights") == [0, 1]


def test_reader_skips_plan_records(tmp_path):
    """Plan records are not pictures: no layer or kind of theirs, and a plan-only run is no run."""
    import tensorflow as tf

    from tb_cnnviz import summary

    with tf.summary.create_file_writer(str(tmp_path / "a")).as_default():
        summary.filter_weights("conv1", np.ones((3, 3, 1, 2)), step=0)
        summary.write_plan("cnnviz", 0, drawn=["conv1/weights"], skipped={"c/actmax": "slow"})
    with tf.summary.create_file_writer(str(tmp_path / "plans_only")).as_default():
        summary.write_plan("cnnviz", 0, skipped={"conv1/weights": "slow"})
    logs = Logdir(tmp_path)
    assert logs.runs() == ["a"]
    assert logs.layers("a") == {"conv1": ["weights"]}


def test_reader_returns_tiles_in_their_original_units(logs):
    """Read tiles are [filters, slices, h, w, c] and span exactly the stored range: a weight
    filter's slices share their filter's; feature maps' tiles each have their own."""
    pictures = logs.read("a", "conv2", "weights", step=1)
    assert pictures.step == 1 and pictures.filters == [0, 1, 2, 3, 4]
    assert pictures.tiles.shape == (5, 6, 3, 3, 1)
    ranges = np.asarray(pictures.index["ranges"]).reshape(5, 6, 2)
    assert (ranges == ranges[:, :1]).all()
    np.testing.assert_allclose(pictures.tiles.min(axis=(1, 2, 3, 4)), ranges[:, 0, 0], atol=1e-6)
    np.testing.assert_allclose(pictures.tiles.max(axis=(1, 2, 3, 4)), ranges[:, 0, 1], atol=1e-6)
    maps = logs.read("a", "conv2", "feature_maps", step=1)
    ranges = np.asarray(maps.index["ranges"]).reshape(*maps.tiles.shape[:2], 2)
    np.testing.assert_allclose(maps.tiles.min(axis=(2, 3, 4)), ranges[..., 0], atol=1e-6)
    np.testing.assert_allclose(maps.tiles.max(axis=(2, 3, 4)), ranges[..., 1], atol=1e-6)


@pytest.mark.parametrize("ext", [".png", ".pdf", ".svg"])
def test_export_writes_a_valid_file_per_format(logdir, tmp_path, capsys, ext):
    """`export -o FILE.png|.pdf|.svg` writes a file of that format and says where."""
    out = tmp_path / f"conv2{ext}"
    assert (
        export("--logdir", logdir, "--run", "a", "--layer", "conv2", "--kind", "weights", "-o", out)
        == 0
    )
    assert out.read_bytes().startswith(MAGIC[ext])
    if ext == ".svg":
        assert b"<svg" in out.read_bytes()[:2000]
    assert f"Wrote {out}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not private


def test_figure_has_a_title_every_filter_id_and_a_colorbar(logs):
    """The title names layer, kind and step; every filter id is written; a colorbar is drawn."""
    ax = plot.layer_grid(logs, "a", "conv1", "feature_maps", step=1)
    fig = ax.figure
    texts = [t.get_text() for t in fig.texts]
    assert "conv1 · feature maps · step 1" in texts
    assert any("run a/train" in t and "probe image 0 of 3" in t for t in texts)
    assert sorted(int(t.get_text()) for t in ax.texts) == list(range(6))
    colorbar_axes = [a for a in fig.axes if a is not ax]
    assert len(colorbar_axes) == 1
    assert colorbar_axes[0].get_ylabel() == "activation, min→0 max→1 per filter"
    assert 4 <= fig.get_figwidth() <= 7.5 and fig.get_figheight() < 9.5


def test_layer_normalization_puts_weights_on_one_real_scale(logs):
    """With `normalization="layer"` the colorbar spans ±max|weight| of the layer, in weights."""
    pictures = logs.read("a", "conv2", "weights")
    m = np.abs(pictures.tiles).max()
    ax = plot.layer_grid(logs, "a", "conv2", "weights", normalization="layer")
    [bar] = [a for a in ax.figure.axes if a is not ax]
    assert bar.get_ylabel() == "weight"
    low, high = bar.get_ylim()
    assert low == pytest.approx(-m, rel=1e-3) and high == pytest.approx(m, rel=1e-3)


def test_plot_rejects_bad_options_with_the_valid_choices(logs):
    """Unknown normalization, colormap or slice raise ValueError naming what is allowed."""
    with pytest.raises(ValueError, match=r"normalization must be one of \('filter', 'layer'"):
        plot.layer_grid(logs, "a", "conv2", "weights", normalization="global")
    with pytest.raises(ValueError, match="cmap must be a matplotlib colormap"):
        plot.layer_grid(logs, "a", "conv2", "weights", cmap="no-such-map")
    with pytest.raises(ValueError, match=r"input channel number in 0\.\.5"):
        plot.layer_grid(logs, "a", "conv2", "weights", slices=6)


def test_animate_writes_one_gif_frame_per_step_with_progress(logdir, tmp_path, capsys):
    """`export --animate -o FILE.gif` has one frame per logged step and reports each frame."""
    out = tmp_path / "conv1.gif"
    assert (
        export(
            "--logdir",
            logdir,
            "--run",
            "a",
            "--layer",
            "conv1",
            "--kind",
            "weights",
            "--animate",
            "-o",
            out,
        )
        == 0
    )
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
    err = capsys.readouterr().err
    assert [line.split(" (")[0] for line in err.splitlines()] == [
        "export 1/3 frame 1",
        "export 2/3 frame 2",
        "export 3/3 frame 3",
    ]


def test_compare_puts_two_runs_side_by_side_at_their_latest_common_step(logdir, logs, tmp_path):
    """`--compare A B` draws one panel per run, at the latest step both have, one colorbar."""
    out = tmp_path / "cmp.png"
    assert (
        export(
            "--logdir",
            logdir,
            "--compare",
            "a",
            "b",
            "--layer",
            "conv1",
            "--kind",
            "weights",
            "-o",
            out,
        )
        == 0
    )
    assert out.read_bytes().startswith(MAGIC[".png"])
    fig = plot.compare(logs, ["a", "b"], "conv1", "weights")
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["a/train", "b/train"]
    assert len(fig.axes) == 3  # two panels and one colorbar
    assert "conv1 · filter weights · step 1" in [t.get_text() for t in fig.texts]
    left, right = (ax.get_position() for ax in panels)
    assert left.x1 < right.x0  # side by side


def test_attribution_overlays_heatmaps_and_labels_each_probe(logs, tmp_path):
    """Attribution draws each probe with its heatmap and labels it with class and confidence."""
    ax = plot.layer_grid(logs, "a", "gradcam", "attribution")
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) == 3 and all(t.startswith(f"{i}: class ") for i, t in enumerate(labels))
    assert all(t.endswith("%") for t in labels)
    plot.save(ax.figure, tmp_path / "att.pdf")
    assert (tmp_path / "att.pdf").read_bytes().startswith(MAGIC[".pdf"])


def test_png_pixels_are_exact_multiples_of_picture_pixels(logs, tmp_path):
    """`save` picks a dpi at which every picture pixel covers a whole number of output pixels."""
    ax = plot.layer_grid(logs, "a", "conv2", "weights")
    dpi = plot._crisp_dpi(ax.figure, 200)
    canvas_width = ax.get_images()[0].get_array().shape[1]
    axes_pixels = ax.get_position().width * ax.figure.get_figwidth() * dpi
    assert dpi >= 200
    assert axes_pixels / canvas_width == pytest.approx(round(axes_pixels / canvas_width))


CONV1_WEIGHTS = ["--layer", "conv1", "--kind", "weights"]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--run", "zzz", *CONV1_WEIGHTS], ["no run 'zzz'", "'a/train', 'b/train'"]),
        (["--run", "a", "--layer", "conv9", "--kind", "weights"], ["no layer 'conv9'", "'conv2'"]),
        (
            ["--run", "a", "--layer", "conv1", "--kind", "attribution"],
            ["no attribution", "weights, feat"],
        ),
        (["--run", "a", *CONV1_WEIGHTS, "--step", "7"], ["no step 7", "its steps: 0, 1, 2"]),
        (["--run", "a", "--layer", "conv1"], ["--kind is needed", "weights, feature_maps, actmax"]),
        (["--run", "a"], ["--layer is needed", "'conv1' (weights, feature_maps, actmax)"]),
        (CONV1_WEIGHTS, ["--run is needed", "'a/train', 'b/train'"]),
        (["--run", "a", *CONV1_WEIGHTS, "--slice", "x"], ["--slice must be 'all' or a number"]),
        (["--compare", "a", "b", *CONV1_WEIGHTS, "--step", "2"], ["no step 2", "steps: 0, 1"]),
    ],
)
def test_bad_input_fails_in_one_line_listing_what_exists(logdir, tmp_path, capsys, args, needles):
    """A missing run, layer, kind or step exits 2 with one line naming what exists, output kept."""
    out = tmp_path / "keep.png"
    out.write_bytes(b"precious")
    code = export("--logdir", logdir, *args, "-o", out)
    assert_one_line_error(capsys, code, *needles)
    assert out.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_a_logdir_without_cnnviz_pictures_is_named_as_such(tmp_path, capsys):
    """A logdir holding only ordinary scalars, or nothing, exits 2 saying it has no pictures."""
    import tensorflow as tf

    with tf.summary.create_file_writer(str(tmp_path / "logs" / "train")).as_default():
        tf.summary.scalar("loss", 1.0, step=0)
    code = export(
        "--logdir", tmp_path / "logs", "--layer", "c", "--kind", "weights", "-o", tmp_path / "x.png"
    )
    assert_one_line_error(capsys, code, "no CNN Viz pictures in logdir", "1 run(s) without any")
    code = export("--logdir", tmp_path / "missing", "-o", tmp_path / "x.png")
    assert_one_line_error(capsys, code, "is not a directory")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "output, needle",
    [
        ("missing_dir/x.png", "is not a directory"),
        ("a_file/x.png", "is not a directory"),
        ("x.gif", "a .gif needs --animate"),
        ("x.jpg", "must end in .png, .pdf or .svg"),
        ("folder.png", "is a directory"),
    ],
)
def test_an_output_that_cannot_be_written_fails_before_any_work(
    logdir, tmp_path, capsys, output, needle
):
    """An output path in a missing folder, under a file, or of the wrong type exits 2 at once."""
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "folder.png").mkdir()
    code = export(
        "--logdir",
        logdir,
        "--run",
        "a",
        "--layer",
        "conv1",
        "--kind",
        "weights",
        "-o",
        tmp_path / output,
    )
    assert_one_line_error(capsys, code, needle)


def test_a_failed_save_keeps_the_existing_file_and_leaves_no_temporary(logs, tmp_path):
    """When writing fails midway, the old output stays as it was and no temporary file remains."""
    out = tmp_path / "fig.png"
    out.write_bytes(b"precious")
    fig = plot.layer_grid(logs, "a", "conv1", "weights").figure

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    fig.savefig = broken
    with pytest.raises(OSError, match="No space left"):
        plot.save(fig, out)
    assert out.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_the_installed_command_reports_bad_input_without_a_traceback(logdir, tmp_path):
    """The real `tb-cnnviz export` process exits 2 with one stderr line on an unknown step."""
    result = subprocess.run(
        [CLI, "export", "--logdir", str(logdir), "--run", "b", "--layer", "conv1", "--kind",
         "weights", "--step", "5", "-o", str(tmp_path / "x.png")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tb-cnnviz export: no step 5 of 'conv1' weights in run 'b/train'; its steps: 0, 1"
    ]
    assert not (tmp_path / "x.png").exists()


def test_progress_redraws_one_line_on_a_terminal_and_writes_lines_elsewhere():
    """On a terminal the bar redraws in place and ends with a newline; in a log, a line per item."""
    tty = io.StringIO()
    with Progress(2, "replay", stream=tty, interactive=True) as bar:
        bar.advance("one")
        bar.advance("two")
    assert tty.getvalue().count("\r") == 2 and tty.getvalue().endswith("\n")
    assert "[####################]       2/2  two" in tty.getvalue()
    log = io.StringIO()
    with Progress(2, "replay", stream=log) as bar:
        bar.advance("one")
        bar.advance("two")
    assert [line.split(" (")[0] for line in log.getvalue().splitlines()] == [
        "replay 1/2 one",
        "replay 2/2 two",
    ]


def test_a_malformed_index_gets_the_same_clear_error_in_export_plot_and_the_tab(tmp_path, capsys):
    """An index without a tile size: one line from export, NotFoundError from plot, same words."""
    import json

    import tensorflow as tf
    from tensorboard.compat.proto import summary_pb2

    from tb_cnnviz import metadata, tiles
    from tb_cnnviz.reader import NotFoundError

    index = {
        "tile": [2, 2],
        "filters": [0],
        "slices": {"axis": "input_channel", "count": 1, "total": 1},
        "atlases": [{"blob": 1, "cols": 1, "rows": 1, "count": 1}],
        "ranges": [[0.0, 1.0]],
    }
    md = metadata.create_summary_metadata("weights", "c")
    assert md.data_class == summary_pb2.DATA_CLASS_BLOB_SEQUENCE
    blobs = [metadata.encode_index(index), tiles.encode_png(np.zeros((2, 2), np.uint8))]
    with tf.summary.create_file_writer(str(tmp_path / "logs" / "train")).as_default():
        tf.summary.write("c/weights", tf.constant(blobs), step=0, metadata=md.SerializeToString())
    words = "malformed index: tile must be [height, width, channels]"
    code = export(
        "--logdir",
        tmp_path / "logs",
        "--run",
        "train",
        "--layer",
        "c",
        "--kind",
        "weights",
        "-o",
        tmp_path / "x.png",
    )
    assert_one_line_error(capsys, code, words)
    with pytest.raises(NotFoundError, match=re.escape(words)):
        plot.layer_grid(str(tmp_path / "logs"), "train", "c", "weights")
    assert json.loads(blobs[0])["version"] == metadata.FORMAT_VERSION


# -- figures of the data for comparing runs (runs logged with reference images) ----------------
@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Runs `a` and `b` logged with the same reference images (3 epochs), `c` with others."""
    from tb_cnnviz.callbacks import References

    path = tmp_path_factory.mktemp("compared")
    refs = np.random.default_rng(9).random((20, 10, 10, 3), dtype=np.float32)
    for name, seed, images in (("a", 0, refs), ("b", 1, refs), ("c", 2, refs[::-1])):
        model = tiny_cnn(seed)
        x, y = images[:12], np.arange(12) % 3
        cb = References(str(path / name), images, budget=None)
        model.fit(x, y, epochs=3, batch_size=6, verbose=0, callbacks=[cb])
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["--kind", "similarity", "--run", "a", "--layer", "conv2"],
        ["--kind", "similarity", "--mode", "runs", "--runs", "a", "b", "c"],
        ["--kind", "similarity", "--mode", "layers", "--run", "b", "--step", "1"],
        ["--kind", "examples", "--run", "a", "--layer", "conv1", "--top-k", "4"],
    ],
    ids=["time", "runs", "layers", "examples"],
)
@pytest.mark.parametrize("ext", [".png", ".pdf"])
def test_export_writes_similarity_and_examples_figures(compared, tmp_path, capsys, args, ext):
    """Each comparison figure is written as a valid, non-trivial PNG and PDF."""
    out = tmp_path / f"figure{ext}"
    assert export("--logdir", compared, *args, "-o", out) == 0, capsys.readouterr().err
    data = out.read_bytes()
    assert data.startswith(MAGIC[ext]) and len(data) > 10_000
    if ext == ".png":
        with Image.open(out) as image:
            assert min(image.size) > 500
            assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 20


def test_similarity_figure_draws_no_number_between_other_reference_images(compared):
    """plot.similarity: one panel per layer; cells across reference images are NaN, not drawn."""
    fig = plot.similarity(compared, "runs", runs=["a", "b", "c"])
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["conv1", "conv2"]
    matrix = panels[0].get_images()[0].get_array()
    assert matrix.mask[0, 2] and matrix.mask[2, 0] and not matrix.mask[0, 1]
    texts = [t.get_text() for t in panels[0].texts]
    assert texts.count("1.00") == 3 and len(texts) == 5  # 3 diagonal cells + a-b twice
    assert "different reference images" in " ".join(t.get_text() for t in fig.texts)
    matplotlib.pyplot.close(fig)


def test_examples_figure_shows_each_filters_top_k_crops(compared):
    """plot.examples: a row per filter chosen, top_k crops each, captioned image and activation."""
    from tb_cnnviz import compare

    fig = plot.examples(compared, "a", "conv2", filters=[4, 0], top_k=3)
    pictures = [ax for ax in fig.axes if ax.get_images()]
    assert len(pictures) == 6
    best = compare.examples(compared, "a", "conv2")[4][0]
    assert pictures[0].get_title() == f"#{best[0]} · {best[-1]:.2g}"
    assert pictures[0].get_ylabel() == "filter 4"
    full = plot.examples(compared, "a", "conv2", top_k=1, crop="full")
    assert full.axes[0].get_images()[0].get_array().shape[:2] == (10, 10)
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--kind", "similarity", "--run", "a"], ["--layer is needed", "conv1, conv2"]),
        (["--kind", "similarity", "--mode", "runs", "--runs", "a"], ["two or more", "a/train"]),
        (["--kind", "similarity", "--run", "a", "--layer", "x"], ["layers: 'conv1', 'conv2'"]),
        (["--kind", "examples", "--run", "a", "--layer", "conv1", "--filters", "9"], ["0 to 5"]),
        (["--kind", "examples", "--run", "a", "--layer", "conv1", "--top-k", "99"], ["1 to 8"]),
        (["--kind", "similarity", "--run", "a", "--layer", "conv1", "--step", "1"], ["--step"]),
        (["--kind", "similarity", "--mode", "runs", "--runs", "a", "c", "--step", "9"], ["share"]),
        (["--kind", "weights", "--mode", "runs", "--run", "a"], ["go with --kind similarity"]),
        (["--kind", "examples", "--animate", "--run", "a"], ["no --animate"]),
    ],
)
def test_bad_comparison_exports_fail_in_one_line(compared, tmp_path, capsys, args, needles):
    """Bad arguments to the comparison figures: one line saying what is wrong, exit status 2."""
    out = tmp_path / ("x.gif" if "--animate" in args else "x.png")
    assert_one_line_error(capsys, export("--logdir", compared, *args, "-o", out), *needles)


def test_a_run_without_reference_images_is_told_how_to_log_them(logdir, tmp_path, capsys):
    """Exporting similarity of a run logged without references says how to turn them on."""
    code = export(
        "--logdir", logdir, "--kind", "similarity", "--run", "a", "-o", tmp_path / "x.png"
    )
    assert_one_line_error(capsys, code, "reference_images=x_val[:256]")


def test_animate_a_thinned_run_goes_from_drawn_step_to_drawn_step_and_says_so(tmp_path, capsys):
    """A fit() thinned after 2 epochs animates its drawn steps 0, 1, 2, 4, 7 as frames titled
    with those steps; a frame after thinned steps counts them, and `export` says steps were
    thinned and where."""
    model = tiny_cnn(0)
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 10, 10, 3), dtype=np.float32), rng.integers(0, 3, 12)
    viz = CNNViz(str(tmp_path / "logs"), budget=None, actmax_freq=0, snapshots=None, thin_after=2)
    model.fit(x, y, epochs=8, batch_size=6, verbose=0, callbacks=[viz])
    logs = Logdir(tmp_path / "logs")
    assert logs.steps("train", "conv1", "weights") == [0, 1, 2, 4, 7]
    assert sorted(logs.thinned("train")) == [3, 5, 6]

    anim = plot.animate(logs, "train", "conv1", "weights")
    assert list(anim.new_frame_seq()) == [0, 1, 2, 4, 7]
    plot.save(anim, tmp_path / "last.gif")  # draws every frame; the figure keeps the last
    texts = [t.get_text() for t in plot.figure_of(anim).findobj(matplotlib.text.Text)]
    assert any(t.endswith("· step 7") for t in texts), texts
    assert any(t.endswith("· 2 steps thinned before it") for t in texts), texts

    out = tmp_path / "conv1.gif"
    args = ("--logdir", tmp_path / "logs", "--layer", "conv1", "--kind", "weights", "--animate")
    assert export(*args, "-o", out) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 5
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].startswith("Steps were thinned")
    assert printed[2:] == [
        "  train: step 3 (1) thinned: every 2nd step is drawn from step 2 on (a long run)",
        "  train: steps 5-6 (2) thinned: every 4th step is drawn from step 4 on (a long run)",
    ]
