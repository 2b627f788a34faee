"""The Probe view in a real TensorBoard and Chromium: a PNG uploaded in the tab runs through the
run's model at two snapshot steps, and what the page received equals Grad-CAM and the layer's
output computed straight from the model restored at those steps; on the process's own Keras
backend, then in a TensorBoard on JAX with TensorFlow hidden."""

from __future__ import annotations

import base64
import os
import pathlib
import sys

import keras
import numpy as np
import pytest
import tbserver
from test_callbacks import data, fit, small_cnn
from test_dashboard_e2e import require_browser
from test_probe import restored
from test_probe_routes import png

from tb_cnnviz import attribution, tiles
from tb_cnnviz import probe as tb_probe
from tb_cnnviz.callbacks import CNNViz

pytestmark = pytest.mark.browser

SHOTS = pathlib.Path("/tmp/probe-shots")
EXAMPLE_SHOTS = pathlib.Path("/tmp/probe-ex")
REFERENCES = data(n=16, seed=5)[0]
# TensorBoard in a process where `import tensorflow` fails, as where it is not installed.
# The /probe answer the page holds for a step (its cached request: no new one is sent).
RECEIVED = """(step) => import("./static/controller.js").then((C) =>
    C.probeLayer(C.state.runs[0], step, C.state.layer).then((d) => d.answer))"""
NO_TF = (
    "import sys; sys.modules['tensorflow'] = None; from tensorboard import main; main.run_main()"
)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """A 2-epoch fit of the small CNN with CNNViz keeping every epoch's snapshot and logging
    responses to 16 reference images (so each filter has dataset examples)."""
    require_browser()
    path = tmp_path_factory.mktemp("probe_e2e")
    probes, labels = data(n=4, seed=1)
    viz = CNNViz(
        str(path),
        probes,
        labels=labels,
        class_names=["a", "b"],
        reference_images=REFERENCES,
        snapshots="all",
        budget=None,
    )
    fit(small_cnn(), [viz], 2)
    return path


def expected(logdir, upload: bytes, step: int, layer: str, target: int):
    """Grad-CAM and `layer`'s output of the model restored at `step`, computed here."""
    model = restored(logdir, step)
    x = tb_probe.probe(logdir, "train", upload, step=step).image[None]  # the image as fed
    heat = attribution.gradcam(model, x, target=target)[0]
    maps = keras.Model(model.inputs, model.get_layer(layer).output)(x)
    return heat, keras.ops.convert_to_numpy(maps)[0]


def check(logdir, upload: bytes, answer: dict) -> None:
    """The page's answer equals the direct computation: Grad-CAM within 1e-3, each feature map
    within 1/255 of the layer's range."""
    heat, maps = expected(logdir, upload, answer["step"], answer["layer"], answer["target"])
    got = np.reshape(answer["heatmap"]["values"], answer["heatmap"]["shape"])
    np.testing.assert_allclose(got, heat, atol=1e-3)
    index = answer["index"]
    atlases = [
        (base64.b64decode(u.split(",", 1)[1]), a["cols"])
        for u, a in zip(answer["atlases"], index["atlases"], strict=True)
    ]
    decoded = tiles.unpack_tiles(atlases, tuple(index["tile"]), index["ranges"])[..., 0]
    assert np.abs(np.moveaxis(decoded, 0, -1) - maps).max() <= (float(np.ptp(maps)) or 1) / 255


def probe_in_browser(browser, port: int, upload_path: pathlib.Path, shot: str) -> dict[int, dict]:
    """Opens the Probe view, uploads the PNG, goes from the latest step to step 0; returns the
    /probe answers the page received, by step, and leaves a screenshot of each step."""
    answers: dict[int, dict] = {}
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: "Content Security Policy" in m.text and errors.append(m.text))

        page.goto(f"http://127.0.0.1:{port}/#cnnviz&p.cnnviz.view=probe")
        frame = page.wait_for_selector("iframe[src*='plugin_entry']", timeout=60000)
        frame = frame.content_frame()
        file_input = frame.wait_for_selector("input[data-action=probe-file]", state="attached")
        assert "Choose an image" in frame.inner_text(".cv-panels")
        file_input.set_input_files(str(upload_path))
        frame.wait_for_selector(".cv-probe img", timeout=60000)
        frame.wait_for_selector(".cv-tile canvas")
        SHOTS.mkdir(parents=True, exist_ok=True)
        # Beside each filter's map, its actmax image where the run logged one: paired by id.
        frame.wait_for_selector(".cv-tile .cv-actmax")
        pairs = frame.eval_on_selector_all(
            ".cv-tile",
            "ts => ts.map(t => [t.dataset.filter, t.querySelector('.cv-actmax')?.dataset.filter])",
        )
        assert len(pairs) == 4 and all(a == b for a, b in pairs), pairs
        page.screenshot(path=str(SHOTS / f"{shot}-step1.png"))
        answers[1] = frame.evaluate(RECEIVED, 1)
        assert "resized to 12×12" in frame.inner_text(".cv-probe")
        frame.evaluate("import('./static/controller.js').then(C => C.update({step: 0}))")
        frame.wait_for_function("document.querySelector('.cv-chip')?.textContent === 'step 0'")
        frame.wait_for_selector(".cv-probe img")
        page.screenshot(path=str(SHOTS / f"{shot}-step0.png"))
        answers[0] = frame.evaluate(RECEIVED, 0)
        # Step 0 and, chosen beside it, step 1: both columns' numbers on screen at once.
        frame.select_option("select[data-action=probe-vs]", "1")
        frame.wait_for_function("document.querySelectorAll('.cv-probe b').length === 2")
        chips = frame.eval_on_selector_all(".cv-panel .cv-chip", "cs => cs.map(c => c.textContent)")
        assert chips == ["step 0", "step 1"]
        shown = frame.eval_on_selector_all(".cv-probe b", "bs => bs.map(b => b.textContent)")
        for step, text in zip((0, 1), shown, strict=True):
            assert text == " · ".join(pct(p) for p in answers[step]["predictions"][:3])
            assert frame.evaluate(RECEIVED, step) == answers[step]  # the same request, cached
        page.screenshot(path=str(SHOTS / f"{shot}-side-by-side.png"))
        # A logged probe image, picked from the strip instead of a file.
        assert frame.eval_on_selector_all(".cv-strip .cv-thumb", "ts => ts.length") == 4 + 16
        frame.click(".cv-strip .cv-thumb >> nth=1")
        frame.wait_for_function(
            "[...document.querySelectorAll('.cv-probe')].every(p => p.textContent.includes("
            "'probe image 1'))"
        )
        answers["logged"] = frame.evaluate(RECEIVED, 0)
        answers["example"] = pick_an_example(frame, page, shot)
    finally:
        context.close()
    assert not errors, errors
    return answers


def pick_an_example(frame, page, shot: str) -> tuple[int, dict]:
    """In the step-0 column: under each tile, its filter's top 3 dataset examples as /examples
    lists them; clicking the first one probes it. Returns its image index and the answer."""
    frame.wait_for_selector(".cv-panel:first-child .cv-tile .cv-ex")
    listed = frame.evaluate(
        """() => import("./static/controller.js").then(C => fetch(
            `examples?run=train&layer=${C.state.layer}&step=0`).then(r => r.json()))"""
    )
    shown = frame.eval_on_selector_all(
        ".cv-panel:first-child .cv-tile",
        "ts => ts.map(t => [t.dataset.filter, [...t.querySelectorAll('.cv-ex .cv-thumb')]"
        ".map(b => Number(b.dataset.image))])",
    )
    assert len(shown) == listed["filters"] == 4, shown
    for filter, images in shown:
        assert images == [e[0] for e in listed["examples"][int(filter)][:3]], (filter, images)
    EXAMPLE_SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(EXAMPLE_SHOTS / f"{shot}-examples.png"))
    # A tile is a button: nothing inside it may be one (invalid, and out of a keyboard's reach).
    assert frame.eval_on_selector_all(".cv-tile button, .cv-tile a", "bs => bs.length") == 0
    image = shown[0][1][0]
    frame.click(".cv-panel:first-child .cv-tile .cv-ex .cv-thumb >> nth=0")
    frame.wait_for_function(
        f"document.querySelector('.cv-probe')?.textContent.includes('dataset example #{image}')"
    )
    page.screenshot(path=str(EXAMPLE_SHOTS / f"{shot}-probed.png"))
    answer = frame.evaluate(RECEIVED, 0)
    # The keyboard's way: the inspector's dataset examples are buttons that probe them too.
    frame.focus(".cv-panel:first-child .cv-tile >> nth=0")
    page.keyboard.press("Enter")
    button = frame.wait_for_selector(".cv-insp .cv-pic-btn >> nth=1")
    # Phrasing content only inside a button: no figure, caption or block.
    flow = frame.eval_on_selector_all(".cv-insp .cv-pic-btn :not(canvas, span)", "es => es.length")
    assert flow == 0
    second = shown[0][1][1]
    assert f"#{second}" in button.inner_text()
    button.focus()
    page.keyboard.press("Enter")
    frame.wait_for_function(
        f"document.querySelector('.cv-probe')?.textContent.includes('dataset example #{second}')"
    )
    page.screenshot(path=str(EXAMPLE_SHOTS / f"{shot}-inspector-probed.png"))
    return image, answer


def pct(p: dict) -> str:
    """A prediction as the Probe card writes it."""
    return f"{p['name'] if p['name'] is not None else p['class']} {p['probability'] * 100:.1f}%"


def run_and_check(browser, logdir, tmp_path, argv, shot: str, env=None) -> None:
    upload = png(np.random.default_rng(7).integers(0, 256, (24, 20, 3), dtype=np.uint8))
    path = tmp_path / "upload.png"
    path.write_bytes(upload)
    port = tbserver.free_port()
    flags = ["--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        proc = tbserver.serve([*argv, *flags])
    finally:
        os.environ.clear()
        os.environ.update(old)
    try:
        tbserver.wait_for_steps(port, "train", "conv_a/weights", [0, 1])
        answers = probe_in_browser(browser, port, path, shot)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    logged = answers.pop("logged")
    image, example = answers.pop("example")
    direct = tb_probe.probe(logdir, "train", REFERENCES[image], step=0)
    assert example["predictions"][0]["class"] == direct.predictions[0].class_id
    assert example["predictions"][0]["probability"] == pytest.approx(
        direct.predictions[0].probability, abs=0.02
    )
    assert sorted(answers) == [0, 1], output[-3000:]
    for answer in answers.values():
        check(logdir, upload, answer)
    probes = data(n=4, seed=1)[0]
    direct = tb_probe.probe(logdir, "train", probes[1], step=0)
    assert logged["predictions"][0]["class"] == direct.predictions[0].class_id
    assert logged["predictions"][0]["probability"] == pytest.approx(
        direct.predictions[0].probability, abs=0.02
    )
    assert answers[0]["heatmap"]["values"] != answers[1]["heatmap"]["values"]


def test_probe_view_answers_equal_the_restored_model_at_two_steps(chromium, logdir, tmp_path):
    """In a real TensorBoard, an uploaded PNG's Grad-CAM and feature maps at steps 1 and 0 equal
    those computed here from the snapshots; a clicked dataset example probes as its array."""
    program = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    run_and_check(chromium, logdir, tmp_path, [program], "probe")


def test_probe_view_on_jax_without_tensorflow(chromium, logdir, tmp_path):
    """The same in a TensorBoard running Keras on JAX where TensorFlow cannot be imported."""
    env = {"KERAS_BACKEND": "jax", "TB_CNNVIZ_HIDE_TENSORFLOW": "1"}
    run_and_check(chromium, logdir, tmp_path, [sys.executable, "-c", NO_TF], "probe-jax", env)
