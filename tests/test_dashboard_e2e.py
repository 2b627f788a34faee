"""End-to-end tests of the CNN Viz tab: a real `tensorboard` process and headless Chromium.

A session fixture writes a small logdir with `tb_cnnviz.summary` (two runs, one of them named
with HTML; two conv layers; weights and feature maps; 12 steps), starts TensorBoard on it, and
Playwright drives the tab inside TensorBoard's own page and iframe. The tests also save screenshots
in `artifacts/screenshots/` (git-ignored; CI can keep them) and check them; the README's pictures
come from the demo instead (`scripts/screenshots.py`).

Chromium is `/usr/bin/chromium`; without it these tests skip, unless `CI=true`, where they fail.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import quote, urlencode

import numpy as np
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EVIL = "<img src=x onerror=alert(1)>"
RUNS = ["cifar/baseline", EVIL]
STEPS = 12
SCREENSHOTS = pathlib.Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"


def require_browser():
    """Skips a browser test where Chromium or Playwright is missing; fails in CI instead."""
    missing = None
    if not os.path.exists(CHROMIUM):
        missing = f"{CHROMIUM} is missing"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests need Chromium and Playwright in CI: {missing}")
        pytest.skip(missing)


# ---------------------------------------------------------------------------------------------
# A small logdir that looks like training: smooth edge-like kernels, feature maps of real probe
# pictures through those kernels, a few dead filters.


def _probe_images(rng) -> np.ndarray:
    """Four 32×32 RGB pictures: a disc, stripes, a checkerboard and a colour gradient."""
    y, x = np.mgrid[0:32, 0:32] / 31.0
    disc = ((x - 0.5) ** 2 + (y - 0.45) ** 2 < 0.1).astype(float)
    stripes = (np.sin(x * 18 + y * 6) > 0).astype(float)
    checker = ((np.floor(x * 4) + np.floor(y * 4)) % 2).astype(float)
    pics = [
        np.stack([disc, disc * 0.6, 1 - disc], -1),
        np.stack([stripes, stripes * 0.3, stripes * 0.8], -1),
        np.stack([checker, 1 - checker, checker * 0.5], -1),
        np.stack([x, y, 1 - x], -1),
    ]
    return np.stack(pics).astype(np.float32) + rng.normal(0, 0.03, (4, 32, 32, 3)).astype(
        np.float32
    )


def _conv(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """A valid, stride-1 convolution `[n, h, w, cin] * [kh, kw, cin, cout]`."""
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(images, (kh, kw), axis=(1, 2))
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel, optimize=True)


def _edge_kernels(rng, size: int, cin: int, cout: int) -> np.ndarray:
    """Gabor-like kernels `[size, size, cin, cout]`: spread orientations, random colours."""
    half = (size - 1) / 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1] / max(half, 1)
    out = np.empty((size, size, cin, cout), np.float32)
    for f in range(cout):
        theta = np.pi * f / cout
        u = x * np.cos(theta) + y * np.sin(theta)
        wave = np.cos(3.0 * u + rng.uniform(0, np.pi)) * np.exp(-(x**2 + y**2) / 0.9)
        out[..., f] = wave[..., None] * rng.normal(0, 1, cin)
    return out


def write_logdir(root: pathlib.Path, runs=RUNS, steps=STEPS, start=0) -> None:
    """Writes `steps` training-like steps per run with `tb_cnnviz.summary`, from step `start`.

    Kernels start as noise and settle into oriented edges, the way first layers learn.
    """
    import tensorflow as tf

    from tb_cnnviz import summary

    for r, run in enumerate(runs):
        rng = np.random.default_rng(r)
        probes = _probe_images(rng)
        edges1 = _edge_kernels(rng, 5, 3, 16)
        noise1 = rng.normal(0, 0.6, edges1.shape).astype(np.float32)
        edges2 = _edge_kernels(rng, 3, 16, 32) * 0.3
        noise2 = rng.normal(0, 0.15, edges2.shape).astype(np.float32)
        writer = tf.summary.create_file_writer(str(root / run))
        with writer.as_default():
            prev1 = prev2 = None
            for step in range(start + steps):
                learned = min(1.0, (step + 1) / 8)
                k1 = edges1 * learned + noise1 * (1 - learned) ** 2
                k2 = edges2 * learned + noise2 * (1 - learned) ** 2
                if step >= start:
                    a1 = np.maximum(_conv(probes, k1) - 0.2, 0)  # [4, 28, 28, 16]
                    a1[..., 13:] = 0  # three dead filters
                    a2 = np.maximum(_conv(a1[:, ::2, ::2], k2), 0)  # [4, 12, 12, 32]
                    a2[..., [3, 17]] = 0
                    summary.filter_weights("conv2d", k1, step=step, previous=prev1)
                    summary.filter_weights("conv2d_1", k2, step=step, previous=prev2)
                    summary.feature_maps("conv2d", a1, step=step)
                    summary.feature_maps("conv2d_1", a2, step=step)
                prev1, prev2 = k1, k2
        writer.close()


# ---------------------------------------------------------------------------------------------
# Fixtures: logdir, TensorBoard, browser.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="session")
def logdir(tmp_path_factory):
    require_browser()
    root = tmp_path_factory.mktemp("cnnviz_e2e")
    write_logdir(root)
    return root


@pytest.fixture(scope="session")
def tensorboard(logdir):
    """A live TensorBoard on the logdir; yields its base URL."""
    yield from _serve(logdir, len(RUNS))


def _serve(logdir, runs: int):
    """Runs TensorBoard on `logdir` until it serves cnnviz tags of `runs` runs; yields its URL."""
    port = _free_port()
    log = open(logdir.parent / f"tensorboard-{logdir.name}.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited; see {log.name}")
            try:
                listing = _get_json(f"{base}/data/plugins_listing")
                tags = _get_json(f"{base}/data/plugin/cnnviz/tags")
                if listing.get("cnnviz", {}).get("enabled") and len(tags) == runs:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"tensorboard did not serve cnnviz data; see {log.name}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def browser(tensorboard, chromium):
    """The session's Chromium (`conftest.chromium`), once the tab's TensorBoard runs."""
    return chromium


class Tab:
    """TensorBoard's page with the CNN Viz tab open, and the tab's iframe."""

    def __init__(
        self, browser, base, hash_="", width=1280, height=800, scheme="light", ready=".cv-tile"
    ):
        self.context = browser.new_context(
            viewport={"width": width, "height": height}, color_scheme=scheme
        )
        self.page = self.context.new_page()
        self.base = base
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on(
            "console",
            lambda m: "Content Security Policy" in m.text and self.errors.append(m.text),
        )
        self.ready = ready  # what shows once the tab painted: a grid's tiles, a heatmap
        self.page.goto(f"{base}/#cnnviz{hash_}")
        self.frame = self._frame()

    def _frame(self):
        handle = self.page.wait_for_selector(
            "iframe[src*='plugin_entry']", state="attached", timeout=30000
        )
        frame = handle.content_frame()
        frame.wait_for_selector(f"{self.ready} canvas", timeout=30000)
        return frame

    def reload(self):
        self.page.reload()
        self.frame = self._frame()

    def painted(self, action: str) -> None:
        """Runs JS `action` in the frame and waits until the grid repaints."""
        self.frame.evaluate(
            """(action) => new Promise((resolve) => {
                 document.addEventListener("cnnviz:painted", resolve, { once: true });
                 (0, eval)(action);
               })""",
            action,
        )

    def wait_hash(self, key: str, value: str | None) -> None:
        """Waits until the iframe's hash (written 120 ms after a change) has `key=value`."""
        self.frame.wait_for_function(
            "([k, v]) => new URLSearchParams(location.hash.slice(1)).get(k) === v",
            arg=[key, value],
            timeout=10000,
        )

    def state(self) -> dict:
        return self.frame.evaluate(
            "Object.fromEntries(new URLSearchParams(location.hash.slice(1)))"
        )

    def step_label(self) -> str:
        return self.frame.inner_text(".cv-step-num")

    def tiles(self, run=None) -> list[int]:
        sel = f'.cv-panel[data-run="{run}"] .cv-tile' if run else ".cv-tile"
        return self.frame.eval_on_selector_all(sel, "ts => ts.map(t => Number(t.dataset.filter))")

    def wait_for(self, js: str, timeout=10000):
        self.frame.wait_for_function(js, timeout=timeout)

    def close(self):
        assert not self.dialogs, f"a dialog fired: {self.dialogs}"
        assert not self.errors, f"page errors or CSP violations: {self.errors}"
        self.context.close()


def _tabs(browser, base):
    """Yields a function that opens Tabs on `base`; closes them (checking for errors) after."""
    opened = []

    def make(**kwargs):
        t = Tab(browser, base, **kwargs)
        opened.append(t)
        return t

    yield make
    for t in opened:
        t.close()


@pytest.fixture
def tab(browser, tensorboard):
    yield from _tabs(browser, tensorboard)


def _stats(base, run, tag):
    return _get_json(f"{base}/data/plugin/cnnviz/stats?{urlencode({'run': run, 'tag': tag})}")


# ---------------------------------------------------------------------------------------------
# Tests.


def test_grid_shows_every_filter_pixel_exact_and_every_step(tab):
    """Every filter is a data-filter tile at an integer zoom; all 12 steps are reachable."""
    t = tab()
    frame = t.frame
    assert t.tiles() == list(range(16))
    # Pixel-exact: the canvas' CSS size is an integer multiple of its pixel size.
    size = frame.eval_on_selector(
        ".cv-tile canvas",
        "c => [c.width, c.height, c.getBoundingClientRect().width]",
    )
    assert size[0] == 5 and size[1] == 5  # one RGB 5×5 kernel per filter
    assert size[2] % size[0] == 0 and size[2] / size[0] >= 2
    assert (
        frame.eval_on_selector(".cv-tile canvas", "c => getComputedStyle(c).imageRendering")
        == "pixelated"
    )
    # The canvas holds real pixels.
    alpha = frame.eval_on_selector(
        ".cv-tile canvas", "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data[3]"
    )
    assert alpha == 255
    assert frame.get_attribute(".cv-slider", "max") == str(STEPS - 1)
    assert t.step_label() == f"Step {STEPS - 1}"  # opens at the latest step
    seen = set()
    frame.press(".cv-slider", "Home")
    t.wait_for("document.querySelector('.cv-step-num').textContent === 'Step 0'")
    for _ in range(STEPS + 2):
        seen.add(t.step_label())
        t.page.keyboard.press(".")
        frame.wait_for_timeout(40)
    seen.add(t.step_label())
    assert seen == {f"Step {s}" for s in range(STEPS)}
    assert len(seen) > 10


def test_keyboard_switches_run_layer_kind_step_and_inspects(tab):
    """Keyboard alone picks run, layer, kind, step, opens and closes the inspector, and plays."""
    t = tab()
    f = t.frame
    # Run: move to the other run with "only".
    f.focus('[data-action="only-run"][data-run="cifar/baseline"]')
    t.page.keyboard.press("Enter")
    t.wait_for(
        "[...document.querySelectorAll('.cv-panel')].map(p => p.dataset.run).join()"
        " === 'cifar/baseline'"
    )
    # Layer and kind.
    f.focus('[data-action="select-layer"][data-layer="conv2d_1"]')
    t.page.keyboard.press("Enter")
    t.wait_for("document.querySelectorAll('.cv-tile').length === 32")
    f.focus('[data-action="select-kind"][data-tag="conv2d_1/feature_maps"]')
    t.page.keyboard.press("Enter")
    t.wait_hash("kind", "feature_maps")
    # Step: arrow keys outside the grid.
    t.page.keyboard.press("ArrowLeft")
    t.page.keyboard.press("ArrowLeft")
    t.wait_for(f"document.querySelector('.cv-step-num').textContent === 'Step {STEPS - 3}'")
    t.wait_hash("step", str(STEPS - 3))
    # Into the grid, move with arrows, open with Enter.
    f.focus(".cv-tile[tabindex='0']")
    t.page.keyboard.press("ArrowRight")
    t.page.keyboard.press("ArrowRight")
    assert f.evaluate("document.activeElement.dataset.filter") == "2"
    t.page.keyboard.press("Enter")
    f.wait_for_selector(".cv-insp")
    t.wait_hash("filter", "2")
    titles = f.eval_on_selector_all(".cv-insp-section h3", "hs => hs.map(h => h.textContent)")
    assert any(x.startswith("Weights") for x in titles) and any(
        x.startswith("Feature maps") for x in titles
    )
    t.wait_for(
        "document.querySelectorAll('.cv-insp .cv-pic canvas').length >= 16 + 4"
    )  # 16 kernel slices + 4 maps
    t.wait_for("document.querySelectorAll('.cv-stat').length >= 6")
    t.wait_for(f"document.querySelectorAll('.cv-evo .cv-frame').length === {STEPS}")
    assert f.inner_text(".cv-insp-title").startswith("Filter 2")
    # Next filter with "]", back to the grid with Esc.
    t.page.keyboard.press("]")
    t.wait_hash("filter", "3")
    t.page.keyboard.press("Escape")
    t.wait_for("document.querySelector('.cv-inspector').hidden")
    t.wait_hash("filter", None)
    assert f.evaluate("document.activeElement.dataset.filter") == "3"
    # Play with P: the step advances on its own; P again pauses.
    t.page.keyboard.press("p")
    assert f.get_attribute('[data-action="play"]', "aria-label") == "Pause (P)"
    t.wait_for(
        f"document.querySelector('.cv-step-num').textContent !== 'Step {STEPS - 3}'", timeout=3000
    )
    t.page.keyboard.press("p")
    assert f.get_attribute('[data-action="play"]', "aria-label") == "Play (P)"


def test_sort_by_statistic_and_filter_dead(tab, tensorboard):
    """Sorting by weight norm follows the logged norms; 'dead only' keeps just dead filters."""
    t = tab(hash_="&p.cnnviz.run=cifar%2Fbaseline&p.cnnviz.layer=conv2d_1&p.cnnviz.kind=weights")
    f = t.frame
    f.select_option('[data-action="set-sort"]', "weights.l2_norm")
    t.wait_hash("sort", "weights.l2_norm")
    last = _stats(tensorboard, "cifar/baseline", "conv2d_1/weights")["series"][-1]
    norms = dict(zip(last["filters"], last["stats"]["l2_norm"], strict=True))
    expected = sorted(norms, key=lambda i: (-norms[i], i))
    assert t.tiles() == expected
    # Dead filters come from the feature maps of the same layer and step, even on the weights view.
    maps = _stats(tensorboard, "cifar/baseline", "conv2d_1/feature_maps")["series"][-1]
    dead = sorted(i for i, d in zip(maps["filters"], maps["stats"]["dead"], strict=True) if d)
    assert {3, 17} <= set(dead)  # zeroed by the logdir writer
    t.wait_for(f"document.querySelectorAll('.cv-tile.is-dead').length === {len(dead)}")
    f.select_option('[data-action="set-show"]', "dead")
    t.wait_for(f"document.querySelectorAll('.cv-tile').length === {len(dead)}")
    assert sorted(t.tiles()) == dead
    assert f.eval_on_selector_all(
        ".cv-tile", "ts => ts.every(t => t.classList.contains('is-dead'))"
    )


def test_compare_runs_side_by_side_and_names_stay_text(tab):
    """Two runs show side by side at one step; a run named in HTML shows as inert text."""
    t = tab()
    f = t.frame
    for run in RUNS:
        box = f.locator(f'input[data-action="toggle-run"][data-run="{run}"]')
        if not box.is_checked():
            box.check()
    t.wait_for(
        "document.querySelectorAll('.cv-panel').length === 2"
        " && document.querySelectorAll('.cv-panel .cv-tile').length === 32"
    )
    chips = f.eval_on_selector_all(".cv-panel .cv-chip", "cs => cs.map(c => c.textContent)")
    assert chips == [f"step {STEPS - 1}"] * 2
    t.page.keyboard.press(",")
    t.wait_for(
        "[...document.querySelectorAll('.cv-panel .cv-chip')]"
        ".every(c => c.textContent === 'step 10')"
    )
    titles = f.eval_on_selector_all(".cv-panel-title", "hs => hs.map(h => h.textContent)")
    assert sorted(titles) == sorted(RUNS)
    assert f.evaluate("document.querySelectorAll('img').length") == 0
    assert f.evaluate("document.body.innerHTML.includes('&lt;img src=x onerror=alert(1)&gt;')")
    assert not t.dialogs


def test_state_survives_reloads(tab):
    """The view lives in the URL: reloading the iframe or the whole TensorBoard page restores it."""
    t = tab()
    f = t.frame
    f.click('[data-action="select-layer"][data-layer="conv2d_1"]')
    f.click('[data-action="select-kind"][data-tag="conv2d_1/feature_maps"]')
    f.select_option('[data-action="set-sort"]', "feature_maps.zero_fraction")
    f.click('[data-action="set-norm"][data-value="layer"]')
    f.click('[data-action="set-cmap"][data-value="gray"]')
    f.click('[data-action="zoom-in"]')
    f.click('[data-action="prev"]')
    f.click('.cv-tile[data-filter="5"]')
    t.wait_hash("filter", "5")
    want = t.state()
    assert (
        want["layer"] == "conv2d_1"
        and want["kind"] == "feature_maps"
        and want["step"] == str(STEPS - 2)
    )
    assert (
        want["norm"] == "layer"
        and want["cmap"] == "gray"
        and want["sort"] == "feature_maps.zero_fraction"
    )
    assert "p.cnnviz.layer=conv2d_1" in t.page.url
    # Reload only the iframe.
    f.evaluate("window.__before_reload = true; setTimeout(() => location.reload(), 0)")
    f.wait_for_function(
        "!window.__before_reload && document.querySelector('.cv-tile canvas')", timeout=30000
    )
    t.frame.wait_for_selector(".cv-insp")
    assert t.state() == want
    # Reload TensorBoard itself: the state comes back from its URL (p.cnnviz.* keys).
    t.reload()
    t.frame.wait_for_selector(".cv-insp")
    assert t.state() == want
    f = t.frame
    assert f.inner_text(".cv-step-num") == f"Step {STEPS - 2}"
    assert f.get_attribute('[data-action="set-cmap"][data-value="gray"]', "aria-pressed") == "true"
    assert f.eval_on_selector(".cv-kind.is-active", "b => b.dataset.tag") == "conv2d_1/feature_maps"
    assert f.inner_text(".cv-insp-title").startswith("Filter 5")


def _shot(tab, name: str, width: int, height: int) -> np.ndarray:
    """Saves a screenshot of `tab`'s page under SCREENSHOTS and returns it, checked: a PNG of the
    viewport's size that shows something (not one flat colour)."""
    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    tab.page.screenshot(path=str(path))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (width, height), (name, image.size)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 5, f"{name} is blank"
    return pixels


def test_themes_narrow_window_and_screenshots(tab):
    """The tab follows TensorBoard's dark mode and fits a narrow window; screenshots show it."""
    both = "&p.cnnviz.run=" + quote("cifar/baseline," + EVIL, safe="")
    t = tab(hash_=both + "&p.cnnviz.layer=conv2d&p.cnnviz.kind=feature_maps&p.cnnviz.zoom=3")
    t.wait_for("document.querySelectorAll('.cv-panel .cv-tile').length === 32")
    t.frame.wait_for_timeout(300)
    light = _shot(t, "light.png", 1280, 800)
    # Dark mode: TensorBoard toggles a class on its body; the iframe follows.
    t.page.evaluate("document.body.classList.add('dark-mode')")
    t.wait_for("document.documentElement.classList.contains('cv-dark')")
    bg = t.frame.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg != "rgb(245, 246, 247)"
    t.page.evaluate("document.body.classList.remove('dark-mode')")
    t.wait_for("!document.documentElement.classList.contains('cv-dark')")

    d = tab(
        hash_="&p.cnnviz.run=cifar%2Fbaseline&p.cnnviz.layer=conv2d&p.cnnviz.kind=feature_maps&p.cnnviz.filter=4",
        scheme="dark",
    )
    d.page.evaluate("document.body.classList.add('dark-mode')")
    d.wait_for("document.documentElement.classList.contains('cv-dark')")
    d.wait_for(f"document.querySelectorAll('.cv-evo canvas').length >= {STEPS}")
    d.frame.wait_for_timeout(800)
    dark = _shot(d, "dark.png", 1280, 800)
    assert dark.mean() < light.mean() - 40, "the dark screenshot is not dark"

    i = tab(
        hash_="&p.cnnviz.run=cifar%2Fbaseline&p.cnnviz.layer=conv2d_1&p.cnnviz.kind=weights&p.cnnviz.sort=weights.l2_norm&p.cnnviz.desc=1&p.cnnviz.filter=9"
    )
    i.wait_for("document.querySelectorAll('.cv-insp .cv-pic canvas').length >= 16")
    i.wait_for(f"document.querySelectorAll('.cv-evo .cv-frame').length >= {STEPS}")
    i.frame.wait_for_timeout(800)
    _shot(i, "inspector.png", 1280, 800)

    n = tab(
        hash_="&p.cnnviz.run=cifar%2Fbaseline&p.cnnviz.layer=conv2d&p.cnnviz.kind=feature_maps",
        width=420,
        height=860,
    )
    width = n.frame.evaluate("document.documentElement.scrollWidth")
    assert width <= 420, "no horizontal scrolling in a narrow window"
    n.frame.wait_for_timeout(300)
    _shot(n, "narrow.png", 420, 860)


# ---------------------------------------------------------------------------------------------
# Plans: a run whose callbacks skipped pictures under a time budget, next to one that drew all.

FULL, BUDGET = "full", "<b>budget</b>"
SLOW = "<em>too slow</em> for the 5% budget"  # reasons are data too: shown as text
NO_MAPS = "no probe images"


def write_plan_logdir(root: pathlib.Path, steps: int = 4) -> None:
    """`full` draws everything at every step; `<b>budget</b>` skips conv2d's feature maps at step
    1 and leaves out conv2d_1's feature maps and both layers' activation maximization."""
    import tensorflow as tf

    from tb_cnnviz import summary

    write_logdir(root, runs=[FULL], steps=steps)
    rng = np.random.default_rng(7)
    probes = _probe_images(rng)
    kernels = _edge_kernels(rng, 5, 3, 16), _edge_kernels(rng, 3, 16, 32)
    left_out = {"conv2d/actmax": SLOW, "conv2d_1/actmax": SLOW, "conv2d_1/feature_maps": NO_MAPS}
    with tf.summary.create_file_writer(str(root / BUDGET)).as_default():
        for step in range(steps):
            summary.filter_weights("conv2d", kernels[0], step=step)
            summary.filter_weights("conv2d_1", kernels[1], step=step)
            drawn = ["conv2d/weights", "conv2d_1/weights"]
            skipped = dict(left_out)
            if step == 1:
                skipped["conv2d/feature_maps"] = SLOW
            else:
                summary.feature_maps("conv2d", np.maximum(_conv(probes, kernels[0]), 0), step=step)
                drawn.append("conv2d/feature_maps")
            cost = {"seconds": 0.25, "bytes": 150 * 1024}
            costs = dict.fromkeys(drawn, cost)
            passes = {} if step == 1 else {"feature_maps": 0.1}  # the probe images' pass
            summary.write_plan(
                "cnnviz", step, drawn=drawn, skipped=skipped, costs=costs, passes=passes,
                budget=0.05,
            )  # fmt: skip


def _write_and_serve(tmp_path_factory, name: str, write, runs: int):
    """Writes a new logdir with `write(root)` and serves it (see `_serve`)."""
    require_browser()
    root = tmp_path_factory.mktemp(name)
    write(root)
    yield from _serve(root, runs)


@pytest.fixture(scope="session")
def plan_tensorboard(tmp_path_factory):
    """A live TensorBoard on the plan logdir; yields its base URL."""
    yield from _write_and_serve(tmp_path_factory, "cnnviz_plans", write_plan_logdir, 2)


@pytest.fixture
def plan_tab(browser, plan_tensorboard):
    yield from _tabs(browser, plan_tensorboard)


SHOWN_TILES = ".cv-grid:not([hidden]) .cv-tile"  # a panel showing a message hides its grid
BOTH = "&p.cnnviz.run=" + quote(f"{BUDGET},{FULL}", safe="")


def _messages(t, run):
    """The texts of the message card in a run's panel ('' when it shows a grid)."""
    return t.frame.eval_on_selector(
        f'.cv-panel[data-run="{run}"]',
        "p => [...p.querySelectorAll('.cv-message p')].map(e => e.textContent).join(' | ')",
    )


def test_a_step_a_run_did_not_draw_says_why_and_offers_the_nearest(plan_tab):
    """Compared at a step one run skipped, that run's panel says why and jumps by keyboard."""
    t = plan_tab(hash_=BOTH + "&p.cnnviz.layer=conv2d&p.cnnviz.kind=feature_maps&p.cnnviz.step=1")
    t.wait_for(
        "document.querySelectorAll('.cv-panel').length === 2"
        " && document.querySelector('.cv-panel .cv-message-title')"
    )
    assert t.tiles(FULL) == list(range(16))
    assert t.tiles(BUDGET) == []  # never another step's (stale) grid
    assert t.frame.is_hidden(f'.cv-panel[data-run="{BUDGET}"] .cv-grid')
    assert _messages(t, BUDGET) == (
        f"conv2d · Feature maps was not drawn at step 1 in this run | {SLOW}."
        " Last drawn at step 3, for 0.25 s · 150 KB, and 0.10 s of the probe images' pass."
    )
    chips = t.frame.eval_on_selector_all(".cv-panel .cv-chip", "cs => cs.map(c => c.textContent)")
    assert chips == ["step 1", "step 1"]
    _shot(t, "skipped-light.png", 1280, 800)
    t.page.evaluate("document.body.classList.add('dark-mode')")
    t.wait_for("document.documentElement.classList.contains('cv-dark')")
    t.frame.wait_for_timeout(200)
    _shot(t, "skipped-dark.png", 1280, 800)
    go = f'.cv-panel[data-run="{BUDGET}"] [data-action="goto-step"]'
    assert t.frame.inner_text(go) == "Go to step 0, the nearest drawn"
    t.frame.focus(go)
    t.page.keyboard.press("Enter")
    t.wait_hash("step", "0")
    t.wait_for(f"document.querySelectorAll('{SHOWN_TILES}').length === 32")
    assert _messages(t, BUDGET) == ""
    # The inspector says what this step's drawing cost (the plan record's costs), and the pass
    # of the probe images it needed, which the record counts once for the kind.
    t.frame.click(f'.cv-panel[data-run="{BUDGET}"] .cv-tile')
    t.wait_for("document.querySelector('[data-cost]')?.textContent.includes('drawn in')")
    assert t.frame.inner_text("[data-cost]") == (
        "· drawn in 0.25 s · 150 KB, and 0.10 s of the probe images' pass"
    )


def test_kinds_a_run_left_out_are_named_with_their_reason(plan_tab):
    """A run's panel lists what it left out; picking a left-out kind shows why, never a grid."""
    t = plan_tab(hash_=BOTH + "&p.cnnviz.layer=conv2d_1&p.cnnviz.kind=weights")
    t.wait_for("document.querySelectorAll('.cv-panel .cv-tile').length === 64")
    notes = t.frame.eval_on_selector(
        f'.cv-panel[data-run="{BUDGET}"]',
        "p => [...p.querySelectorAll('.cv-note--left')].map(n => n.textContent)",
    )
    assert notes == [
        f"Not drawn in this run: conv2d_1 · Feature maps — {NO_MAPS}",
        f"Not drawn in this run: conv2d, conv2d_1 · Activation max — {SLOW}",
    ]
    assert (
        t.frame.eval_on_selector_all(
            f'.cv-panel[data-run="{FULL}"] .cv-note--left', "n => n.length"
        )
        == 0
    )
    # Activation max exists in no run: its tab is offered, marked, and says why when picked.
    tab = '[data-action="select-kind"][data-tag="conv2d_1/actmax"]'
    assert t.frame.get_attribute(tab, "title") == f"Not drawn: {SLOW}"
    assert "is-left" in t.frame.get_attribute(tab, "class")
    t.frame.focus(tab)
    t.page.keyboard.press("Enter")
    t.wait_hash("kind", "actmax")
    t.wait_for("document.querySelectorAll('.cv-panel .cv-message').length === 2")
    assert _messages(t, BUDGET) == f"conv2d_1 · Activation max was not drawn in this run | {SLOW}"
    assert _messages(t, FULL) == "No Activation max of conv2d_1 in this run"
    assert t.frame.evaluate(f"document.querySelectorAll('{SHOWN_TILES}').length") == 0
    assert t.step_label() == "No steps"
    _shot(t, "left-out-light.png", 1280, 800)
    # The other run drew conv2d_1's feature maps; this one left them out.
    t.frame.click('[data-action="select-kind"][data-tag="conv2d_1/feature_maps"]')
    t.wait_for(f"document.querySelectorAll('{SHOWN_TILES}').length === 32")
    assert _messages(t, BUDGET) == f"conv2d_1 · Feature maps was not drawn in this run | {NO_MAPS}"
    t.page.evaluate("document.body.classList.add('dark-mode')")
    t.wait_for("document.documentElement.classList.contains('cv-dark')")
    t.frame.wait_for_timeout(200)
    _shot(t, "left-out-dark.png", 1280, 800)
    t.page.set_viewport_size({"width": 420, "height": 860})
    t.frame.wait_for_timeout(200)
    assert t.frame.evaluate("document.documentElement.scrollWidth") <= 420
    _shot(t, "left-out-narrow-dark.png", 420, 860)
    html = t.frame.evaluate("document.body.innerHTML")
    assert "&lt;em&gt;too slow&lt;/em&gt;" in html and "&lt;b&gt;budget&lt;/b&gt;" in html
    assert "<em>" not in html and "<b>budget" not in html


# ---------------------------------------------------------------------------------------------
# Comparing runs: reference images, dataset examples, filter alignment, CKA similarity.

LR3, LR4, OTHER, NONE = "lr_1e-3", "lr_1e-4", "other_refs", "no_refs"
CMP_STEPS = 4
P1 = np.random.default_rng(5).permutation(16)  # lr_1e-4's conv2d filter j is lr_1e-3's P1[j]
P2 = np.random.default_rng(6).permutation(32)


def _reference_pictures(n: int, seed: int) -> np.ndarray:
    """`n` 32×32 RGB pictures: discs, stripes and gradients at random places and colours."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32] / 31.0
    out = np.empty((n, 32, 32, 3), np.float32)
    for i in range(n):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        disc = (x - cx) ** 2 + (y - cy) ** 2 < r**2
        theta = rng.uniform(0, np.pi)
        stripes = np.sin((x * np.cos(theta) + y * np.sin(theta)) * rng.uniform(8, 30)) > 0
        base = [stripes, disc, x * y][i % 3].astype(np.float32)
        out[i] = base[..., None] * rng.uniform(0.2, 1.0, 3) + rng.normal(0, 0.05, (32, 32, 3))
    return out


def write_compare_logdir(root: pathlib.Path) -> None:
    """Four runs of two conv layers over CMP_STEPS steps, each with weights and feature maps:
    `lr_1e-4` computes the same function as `lr_1e-3` with both layers' filters permuted (so
    alignment must undo the permutation), `other_refs` logs other reference images, and
    `no_refs` none."""
    import tensorflow as tf

    from tb_cnnviz import summary

    refs = _reference_pictures(48, seed=11)
    p1, p2 = P1, P2
    rng = np.random.default_rng(0)
    edges1, noise1 = _edge_kernels(rng, 5, 3, 16), rng.normal(0, 0.6, (5, 5, 3, 16))
    edges2, noise2 = _edge_kernels(rng, 3, 16, 32) * 0.3, rng.normal(0, 0.15, (3, 3, 16, 32))
    probes = _probe_images(rng)
    for run, images, perm in [
        (LR3, refs, False),
        (LR4, refs, True),
        (OTHER, _reference_pictures(48, seed=12), False),
        (NONE, None, False),
    ]:
        with tf.summary.create_file_writer(str(root / run)).as_default():
            for step in range(CMP_STEPS):
                learned = (step + 1) / CMP_STEPS
                k1 = (edges1 * learned + noise1 * (1 - learned) ** 2).astype(np.float32)
                k2 = (edges2 * learned + noise2 * (1 - learned) ** 2).astype(np.float32)
                if perm:
                    k1, k2 = k1[..., p1], k2[:, :, p1, :][..., p2]

                def layers(x, k1=k1, k2=k2):
                    a1 = np.maximum(_conv(x, k1) - 0.1, 0)
                    return a1, np.maximum(_conv(a1[:, ::2, ::2], k2), 0)

                summary.filter_weights("conv2d", k1, step=step)
                summary.filter_weights("conv2d_1", k2, step=step)
                for name, maps in zip(("conv2d", "conv2d_1"), layers(probes), strict=True):
                    summary.feature_maps(name, maps, step=step)
                if images is None:
                    continue
                if step == 0:
                    summary.reference_images(images, step=0)
                for name, maps in zip(("conv2d", "conv2d_1"), layers(images), strict=True):
                    summary.responses(name, maps, step=step, reference_images=images)


@pytest.fixture(scope="session")
def compare_tensorboard(tmp_path_factory):
    """A live TensorBoard on the comparison logdir; yields its base URL."""
    yield from _write_and_serve(tmp_path_factory, "cnnviz_compare", write_compare_logdir, 4)


@pytest.fixture
def compare_tab(browser, compare_tensorboard):
    yield from _tabs(browser, compare_tensorboard)


def _hash(runs, **state) -> str:
    pairs = [("run", ",".join(runs)), *state.items()]
    return "".join(f"&p.cnnviz.{k}={quote(str(v), safe='')}" for k, v in pairs)


def _texts(t, selector: str) -> list[str]:
    return t.frame.eval_on_selector_all(selector, "es => es.map(e => e.textContent)")


def _section(title: str) -> str:
    """JS for the inspector section whose heading starts with `title` (or undefined)."""
    return (
        "[...document.querySelectorAll('.cv-insp-section')]"
        f".find(s => s.querySelector('h3').textContent.startsWith({json.dumps(title)}))"
    )


def _tile_pixels(t, run: str) -> list[str]:
    """The pixels of a run's tiles in their shown order, as data URLs."""
    return t.frame.eval_on_selector_all(
        f'.cv-panel[data-run="{run}"] .cv-tile canvas', "cs => cs.map(c => c.toDataURL())"
    )


def test_dataset_examples_in_the_grid_and_the_inspector(compare_tab, compare_tensorboard):
    """The Examples kind shows each filter's best reference crop; the inspector its top 8."""
    t = compare_tab(hash_=_hash([LR3], layer="conv2d", kind="responses"))
    body = _get_json(f"{compare_tensorboard}/data/plugin/cnnviz/examples?run={LR3}&layer=conv2d")
    assert t.tiles() == list(range(16))
    assert _texts(t, ".cv-tile-val") == [f"#{e[0][0]}" for e in body["examples"]]
    assert len(set(_tile_pixels(t, LR3))) > 8  # real, different crops
    assert "reference images" in t.frame.inner_text(".cv-notes")
    t.frame.focus('.cv-tile[data-filter="5"]')
    t.page.keyboard.press("Enter")
    section = _section("Dataset examples")
    # Each a button that probes it, laid out as a figure with its caption.
    t.wait_for(f"{section}?.querySelectorAll('button.cv-pic').length === 8")
    captions = f"[...{section}.querySelectorAll('.cv-pic-cap')].map(f => f.textContent)"
    labels = t.frame.evaluate(captions)
    assert [label.split(" · ")[0] for label in labels] == [f"#{e[0]}" for e in body["examples"][5]]
    assert "top 8 of 48 reference images" in t.frame.evaluate(f"{section}.textContent")
    _shot(t, "examples-light.png", 1280, 800)
    # A run without reference images: Examples is disabled; the inspector says how to log them.
    t2 = compare_tab(hash_=_hash([NONE], layer="conv2d", kind="weights", filter=2))
    t2.wait_for("document.querySelector('.cv-inspector:not([hidden])')")
    assert t2.frame.is_disabled('[data-action="select-kind"][data-tag="conv2d/responses"]')
    t2.wait_for("document.querySelector('.cv-inspector').textContent.includes('reference_images')")
    # Opened from a link, before the grid knows the order: the ‹ › buttons still work.
    assert not t2.frame.is_disabled('[data-action="prev-filter"]')
    t2.frame.click('[data-action="next-filter"]')
    t2.wait_hash("filter", "3")


def test_alignment_lines_up_a_permuted_run_tile_for_tile(compare_tab):
    """Aligned to lr_1e-3, lr_1e-4 (its filters permuted) shows the very same pictures in order."""
    t = compare_tab(hash_=_hash([LR3, LR4], layer="conv2d", kind="weights"))
    assert t.tiles(LR4) == list(range(16))
    # Inspecting lr_1e-3's filter 3, then aligning: the inspector shows its match in lr_1e-4.
    t.frame.click(f'.cv-panel[data-run="{LR3}"] .cv-tile[data-filter="3"]')
    t.frame.click('[data-action="toggle-align"]')
    t.wait_hash("align", "1")
    inverse = [int(j) for j in np.argsort(P1)]  # lr_1e-3's filter i is lr_1e-4's inverse[i]
    match = _section("Match")
    t.wait_for(f"{match}?.querySelectorAll('.cv-frame canvas').length === {CMP_STEPS}")
    text = t.frame.evaluate(f"{match}.textContent")
    assert f"in {LR4} · filter {inverse[3]} · correlation 1.00" in text
    first = f"document.querySelector('.cv-panel[data-run=\"{LR4}\"] .cv-tile').dataset.filter"
    t.wait_for(f"{first} === '{inverse[0]}'")
    assert t.tiles(LR4) == inverse
    assert _tile_pixels(t, LR4) == _tile_pixels(t, LR3)
    captions = _texts(t, f'.cv-panel[data-run="{LR4}"] .cv-tile-val')
    assert captions == [f"↔ {i} · 1.00" for i in range(16)]
    assert "Aligned to lr_1e-3" in t.frame.inner_text(f'.cv-panel[data-run="{LR4}"] .cv-notes')
    _shot(t, "alignment-light.png", 1280, 800)
    # Sorting the first run reorders the second the same way.
    t.frame.select_option('[data-action="set-sort"]', "weights.l2_norm")
    t.wait_for(
        f"document.querySelector('.cv-panel[data-run=\"{LR3}\"] .cv-tile-val').textContent !== ''"
    )
    t.frame.wait_for_timeout(300)
    assert t.tiles(LR4) == [inverse[i] for i in t.tiles(LR3)]
    # Showing only dead filters holds for the aligned run too (none is dead in either).
    t.frame.select_option('[data-action="set-show"]', "dead")
    t.wait_for("document.querySelectorAll('.cv-panel .cv-message').length === 2")
    assert _messages(t, LR4) == _messages(t, LR3) == "No filter is dead at step 3"
    # Other reference images, or none: the panel says why instead of aligning.
    t2 = compare_tab(hash_=_hash([LR3, OTHER, NONE], layer="conv2d", kind="weights", align=1))
    notes = f'.cv-panel[data-run="{OTHER}"] .cv-notes'
    t2.wait_for(f"document.querySelector('{notes}')?.textContent.includes('Not aligned')")
    assert "different reference images" in t2.frame.inner_text(notes)
    none = t2.frame.inner_text(f'.cv-panel[data-run="{NONE}"] .cv-notes')
    assert "Not aligned: no reference images in no_refs" in none
    assert "reference_images=x_val[:256]" in none
    assert t2.tiles(OTHER) == list(range(16))


def test_similarity_view_by_keyboard_in_every_mode(compare_tab, compare_tensorboard):
    """V opens the CKA heatmaps; arrows read each cell as /similarity computes it; Enter goes."""
    api = f"{compare_tensorboard}/data/plugin/cnnviz/similarity"
    t = compare_tab(hash_=_hash([LR3, LR4, OTHER], layer="conv2d_1", kind="weights"))
    t.frame.focus(".cv-slider")
    t.page.keyboard.press("v")
    t.wait_hash("view", "similarity")
    t.wait_for("document.querySelectorAll('.cv-heat canvas').length === 3")
    time = _get_json(f"{api}?mode=time&run={LR3}&layer=conv2d_1")
    canvas = ".cv-heat canvas"
    t.frame.focus(canvas)
    assert t.frame.inner_text(".cv-heat-out") == "step 3 × step 3 · CKA 1.000"
    t.page.keyboard.press("Home")
    t.page.keyboard.press("ArrowRight")
    assert t.frame.inner_text(".cv-heat-out") == f"step 0 × step 1 · CKA {time['matrix'][0][1]:.3f}"
    t.page.keyboard.press("Enter")
    t.wait_hash("step", "1")
    _shot(t, "similarity-time-light.png", 1280, 800)
    # Runs × runs: a heatmap per layer; other reference images leave empty cells, and say so.
    t.frame.click('[data-action="set-sim"][data-value="runs"]')
    t.wait_for("document.querySelectorAll('.cv-heat canvas').length === 2")
    runs = _get_json(f"{api}?mode=runs&runs={LR3},{LR4},{OTHER}&step=1")
    assert _texts(t, ".cv-panel-title") == runs["layers"] == ["conv2d", "conv2d_1"]
    assert "different reference images" in t.frame.inner_text(".cv-panels .cv-note")
    t.frame.focus(canvas)
    t.page.keyboard.press("Home")
    t.page.keyboard.press("ArrowDown")
    assert t.frame.inner_text(".cv-heat-out") == f"{LR4} × {LR3} · CKA 1.000"
    t.page.keyboard.press("ArrowDown")
    assert t.frame.inner_text(".cv-heat-out") == f"{OTHER} × {LR3} · CKA none (not comparable)"
    assert runs["matrices"][0][2][0] is None
    t.page.evaluate("document.body.classList.add('dark-mode')")
    t.wait_for("document.documentElement.classList.contains('cv-dark')")
    t.frame.wait_for_timeout(200)
    _shot(t, "similarity-runs-dark.png", 1280, 800)
    # Layers × layers of each run; Enter on a cell opens that layer's filters.
    t.frame.click('[data-action="set-sim"][data-value="layers"]')
    t.wait_for("document.querySelectorAll('.cv-heat canvas').length === 3")
    layers = _get_json(f"{api}?mode=layers&run={LR3}&step=1")
    t.frame.focus(canvas)
    t.page.keyboard.press("Home")
    t.page.keyboard.press("ArrowRight")
    cka = layers["matrix"][0][1]
    assert t.frame.inner_text(".cv-heat-out") == f"conv2d × conv2d_1 · CKA {cka:.3f}"
    t.page.keyboard.press("Enter")
    t.wait_hash("view", None)
    t.wait_for("document.querySelectorAll('.cv-tile').length === 3 * 32")
    # A run without reference images among them is named, with how to log them.
    t.frame.click(f'[data-action="toggle-run"][data-run="{NONE}"]')
    t.frame.click('[data-action="set-view"][data-value="similarity"]')
    t.wait_for("document.querySelector('.cv-panels')?.textContent.includes('in no_refs')")
    assert "No reference images in no_refs" in t.frame.inner_text(".cv-panels")
    # No reference images at all: the view says how to log them.
    t2 = compare_tab(hash_=_hash([NONE], layer="conv2d", kind="weights"))
    t2.frame.focus(".cv-slider")
    t2.page.keyboard.press("v")
    t2.wait_for("document.querySelector('.cv-message-title')?.textContent.includes('No reference')")
    assert "reference_images=x_val[:256]" in t2.frame.inner_text(".cv-code")


def test_heatmaps_label_columns_and_scale_colours_to_the_data(compare_tab, compare_tensorboard):
    """Rows and columns are labelled; colours span the data's range; 0-1 is one click away."""
    api = f"{compare_tensorboard}/data/plugin/cnnviz/similarity"
    state = {"layer": "conv2d_1", "kind": "weights", "view": "similarity"}
    t = compare_tab(hash_=_hash([LR3], **state), ready=".cv-heat")
    t.wait_for("document.querySelectorAll('.cv-heat canvas').length === 1")
    body = _get_json(f"{api}?mode=time&run={LR3}&layer=conv2d_1")
    steps = [f"step {s}" for s in body["steps"]]
    assert _texts(t, ".cv-heat-rows span") == _texts(t, ".cv-heat-cols span") == steps
    m = body["matrix"]
    off = [m[i][j] for i in range(len(m)) for j in range(len(m)) if i != j]
    assert max(off) - min(off) < 0.5  # a range 0-1 would squeeze into a few colours
    ends = ".cv-heat .cv-legend-ends span"
    assert _texts(t, ends) == [f"{min(off):.3f}", "CKA", f"{max(off):.3f}"]
    pixels = "document.querySelector('.cv-heat canvas').toDataURL()"
    data_range = t.frame.evaluate(pixels)
    t.frame.click('[data-action="set-hscale"][data-value="unit"]')
    t.wait_hash("hscale", "unit")
    t.wait_for("document.querySelector('.cv-heat .cv-legend-ends span').textContent === '0.000'")
    assert _texts(t, ends) == ["0.000", "CKA", "1.000"]
    assert t.frame.evaluate(pixels) != data_range
    # The Display controls act on filter grids: hidden here, back in the Filters view.
    assert not t.frame.is_visible(".cv-display")
    t.frame.click('[data-action="set-view"][data-value="filters"]')
    t.wait_for("document.querySelector('.cv-display').offsetParent !== null")


def test_inspector_survives_sorting_the_view_switch_and_tensorboards_url(
    compare_tab, compare_tensorboard
):
    """‹ › follow a re-sorted grid; V and back keeps the inspected filter; the parent URL rules."""
    last = _stats(compare_tensorboard, LR3, "conv2d/weights")["series"][-1]
    norms = dict(zip(last["filters"], last["stats"]["l2_norm"], strict=True))
    order = sorted(norms, key=lambda i: (-norms[i], i))
    here = 8
    assert order[here - 1 : here + 2] != [here - 1, here, here + 1]  # sorting moves them
    t = compare_tab(hash_=_hash([LR3], layer="conv2d", kind="weights", filter=order[here]))
    t.wait_for("document.querySelector('.cv-inspector:not([hidden])')")
    t.frame.select_option('[data-action="set-sort"]', "weights.l2_norm")
    t.wait_hash("sort", "weights.l2_norm")
    t.wait_for(f"document.querySelector('.cv-tile').dataset.filter === '{order[0]}'")
    assert t.tiles() == order
    t.frame.click('[data-action="next-filter"]')
    t.wait_hash("filter", str(order[here + 1]))
    t.frame.click('[data-action="prev-filter"]')
    t.frame.click('[data-action="prev-filter"]')
    t.wait_hash("filter", str(order[here - 1]))
    # V to the Similarity view and back: the inspector comes back on the same filter.
    t.frame.focus(".cv-slider")
    t.page.keyboard.press("v")
    t.wait_hash("view", "similarity")
    assert t.frame.is_hidden(".cv-inspector")
    t.page.keyboard.press("v")
    t.wait_hash("view", None)
    t.wait_for("document.querySelector('.cv-inspector:not([hidden])')")
    assert t.state()["filter"] == str(order[here - 1])
    assert t.frame.inner_text(".cv-insp-title").startswith(f"Filter {order[here - 1]}")
    # TensorBoard's URL changed without a reload (a pasted link, history): the tab follows.
    frame_url = t.frame.evaluate("location.href")
    t.page.evaluate(
        "h => { location.hash = h }", "#cnnviz" + _hash([LR3], layer="conv2d_1", kind="weights")
    )
    t.wait_hash("layer", "conv2d_1")
    t.wait_for("document.querySelectorAll('.cv-tile').length === 32")
    assert t.frame.evaluate("location.href").split("#")[0] == frame_url.split("#")[0]
    assert t.frame.is_hidden(".cv-inspector")


def test_refusals_the_tags_already_tell_are_not_requested(compare_tab):
    """Runs without comparable references show notes, and the console lists no failed request."""
    t = compare_tab(hash_=_hash([LR3, OTHER, NONE], layer="conv2d", kind="weights", align=1))
    failed: list[str] = []
    t.page.on("console", lambda m: m.type == "error" and failed.append(m.text))
    t.page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    t.reload()
    notes = f'.cv-panel[data-run="{NONE}"] .cv-notes'
    t.wait_for(f"document.querySelector('{notes}')?.textContent.includes('Not aligned')")
    t.frame.click('[data-action="set-view"][data-value="similarity"]')
    t.wait_for("document.querySelector('.cv-panels')?.textContent.includes('in no_refs')")
    for mode in ("runs", "layers"):
        t.frame.click(f'[data-action="set-sim"][data-value="{mode}"]')
        t.wait_for("document.querySelectorAll('.cv-heat canvas').length >= 1")
    t.frame.wait_for_timeout(500)
    assert failed == []


# ---------------------------------------------------------------------------------------------
# A real model's layer list: network order, groups, search, kinds drawn at the step.

DEEP, LEGACY = "mobilenet", "written_before_order"
# The order a forward pass meets them, as MobileNetV2 and a custom residual block name them:
# sorted by name, `Conv1` would come after `block_2_project`.
NETWORK = [
    "Conv1",
    "expanded_conv_depthwise",
    "expanded_conv_project",
    "block_1_expand",
    "block_1_depthwise",
    "block_1_project",
    "block_2_expand",
    "block_2_depthwise",
    "block_2_project",
    "res1/c1",
    "res1/c2",
    "Conv_1",
]


def write_deep_logdir(root: pathlib.Path) -> None:
    """`mobilenet`: weights of the NETWORK layers at steps 0 and 1, Conv1's feature maps at step
    1 only, and a plan recording the network order; `written_before_order`: the same layers and
    no plan (a run logged before the callbacks recorded the order)."""
    import tensorflow as tf

    from tb_cnnviz import summary

    rng = np.random.default_rng(3)
    probes = _probe_images(rng)
    kernel = _edge_kernels(rng, 3, 3, 8)
    for run in (DEEP, LEGACY):
        with tf.summary.create_file_writer(str(root / run)).as_default():
            for step in range(2):
                for name in NETWORK:
                    summary.filter_weights(name, kernel * (1 + step), step=step)
                drawn = [f"{n}/weights" for n in NETWORK]
                if step == 1:
                    summary.feature_maps("Conv1", np.maximum(_conv(probes, kernel), 0), step=step)
                    drawn.append("Conv1/feature_maps")
                if run == DEEP:
                    summary.write_plan("cnnviz", step, drawn=drawn, layers=NETWORK)


@pytest.fixture(scope="session")
def deep_tensorboard(tmp_path_factory):
    """A live TensorBoard on the deep-model logdir; yields its base URL."""
    yield from _write_and_serve(tmp_path_factory, "cnnviz_deep", write_deep_logdir, 2)


@pytest.fixture
def deep_tab(browser, deep_tensorboard):
    yield from _tabs(browser, deep_tensorboard)


LAYER_NAMES = "[...document.querySelectorAll('.cv-layer .cv-layer-name')].map(e => e.textContent)"
OPEN_GROUPS = "[...document.querySelectorAll('.cv-group[open]')].map(g => g.dataset.group)"


def test_layers_come_in_network_order_and_the_tab_opens_on_the_first(deep_tab):
    """The list follows the recorded forward order and opens on Conv1; old runs sort by name."""
    t = deep_tab(hash_=_hash([DEEP]))
    assert t.state()["layer"] == "Conv1"
    assert t.frame.evaluate(LAYER_NAMES) == NETWORK
    assert t.frame.inner_text(".cv-layer.is-active .cv-layer-name") == "Conv1"
    # A run written before the order was recorded: natural name order, numbers as numbers.
    t2 = deep_tab(hash_=_hash([LEGACY]))
    names = t2.frame.evaluate(LAYER_NAMES)
    assert sorted(names) == sorted(NETWORK)
    assert names.index("block_1_project") < names.index("block_2_expand")
    assert names.index("res1/c1") < names.index("res1/c2")


def test_layer_groups_fold_and_stay_open_as_the_user_left_them(deep_tab):
    """Blocks and nested layers fold into groups; the active layer's opens; a click holds."""
    t = deep_tab(hash_=_hash([DEEP], kind="weights", step=1))
    groups = t.frame.eval_on_selector_all(
        ".cv-group",
        "gs => gs.map(g => [g.dataset.group, g.querySelectorAll('.cv-layer').length])",
    )
    assert groups == [["expanded_conv", 2], ["block_1", 3], ["block_2", 3], ["res1", 2]]
    assert t.frame.evaluate(OPEN_GROUPS) == []  # Conv1 is active; every group folded
    assert t.frame.is_visible('.cv-layer[data-layer="Conv1"]')
    assert not t.frame.is_visible('.cv-layer[data-layer="block_1_expand"]')
    assert "3 layers" in t.frame.inner_text('.cv-group[data-group="block_1"] summary')
    # Opening a group by hand survives a repaint (a step switch re-renders the list).
    t.frame.click('.cv-group[data-group="res1"] summary')
    t.frame.click('.cv-layer[data-layer="res1/c2"]')
    t.wait_hash("layer", "res1/c2")
    t.painted("document.querySelector('[data-action=\"prev\"]').click()")
    assert t.frame.evaluate(OPEN_GROUPS) == ["res1"]
    # The active layer's group opens by itself (here from a link).
    t2 = deep_tab(hash_=_hash([DEEP], layer="block_2_depthwise"))
    assert t2.frame.evaluate(OPEN_GROUPS) == ["block_2"]
    _shot(t2, "layers-grouped-light.png", 1280, 800)
    # ... and folds again when another layer is chosen (it was not opened by hand).
    t2.frame.click('.cv-layer[data-layer="Conv1"]')
    t2.wait_hash("layer", "Conv1")
    t2.wait_for(f"{OPEN_GROUPS}.length === 0")


def test_layer_search_narrows_opens_and_clears(deep_tab):
    """Typing part of a name lists the matches (groups open); Enter opens the first; Esc clears."""
    t = deep_tab(hash_=_hash([DEEP]))
    find = ".cv-find"
    t.frame.fill(find, "PROJ")
    want = ["expanded_conv_project", "block_1_project", "block_2_project"]
    t.wait_for(f"{LAYER_NAMES}.length === 3")
    assert t.frame.evaluate(LAYER_NAMES) == want
    assert all(t.frame.is_visible(f'.cv-layer[data-layer="{n}"]') for n in want)
    t.frame.press(find, "Enter")
    t.wait_hash("layer", "expanded_conv_project")
    # Focus stays in the box, with what was typed, across the repaint.
    assert t.frame.evaluate("document.activeElement.classList.contains('cv-find')")
    assert t.frame.input_value(find) == "PROJ"
    t.frame.fill(find, "nothing_like_it")
    t.wait_for("document.querySelector('.cv-layers .cv-hint') !== null")
    assert t.frame.inner_text(".cv-layers .cv-hint") == "No layer matches “nothing_like_it”."
    t.frame.press(find, "Escape")
    t.wait_for(f"{LAYER_NAMES}.length === {len(NETWORK)}")
    assert t.frame.input_value(find) == ""


def test_layer_list_dims_the_kinds_not_drawn_at_this_step(deep_tab):
    """Conv1 lists weights and feature maps; feature maps are dimmed at step 0, lit at step 1."""
    t = deep_tab(hash_=_hash([DEEP], layer="Conv1", kind="weights", step=0))
    kinds = '.cv-layer[data-layer="Conv1"] .cv-layer-kinds span'
    off = f"[...document.querySelectorAll('{kinds}.cv-kind-off')].map(e => e.textContent)"
    assert _texts(t, kinds) == ["weights", "feature maps"]
    assert t.frame.evaluate(off) == ["feature maps"]
    t.painted("document.querySelector('[data-action=\"next\"]').click()")
    t.wait_for(f"{off}.length === 0")
    assert t.step_label() == "Step 1"


# Last in the file: it adds steps to a run that the tests above count.
def test_new_steps_appear_while_training_runs(tab, logdir):
    """Steps logged after the page opened appear on TensorBoard's reload, without a page reload."""
    t = tab(hash_="&p.cnnviz.run=cifar%2Fbaseline")
    assert t.frame.get_attribute(".cv-slider", "max") == str(STEPS - 1)
    write_logdir(logdir, runs=["cifar/baseline"], steps=2, start=STEPS)
    deadline = time.time() + 30
    while time.time() < deadline:
        t.page.click("app-header-reload button")
        try:
            t.wait_for(f"document.querySelector('.cv-slider').max === '{STEPS + 1}'", timeout=2000)
            break
        except Exception:
            continue
    assert t.frame.get_attribute(".cv-slider", "max") == str(STEPS + 1)
    # It was following the latest step, so it moves on to the new one.
    t.wait_for(f"document.querySelector('.cv-step-num').textContent === 'Step {STEPS + 1}'")


# ---------------------------------------------------------------------------------------------
# A long run, thinned: a real fit() whose CNNViz thins after 4 epochs.

THIN_DRAWN = [0, 1, 2, 3, 4, 6, 8, 12, 16, 19]  # Thinning(4) over 20 epochs, and the last


def write_thinned_logdir(root: pathlib.Path) -> None:
    """20 epochs of a small CNN with `CNNViz(thin_after=4)`: 10 drawn steps, 10 thinned."""
    from test_callbacks import fit, small_cnn

    from tb_cnnviz.callbacks import CNNViz

    viz = CNNViz(str(root), budget=None, actmax_freq=0, snapshots=None, thin_after=4)
    fit(small_cnn(), [viz], epochs=20)


@pytest.fixture(scope="session")
def thinned_tensorboard(tmp_path_factory):
    """A live TensorBoard on the thinned run; yields its base URL."""
    yield from _write_and_serve(tmp_path_factory, "cnnviz_thinned", write_thinned_logdir, 1)


def test_a_thinned_run_slides_over_drawn_steps_and_names_the_thinned_ones(
    browser, thinned_tensorboard
):
    """The slider holds the 10 drawn steps of a thinned 20-epoch fit() (its labels the real step
    numbers) and a note under it names the thinned spans and why, rather than showing gaps."""
    for t in _tabs(browser, thinned_tensorboard):
        t = t(hash_="&p.cnnviz.layer=conv_a&p.cnnviz.kind=weights")
        t.wait_for("!document.querySelector('.cv-step-note').hidden")
        slider = ".cv-slider"
        assert t.frame.get_attribute(slider, "max") == str(len(THIN_DRAWN) - 1)
        assert t.step_label() == "Step 19"
        assert t.frame.inner_text(".cv-step-of") == "10 of 10"
        note = t.frame.inner_text(".cv-step-note")
        assert note == (
            "Steps 5–7 thinned (2): every 2nd step is drawn from step 4 on (a long run) · "
            "steps 9–15 thinned (6): every 4th step is drawn from step 8 on (a long run) · +1 more"
        )
        title = t.frame.get_attribute(".cv-step-note", "title")
        assert title.endswith(
            "Steps 17–18 thinned (2): every 8th step is drawn from step 16 on (a long run)"
        )
        seen = [int(t.step_label().split()[1])]
        for _ in THIN_DRAWN[1:]:  # "‹" steps back through every drawn step, and only those
            t.frame.click('[data-action="prev"]')
            t.wait_for(f"document.querySelector('.cv-step-num').textContent !== 'Step {seen[-1]}'")
            seen.append(int(t.step_label().split()[1]))
        assert seen[::-1] == THIN_DRAWN
        t.wait_for("document.querySelectorAll('.cv-tile canvas').length === 4")
        assert t.tiles() == list(range(4))
        _shot(t, "thinned-light.png", 1280, 800)
