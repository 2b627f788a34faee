"""Takes the README's screenshots of the CNN Viz tab from `tb-cnnviz demo`.

Trains the demo's two runs (`lr_1e-3`, `lr_1e-4`) into a temporary logdir with
`tb-cnnviz demo --no-serve`, serves it with the real `tensorboard` on loopback, and saves with
Playwright and Debian's Chromium (`/usr/bin/chromium`):

    docs/screenshots/light.png      both runs side by side: conv1's feature maps of one probe image
    docs/screenshots/dark.png       TensorBoard's dark theme: conv3's activation maximization and
                                    the inspector on one of its filters
    docs/screenshots/inspector.png  the inspector on a conv1 filter, every section
    docs/screenshots/similarity.png the Similarity view: CKA of the two runs, layer by layer
    docs/screenshots/aligned.png    dark: conv2's dataset examples, lr_1e-4 aligned to lr_1e-3
    docs/screenshots/narrow.png     a 420-pixel-wide window
    docs/screenshots/probe.png      the Probe view: a new demo shape (drawn at 96x96, resized by
                                    the probe) through lr_1e-3 at its first and latest snapshot
                                    steps side by side, conv2's maps with their actmax images

Usage: .venv/bin/python scripts/screenshots.py [--epochs 4] [--samples 2000] [--logdir DIR]
[--only probe.png ...] (an existing `--logdir` holding both runs is served as it is, without
training again).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import tbserver  # noqa: E402  (tests/tbserver.py: a real TensorBoard on a free port)

CHROMIUM = "/usr/bin/chromium"
DEMO_RUNS = ("lr_1e-3", "lr_1e-4")
RUNS = tuple(f"{run}/train" for run in DEMO_RUNS)  # Keras' TensorBoard callback adds /train
TAG = "conv1/feature_maps"


def train(logdir: pathlib.Path, epochs: int, samples: int) -> None:
    """Runs `tb-cnnviz demo --no-serve` into `logdir`, unless both runs are there already."""
    if all((logdir / run).is_dir() for run in DEMO_RUNS):
        print(f"Using the runs in {logdir}")
        return
    program = os.path.join(os.path.dirname(sys.executable), "tb-cnnviz")
    argv = [program, "demo", "--no-serve", "--logdir", str(logdir)]
    subprocess.run([*argv, "--epochs", str(epochs), "--samples", str(samples)], check=True)


def wait_for_runs(port: int, timeout: float = 120.0) -> list[int]:
    """Waits until TensorBoard serves the same steps of TAG for both runs; returns them."""
    base = f"http://127.0.0.1:{port}/data/plugin/cnnviz"
    deadline = time.monotonic() + timeout
    while True:
        tags = tbserver.get_json(f"{base}/tags")
        steps = [tags.get(run, {}).get(TAG, {}).get("steps") for run in RUNS]
        if steps[0] and steps[0] == steps[1]:
            return steps[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"TensorBoard did not serve {TAG} of {RUNS}: {steps}")
        time.sleep(1.0)


BOTH = "&p.cnnviz.run=" + quote(",".join(RUNS), safe="")
ONE = "&p.cnnviz.run=" + quote(RUNS[0], safe="")
#: (file, TensorBoard URL hash after #cnnviz, viewport, dark, JS that is true once the tab is drawn)
SHOTS = [
    (
        "light.png",
        BOTH + "&p.cnnviz.layer=conv1&p.cnnviz.kind=feature_maps&p.cnnviz.slice=2",
        (1280, 800),
        False,
        "document.querySelectorAll('.cv-panel .cv-tile canvas').length === 64",
    ),
    (
        "dark.png",
        ONE + "&p.cnnviz.layer=conv3&p.cnnviz.kind=actmax&p.cnnviz.filter=3",
        (1280, 800),
        True,
        "document.querySelectorAll('.cv-evo canvas').length === 4"
        " && document.querySelectorAll('.cv-insp .cv-pic canvas').length >= 32",
    ),
    (
        "inspector.png",
        ONE + "&p.cnnviz.layer=conv1&p.cnnviz.kind=feature_maps&p.cnnviz.filter=18",
        (1280, 1100),  # tall enough for the pictures, dataset examples and statistics
        False,
        "document.querySelectorAll('.cv-evo canvas').length === 4"
        " && document.querySelectorAll('.cv-stat').length >= 6",
    ),
    (
        "similarity.png",
        BOTH + "&p.cnnviz.layer=conv1&p.cnnviz.view=similarity&p.cnnviz.sim=runs",
        (1280, 800),
        False,
        "document.querySelectorAll('.cv-heat canvas').length === 4",
    ),
    (
        "aligned.png",
        BOTH + "&p.cnnviz.layer=conv2&p.cnnviz.kind=responses&p.cnnviz.align=1&p.cnnviz.filter=5",
        (1280, 800),
        True,
        "document.querySelectorAll('.cv-panel .cv-tile canvas').length === 64"
        " && [...document.querySelectorAll('.cv-insp h3')]"
        ".some(h => h.textContent.startsWith('Match'))",
    ),
    (
        "narrow.png",
        ONE + "&p.cnnviz.layer=conv1&p.cnnviz.kind=feature_maps&p.cnnviz.slice=2",
        (420, 860),
        False,
        "document.querySelectorAll('.cv-tile canvas').length === 32",
    ),
]


def shoot(port: int, out: pathlib.Path, shots=SHOTS) -> None:
    """Saves `shots` under `out`; dark ones in TensorBoard's own dark theme (the browser's)."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        for name, hash_, (width, height), dark, ready in shots:
            context = browser.new_context(
                viewport={"width": width, "height": height},
                color_scheme="dark" if dark else "light",
            )
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/#cnnviz{hash_}")
            frame = page.wait_for_selector(
                "iframe[src*='plugin_entry']", state="attached", timeout=60000
            ).content_frame()
            if dark:  # TensorBoard follows the browser's scheme by default; the tab follows it
                frame.wait_for_function(
                    "document.documentElement.classList.contains('cv-dark')", timeout=30000
                )
            frame.wait_for_function(ready, timeout=60000)
            frame.wait_for_timeout(1500)  # the evolution strip and statistics fill in
            page.screenshot(path=str(out / name))
            print(f"Saved {out / name}")
            context.close()
        browser.close()


PROBE_LAYER = "conv2"
PROBE_CLASS = "triangle"


def probe_upload(path: pathlib.Path) -> None:
    """Writes a demo shape the runs never saw (a new seed), drawn at 96x96, as a PNG."""
    import numpy as np
    from PIL import Image

    from tb_cnnviz.demo.data import CLASS_NAMES, make_shapes

    images, labels = make_shapes(64, size=96, seed=2026)
    pick = int(np.flatnonzero(labels == CLASS_NAMES.index(PROBE_CLASS))[0])
    Image.fromarray(np.round(images[pick] * 255).astype(np.uint8)).save(path)


def shoot_probe(port: int, out: pathlib.Path, logdir: pathlib.Path) -> None:
    """Saves probe.png: the Probe view of the first run, a new image uploaded in the tab, the
    run's first and latest snapshot steps side by side (its own snapshot index says which)."""
    from playwright.sync_api import sync_playwright

    from tb_cnnviz import probe

    steps = probe.snapshot_steps(logdir, RUNS[0])
    if len(steps) < 2:
        raise RuntimeError(f"{RUNS[0]} has snapshots at {steps}; the view needs two")
    first, latest = steps[0], steps[-1]
    upload = pathlib.Path(tempfile.mkdtemp(prefix="cnnviz-probe-")) / "shape.png"
    probe_upload(upload)
    hash_ = (
        f"{ONE}&p.cnnviz.view=probe&p.cnnviz.layer={PROBE_LAYER}"
        f"&p.cnnviz.step={first}&p.cnnviz.vs={latest}"
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/#cnnviz{hash_}")
        frame = page.wait_for_selector(
            "iframe[src*='plugin_entry']", state="attached", timeout=60000
        ).content_frame()
        frame.wait_for_selector("input[data-action=probe-file]", state="attached", timeout=60000)
        frame.set_input_files("input[data-action=probe-file]", str(upload))
        # Both columns answered: two prediction lines, maps drawn, actmax images under them.
        frame.wait_for_function(
            "document.querySelectorAll('.cv-probe b').length === 2"
            " && document.querySelectorAll('.cv-probe img').length >= 2"
            " && document.querySelectorAll('.cv-tile .cv-actmax').length > 0",
            timeout=120000,
        )
        frame.wait_for_timeout(1500)  # the last canvases paint
        page.screenshot(path=str(out / "probe.png"))
        print(f"Saved {out / 'probe.png'} (steps {first} and {latest})")
        browser.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (default 4)")
    parser.add_argument("--samples", type=int, default=2000, help="training images (default 2000)")
    parser.add_argument("--logdir", type=pathlib.Path, help="default: a temporary directory")
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "docs" / "screenshots")
    names = [shot[0] for shot in SHOTS] + ["probe.png"]
    parser.add_argument("--only", nargs="+", choices=names, help="take only these (default: all)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cnnviz-demo-") as tmp:
        logdir = args.logdir or pathlib.Path(tmp)
        train(logdir, args.epochs, args.samples)
        output: list[str] = []
        try:
            with tbserver.tensorboard(logdir) as (port, output):
                steps = wait_for_runs(port)
                print(f"TensorBoard on port {port} serves steps {steps} of both runs")
                only = set(args.only or names)
                chosen = [shot for shot in SHOTS if shot[0] in only]
                if chosen:
                    shoot(port, args.out, chosen)
                if "probe.png" in only:
                    shoot_probe(port, args.out, logdir)
        except Exception:
            print("".join(output) or "(TensorBoard printed nothing)", file=sys.stderr)
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
