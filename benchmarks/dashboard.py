"""Speed of the CNN Viz tab, measured with a real TensorBoard process and headless Chromium.

Three numbers, each against its target (DESIGN.md §7 and issue 4):

1. Time to the first grid painted after the tab opens, on a demo-like logdir (≤ 1 s): from the
   iframe's navigation start (TensorBoard creates the iframe when the tab opens) to the first
   animation frame after the grid's pixels are on their canvases.
2. Step switch on a 512-filter layer (≤ 100 ms): key press to the next animation frame after
   the repaint, stepping to a neighbouring step (the dashboard prefetches neighbours).
3. `/layer` route p50 on a logdir of 20 runs × 100 steps × 6 layers (≤ 30 ms warm): HTTP
   requests against the live server for 200 random (run, layer, step), each asked once before
   (warm); the first request of each is printed too.

Logdirs are written with `tb_cnnviz.summary` under `tf.summary.create_file_writer`.

Usage:
    python benchmarks/dashboard.py            # everything (~2 minutes; writing logs dominates)
    python benchmarks/dashboard.py --quick    # smaller route logdir (5 runs × 20 steps × 6 layers)
    python benchmarks/dashboard.py --keep DIR # write logdirs under DIR and keep them
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np

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


# ---------------------------------------------------------------------------------------------
# Logdirs.


def write_demo_like(root: pathlib.Path, runs=2, steps=10) -> None:
    """Two runs of a small CNN: 3 conv layers (16, 32, 64 filters), weights + feature maps."""
    import tensorflow as tf

    from tb_cnnviz import summary

    shapes = [
        ((3, 3, 3, 16), (4, 28, 28, 16)),
        ((3, 3, 16, 32), (4, 14, 14, 32)),
        ((3, 3, 32, 64), (4, 7, 7, 64)),
    ]
    for r in range(runs):
        rng = np.random.default_rng(r)
        kernels = [rng.normal(0, 0.2, k).astype(np.float32) for k, _ in shapes]
        writer = tf.summary.create_file_writer(str(root / f"demo/run{r}"))
        with writer.as_default():
            for step in range(steps):
                for i, (_, act_shape) in enumerate(shapes):
                    prev = kernels[i].copy()
                    kernels[i] += rng.normal(0, 0.02, kernels[i].shape).astype(np.float32)
                    summary.filter_weights(f"conv2d_{i}", kernels[i], step=step, previous=prev)
                    acts = np.maximum(rng.normal(0, 1, act_shape), 0).astype(np.float32)
                    summary.feature_maps(f"conv2d_{i}", acts, step=step)
        writer.close()


def write_wide_layer(root: pathlib.Path, steps=8, filters=512) -> None:
    """One run with a 512-filter layer: 3×3×64 kernels (64 slices each) and 8×8 feature maps."""
    import tensorflow as tf

    from tb_cnnviz import summary

    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.1, (3, 3, 64, filters)).astype(np.float32)
    writer = tf.summary.create_file_writer(str(root / "wide"))
    with writer.as_default():
        for step in range(steps):
            prev = kernel.copy()
            kernel += rng.normal(0, 0.01, kernel.shape).astype(np.float32)
            summary.filter_weights(
                "conv_wide", kernel, step=step, previous=prev, max_filters=filters
            )
            acts = np.maximum(rng.normal(0, 1, (4, 8, 8, filters)), 0).astype(np.float32)
            summary.feature_maps("conv_wide", acts, step=step, max_filters=filters)
    writer.close()


def write_many(root: pathlib.Path, runs=20, steps=100, layers=6) -> None:
    """`runs` runs × `steps` steps × `layers` layers of 3×3×16×32 weights."""
    import tensorflow as tf

    from tb_cnnviz import summary

    for r in range(runs):
        rng = np.random.default_rng(r)
        kernels = [rng.normal(0, 0.1, (3, 3, 16, 32)).astype(np.float32) for _ in range(layers)]
        writer = tf.summary.create_file_writer(str(root / f"run_{r:02d}"))
        with writer.as_default():
            for step in range(steps):
                for i in range(layers):
                    kernels[i] += rng.normal(0, 0.01, kernels[i].shape).astype(np.float32)
                    summary.filter_weights(f"conv_{i}", kernels[i], step=step)
        writer.close()


# ---------------------------------------------------------------------------------------------
# TensorBoard and the browser.


class TensorBoard:
    """A `tensorboard` subprocess serving `logdir` on a free port."""

    def __init__(self, logdir: pathlib.Path, expect_runs: int):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.log = open(logdir.parent / f"tensorboard-{logdir.name}.log", "wb")
        self.proc = subprocess.Popen(
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
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited; see {self.log.name}")
            try:
                if len(self.get("/data/plugin/cnnviz/runs")) >= expect_runs:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"tensorboard did not load {logdir}; see {self.log.name}")
            time.sleep(0.5)

    def get(self, path: str):
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return json.loads(r.read())

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def open_tab(browser, base: str, hash_: str = ""):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{base}/#cnnviz{hash_}")
    frame = page.wait_for_selector(
        "iframe[src*='plugin_entry']", state="attached", timeout=60000
    ).content_frame()
    frame.wait_for_function(
        "performance.getEntriesByName('cnnviz:first-grid').length > 0", timeout=60000
    )
    return page, frame


def first_grid_ms(browser, base: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        page, frame = open_tab(browser, base)
        times.append(
            frame.evaluate("performance.getEntriesByName('cnnviz:first-grid')[0].startTime")
        )
        page.close()
    return times


STEP_SWITCH_JS = """async (key) => {
  const painted = new Promise((ok) =>
    document.addEventListener("cnnviz:painted", ok, { once: true }));
  const t0 = performance.now();
  document.dispatchEvent(new KeyboardEvent("keydown", { key, bubbles: true }));
  await painted;
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  return performance.now() - t0;
}"""


def step_switch_ms(browser, base: str, switches: int) -> tuple[list[float], int]:
    page, frame = open_tab(
        browser,
        base,
        "&p.cnnviz.run=wide&p.cnnviz.layer=conv_wide&p.cnnviz.kind=weights&p.cnnviz.step=0",
    )
    tiles = frame.evaluate("document.querySelectorAll('.cv-tile').length")
    times = []
    for i in range(switches):
        frame.wait_for_timeout(400)  # give the prefetch of the neighbours time, as a user would
        key = "." if (i // 7) % 2 == 0 else ","
        times.append(frame.evaluate(STEP_SWITCH_JS, key))
    page.close()
    return times, tiles


def route_ms(tb: TensorBoard, samples: int) -> dict[str, list[float]]:
    tags = tb.get("/data/plugin/cnnviz/tags")
    pairs = [
        (run, tag, steps["steps"]) for run, by_tag in tags.items() for tag, steps in by_tag.items()
    ]
    rng = random.Random(0)

    def timed(path):
        t0 = time.perf_counter()
        with urllib.request.urlopen(tb.base + path, timeout=30) as r:
            r.read()
        return (time.perf_counter() - t0) * 1000

    def layer_path(run, tag, step):
        return "/data/plugin/cnnviz/layer?" + urllib.parse.urlencode(
            {"run": run, "tag": tag, "step": step}
        )

    picks = []
    for _ in range(samples):
        run, tag, steps = rng.choice(pairs)
        picks.append(layer_path(run, tag, rng.choice(steps)))
    out = {"layer": [], "layer_first": [], "tags": [], "stats": []}
    # "Warm": the server has answered each request once (its index cache holds the step).
    out["layer_first"] = [timed(path) for path in picks]
    out["layer"] = [timed(path) for path in picks]
    for _ in range(max(5, samples // 20)):
        out["tags"].append(timed("/data/plugin/cnnviz/tags"))
        run, tag, _ = rng.choice(pairs)
        out["stats"].append(
            timed("/data/plugin/cnnviz/stats?" + urllib.parse.urlencode({"run": run, "tag": tag}))
        )
    return out


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def report(name: str, value: float, target: float, unit: str, extra: str = "") -> bool:
    ok = value <= target
    print(
        f"  {name:<58} {value:8.1f} {unit}  (target ≤ {target:g} {unit})"
        f"  {'PASS' if ok else 'FAIL'}{extra}"
    )
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller route logdir")
    parser.add_argument("--keep", type=pathlib.Path, help="write logdirs here and keep them")
    args = parser.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print(f"{CHROMIUM} is missing; the dashboard benchmark needs Chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    root = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="cnnviz_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    runs, steps = (5, 20) if args.quick else (20, 100)
    print(f"Writing logdirs under {root} …", flush=True)
    t0 = time.time()
    dirs = {"demo": root / "demo_like", "wide": root / "wide_layer", "many": root / "many"}
    if not dirs["demo"].exists():
        write_demo_like(dirs["demo"])
    if not dirs["wide"].exists():
        write_wide_layer(dirs["wide"])
    if not (dirs["many"] / f"run_{runs - 1:02d}").exists():
        shutil.rmtree(dirs["many"], ignore_errors=True)
        write_many(dirs["many"], runs=runs, steps=steps)
    print(f"  done in {time.time() - t0:.0f} s", flush=True)

    ok = True
    servers = []
    try:
        demo = TensorBoard(dirs["demo"], 2)
        wide = TensorBoard(dirs["wide"], 1)
        many = TensorBoard(dirs["many"], runs)
        servers = [demo, wide, many]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            open_tab(browser, demo.base)[0].close()  # warm the server and the browser cache once
            first = first_grid_ms(browser, demo.base, repeats=5)
            switches, tiles = step_switch_ms(browser, wide.base, switches=14)
            browser.close()
        routes = route_ms(many, samples=200)
    finally:
        for s in servers:
            s.close()

    print("\nCNN Viz dashboard speed (headless Chromium, live TensorBoard)")
    ok &= report(
        "time to first grid after the tab opens (demo-like, median of 5)",
        statistics.median(first),
        1000,
        "ms",
        f"   [all: {', '.join(f'{t:.0f}' for t in first)}]",
    )
    ok &= report(
        f"step switch, {tiles}-filter layer (p50 of {len(switches)})",
        pct(switches, 50),
        100,
        "ms",
        f"   [p90 {pct(switches, 90):.0f}, max {max(switches):.0f}]",
    )
    ok &= report(
        f"/layer route p50, {runs} runs × {steps} steps × 6 layers (HTTP, warm)",
        pct(routes["layer"], 50),
        30,
        "ms",
        f"   [p90 {pct(routes['layer'], 90):.1f}]",
    )
    print(
        f"  {'(info) /layer p50, first request of each step':<58}"
        f" {pct(routes['layer_first'], 50):8.1f} ms"
    )
    print(f"  {'(info) /tags p50':<58} {pct(routes['tags'], 50):8.1f} ms")
    print(
        f"  {'(info) /stats p50 (one run and tag, every step)':<58}"
        f" {pct(routes['stats'], 50):8.1f} ms"
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
