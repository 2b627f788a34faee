"""The Probe view's routes (`/snapshots`, `/probe`) through the real WSGI app, over a logdir a
real `fit()` with `CNNViz` wrote, against the model restored straight from its snapshot files."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import werkzeug.test
from PIL import Image
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer as multiplexer
from tensorboard.plugins import base_plugin
from test_callbacks import data, fit, small_cnn
from test_probe import restored
from werkzeug.wrappers import Response

from tb_cnnviz import attribution, metadata, plugin, tiles
from tb_cnnviz import probe as tb_probe
from tb_cnnviz.callbacks import CNNViz
from tb_cnnviz.plugin import probing

PREFIX = "/data/plugin/cnnviz/"


def png(pixels: np.ndarray, **save) -> bytes:
    """`pixels` encoded by Pillow (PNG unless `format=` says otherwise)."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=save.pop("format", "PNG"), **save)
    return out.getvalue()


def make_client(logdir) -> werkzeug.test.Client:
    """TensorBoard's WSGI app serving the plugin over `logdir`, as `tensorboard --logdir` does."""
    mux = multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    ctx = base_plugin.TBContext(logdir=str(logdir), data_provider=provider, sampling_hints={})
    app = application.TensorBoardWSGI([plugin.CNNVizPlugin(ctx)], data_provider=provider)
    return werkzeug.test.Client(app, Response)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A 3-epoch fit of the small CNN with CNNViz's defaults (snapshots at steps 0 and 2), but
    without a time budget: the routes' tests need the logged Grad-CAM and probe images at every
    epoch, which a budget on a loaded machine may leave out."""
    log_dir = tmp_path_factory.mktemp("probe_routes")
    probes, labels = data(n=4, seed=1)
    viz = CNNViz(str(log_dir), probes, labels=labels, class_names=["a", "b"], budget=None)
    fit(small_cnn(), [viz], 3)
    return log_dir, probes


@pytest.fixture(scope="module")
def client(logged):
    return make_client(logged[0])


def post(client, body: bytes, **params):
    return client.post(PREFIX + "probe", query_string=params, data=body)


def test_snapshots_lists_the_steps_and_how_images_are_fed(client, logged):
    """/snapshots gives steps 0 and 2, the input shape, CNNViz's value range and the classes."""
    got = client.get(PREFIX + "snapshots?run=train").get_json()
    probes = logged[1]
    assert got["steps"] == [0, 2] and got["why"] is None
    assert got["input_shape"] == [12, 12, 3] and got["class_names"] == ["a", "b"]
    assert got["value_range"] == [0.0, 1.0] and 0 <= probes.min() < probes.max() <= 1


def test_snapshots_of_a_run_without_any_say_what_to_log(client):
    """A run with no snapshots answers 200 with no steps and a why naming what to log."""
    got = client.get(PREFIX + "snapshots?run=nope").get_json()
    assert got["steps"] == [] and "has no model snapshots" in got["why"]
    assert "'all' keeps every epoch" in got["why"]


def test_probe_equals_gradcam_and_feature_maps_of_the_restored_model(client, logged):
    """At both steps, the route's Grad-CAM is within 1e-3 of attribution.gradcam and its feature
    maps, decoded from the atlas, within 1/255 of range of the restored model's layer output."""
    log_dir, _ = logged
    upload = np.random.default_rng(3).integers(0, 256, (20, 16, 3), dtype=np.uint8)
    answers = {}
    for step in (0, 2):
        got = post(client, png(upload), run="train", step=step, layer="conv_a").get_json()
        model = restored(log_dir, step)
        # The image as fed (resized, scaled): tb_cnnviz.probe's own, pinned by test_probe.py.
        x = tb_probe.probe(log_dir, "train", upload, step=step).image[None]
        direct = attribution.gradcam(model, x, target=got["target"])[0]
        heat = np.reshape(got["heatmap"]["values"], got["heatmap"]["shape"])
        np.testing.assert_allclose(heat, direct, atol=1e-3)
        expected = keras.ops.convert_to_numpy(
            keras.Model(model.inputs, model.get_layer("conv_a").output)(x)
        )[0]
        index = got["index"]
        atlases = [
            (base64.b64decode(u.split(",", 1)[1]), a["cols"])
            for u, a in zip(got["atlases"], index["atlases"], strict=True)
        ]
        maps = tiles.unpack_tiles(atlases, tuple(index["tile"]), index["ranges"])[..., 0]
        span = float(np.ptp(expected)) or 1.0
        assert np.abs(np.moveaxis(maps, 0, -1) - expected).max() <= span / 255
        np.testing.assert_allclose(index["stats"]["response"], expected.mean((0, 1)), atol=1e-5)
        assert got["step"] == step and got["steps"] == [0, 2] and got["layer"] == "conv_a"
        answers[step] = got
    assert answers[0]["heatmap"]["values"] != answers[2]["heatmap"]["values"]


def test_probe_predictions_and_a_picked_class(client):
    """Predictions are named, sum to 1, most probable first; target= explains another class."""
    body = png(np.full((12, 12), 90, np.uint8))  # grey: repeated to RGB
    got = post(client, body, run="train").get_json()
    assert got["step"] == 2 and got["layer"] == "conv_b" and got["head"] == "softmax"
    probabilities = [p["probability"] for p in got["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert {p["name"] for p in got["predictions"]} == {"a", "b"}
    assert got["target"] == got["predictions"][0]["class"]
    other = 1 - got["target"]
    assert post(client, body, run="train", target=other).get_json()["target"] == other
    assert got["image"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("make", "code", "says"),
    [
        (lambda: b"", 400, "send the image as the request body"),
        (lambda: b"%PDF-1.4 not an image", 400, "not an image Pillow can read"),
        (
            lambda: png(np.zeros((8, 8, 4), np.uint8), format="TIFF", compression=None)[:40],
            400,
            "not an image",
        ),
        (lambda: png(np.zeros((4, 4, 3), np.uint8)).replace(b"IHDR", b"IHDX"), 400, "not an image"),
    ],
)
def test_bad_uploads_are_400_saying_what_is_accepted(client, make, code, says):
    """Empty, non-image and corrupted uploads are a JSON 400 naming what is accepted."""
    answer = post(client, make(), run="train")
    assert answer.status_code == code
    assert says in answer.get_json()["error"] and "PNG, JPEG" in answer.get_json()["error"]


def test_cmyk_and_animated_images_are_400(client):
    """A CMYK JPEG (4 colour channels) and a 2-frame GIF are refused, saying why."""
    cmyk = io.BytesIO()
    Image.new("CMYK", (8, 8)).save(cmyk, format="JPEG")
    answer = post(client, cmyk.getvalue(), run="train")
    assert answer.status_code == 400 and "CMYK image (4 channels)" in answer.get_json()["error"]
    gif = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    answer = post(client, gif.getvalue(), run="train")
    assert answer.status_code == 400 and "animated" in answer.get_json()["error"]


def test_decompression_bomb_is_400(client, monkeypatch):
    """An image whose pixels exceed the bound is refused before it is decoded."""
    monkeypatch.setattr(probing, "MAX_PIXELS", 64 * 64)
    answer = post(client, png(np.zeros((65, 64), np.uint8)), run="train")
    assert answer.status_code == 400 and "decompression bomb" in answer.get_json()["error"]


def test_oversized_upload_is_413(client):
    """A body above the limit is a JSON 413, read no further than the limit."""
    answer = post(client, b"\0" * (probing.MAX_UPLOAD_BYTES + 1), run="train")
    assert answer.status_code == 413 and "larger than" in answer.get_json()["error"]


@pytest.mark.parametrize(
    ("params", "code", "says"),
    [
        ({"run": "nope"}, 404, "has no model snapshots"),
        ({"run": "train", "step": 1}, 404, "steps with one: 0, 2"),
        ({"run": "../x"}, 404, "inside the logdir"),
        ({"run": "train", "layer": "dense_x"}, 400, "dense_x"),
        ({}, 400, "missing required parameter 'run'"),
    ],
)
def test_missing_snapshots_steps_and_layers_are_json_errors(client, params, code, says):
    """No snapshots, a step without one, an escaping run, an unknown layer: a 4xx saying why."""
    answer = post(client, png(np.zeros((12, 12, 3), np.uint8)), **params)
    assert answer.status_code == code and says in answer.get_json()["error"]


def test_probe_needs_post(client):
    """A GET of /probe is a 400 saying to POST the image."""
    answer = client.get(PREFIX + "probe?run=train")
    assert answer.status_code == 400 and "POST" in answer.get_json()["error"]


def test_unbuildable_model_is_422_naming_the_class(tmp_path):
    """A snapshot whose architecture names an unimportable class answers 422 naming it."""
    fit(small_cnn(), [CNNViz(str(tmp_path), data(n=2, seed=1)[0], budget=None)], 1)
    path = tmp_path / "train" / "cnnviz_snapshots" / "model.json"
    config = json.loads(path.read_text())
    config["config"]["layers"][1]["class_name"] = "NoSuchConv"
    config["config"]["layers"][1]["module"] = "no_such_module"
    path.write_text(json.dumps(config))
    answer = post(make_client(tmp_path), png(np.zeros((12, 12, 3), np.uint8)), run="train")
    assert answer.status_code == 422 and "NoSuchConv" in answer.get_json()["error"]


def test_routes_are_documented():
    """Every route the plugin serves has its heading in tb_cnnviz/http_api.md."""
    doc = open(os.path.join(os.path.dirname(plugin.__file__), "..", "http_api.md")).read()
    routes = plugin.CNNVizPlugin(base_plugin.TBContext()).get_plugin_apps()
    for route in routes:
        name = route.replace("/*", "/")
        assert f"### `GET {name}" in doc or f"### `POST {name}" in doc, route


def test_probe_says_so_without_keras_and_other_routes_serve(logged):
    """With Keras and TensorFlow unimportable, /snapshots still answers and /probe is a 501."""
    script = textwrap.dedent(
        f"""
        import io, sys
        sys.modules["tensorflow"] = None  # importing TensorFlow or Keras now fails
        sys.modules["keras"] = None
        import werkzeug.test
        from PIL import Image
        from tensorboard.backend import application
        from tensorboard.backend.event_processing import data_provider
        from tensorboard.backend.event_processing import plugin_event_multiplexer
        from tensorboard.plugins import base_plugin
        from werkzeug.wrappers import Response
        from tb_cnnviz import plugin

        logdir = {str(logged[0])!r}
        mux = plugin_event_multiplexer.EventMultiplexer()
        mux.AddRunsFromDirectory(logdir)
        mux.Reload()
        provider = data_provider.MultiplexerDataProvider(mux, logdir)
        ctx = base_plugin.TBContext(logdir=logdir, data_provider=provider, sampling_hints={{}})
        app = application.TensorBoardWSGI([plugin.CNNVizPlugin(ctx)], data_provider=provider)
        client = werkzeug.test.Client(app, Response)
        image = io.BytesIO()
        Image.new("RGB", (4, 4)).save(image, format="PNG")
        print(client.get("{PREFIX}snapshots?run=train").get_json()["steps"])
        answer = client.post("{PREFIX}probe?run=train", data=image.getvalue())
        print(answer.status_code, answer.get_json()["error"].split(":")[0])
        print(client.get("{PREFIX}runs").get_json())
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[0, 2]",
        "501 this TensorBoard process cannot run models",
        "['train']",
    ]


def test_logged_probe_images_are_listed_and_probed_without_an_upload(client, logged):
    """/probe_images lists the run's logged probe images; /probe with source_tag= runs one of
    them (empty body) as tb_cnnviz.probe runs the original array: same predictions and input."""
    log_dir, probes = logged
    listed = client.get(PREFIX + "probe_images?run=train").get_json()["images"]
    attributed = [i for i in listed if i["tag"].endswith("/attribution")]
    assert [i["image"] for i in attributed] == [0, 1, 2, 3]
    shown = Image.open(io.BytesIO(base64.b64decode(attributed[1]["src"].split(",", 1)[1])))
    assert shown.size == (12, 12)
    source = {"source_tag": attributed[1]["tag"], "source_image": 1}
    got = client.post(PREFIX + "probe", query_string={"run": "train", "step": 0, **source})
    assert got.status_code == 200, got.get_json()
    got = got.get_json()
    direct = tb_probe.probe(log_dir, "train", probes[1], step=0)
    assert got["predictions"][0]["class"] == direct.predictions[0].class_id
    assert got["predictions"][0]["probability"] == pytest.approx(
        direct.predictions[0].probability, abs=0.02
    )
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(got["image"].split(",", 1)[1]))))
    assert np.abs(seen / 255.0 - probes[1]).max() <= 2 / 255  # the logged values, fed


@pytest.mark.parametrize(
    "params, status, message",
    [
        ({"source_tag": "conv_a/weights"}, 400, "holds no logged images"),
        ({"source_tag": "gradcam/attribution", "source_image": 9}, 404, "it holds 4"),
        ({"source_tag": "gradcam/attribution", "source_step": 7}, 404, "logged steps"),
        ({"source_tag": "nope/attribution"}, 404, "no cnnviz tag"),
        ({"source_tag": "gradcam/attribution", "source_run": "other"}, 404, "other"),
    ],
)
def test_logged_sources_that_do_not_exist_are_4xx(client, params, status, message):
    """A source that is no logged image of this logdir is a 400/404 saying why, never a 500."""
    got = client.post(PREFIX + "probe", query_string={"run": "train", **params})
    assert got.status_code == status and message in got.get_json()["error"]


def test_a_dataset_example_probed_by_its_source_equals_its_reference_image(tmp_path):
    """A filter's top dataset example from /examples, probed by source (references tag, its
    image index and step), answers as tb_cnnviz.probe does on that reference array."""
    references = data(n=16, seed=5)[0]
    probes, labels = data(n=4, seed=1)
    viz = CNNViz(str(tmp_path), probes, labels=labels, reference_images=references, budget=None)
    fit(small_cnn(), [viz], 1)
    client = make_client(tmp_path)
    examples = client.get(PREFIX + "examples?run=train&layer=conv_a").get_json()
    best, images = examples["examples"][2][0][0], examples["images"]
    source = {"source_tag": metadata.REFERENCES_TAG, "source_image": best}
    got = client.post(
        PREFIX + "probe", query_string={"run": "train", "source_step": images["step"], **source}
    )
    assert got.status_code == 200, got.get_json()
    got = got.get_json()
    direct = tb_probe.probe(tmp_path, "train", references[best], step=got["step"])
    assert got["predictions"][0]["class"] == direct.predictions[0].class_id
    assert got["predictions"][0]["probability"] == pytest.approx(
        direct.predictions[0].probability, abs=0.02
    )
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(got["image"].split(",", 1)[1]))))
    assert np.abs(seen / 255.0 - references[best]).max() <= 2 / 255
