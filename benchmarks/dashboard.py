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

Then the same at a real model's scale (issue 20), on a logdir of 20 runs × 100 steps of
ResNet50's 53 conv layers with every kind, as the `CNNViz` callback logs them:

4. `/tags` p50 (≤ 50 ms warm), `/layer` p50 on first requests (≤ 30 ms) and warm (≤ 5 ms);
5. the first grid painted (≤ 1 s) and a step switch (≤ 100 ms) in Chromium;
6. the TensorBoard process's memory (with its Rust data server): loaded, and after every request
   above; the growth is the plugin's caches, which are bounded.

The real-scale logdir: `CNNViz(budget=None)` draws every kind of a ResNet50 (`weights=None`,
224×224, 10 classes, 8 probe images with labels, 64 reference images) at one epoch; those
summaries are then replayed at 100 steps on the schedule issue 19 sets for a real run (filter
weights and Grad-CAM at every step, each layer's feature maps every second step, dataset
examples every fifth, activation maximization of the default four layers every tenth), with a
plan record per step: about 20 MB a step. Pictures repeat across steps; what is measured
(reading, decoding, serving) does not depend on them. All 20 runs hold these tags and steps,
but only two hold the pictures (the others' blobs are emptied): TensorBoard keeps every blob in
memory, and 20 such runs (40 GB) would not fit this machine's 24 GB. `/tags` reads no blob, so
it pays for all 20 runs; the tab shows, and `/layer` is timed on, the two with pictures.

A first `/layer` read is bounded by how TensorBoard hands blobs to a plugin, not by the plugin:
with the Rust data server (`--load_fast=auto`, TensorBoard's default wherever it is installed),
each blob comes over loopback gRPC, and a blob of less than about 64 KB (an index, a small
layer's tiles) took about 40 ms to arrive here, while blobs of 100-230 KB arrived in 2-5 ms
(the signature of Nagle's algorithm meeting delayed acknowledgements on a small write).
`--load_fast false` runs the same part on TensorBoard's Python loader, where blobs are in the
process's memory: the plugin's own first read.

Logdirs are written with `tb_cnnviz.summary` under `tf.summary.create_file_writer`.

Usage:
    python benchmarks/dashboard.py            # everything (~10 minutes; writing logs dominates)
    python benchmarks/dashboard.py --quick    # smaller logdirs (5 runs × 20 steps)
    python benchmarks/dashboard.py --only real  # just the real-model scale
    python benchmarks/dashboard.py --keep DIR # write logdirs under DIR and keep them
"""

from __future__ import annotations

import argparse
import collections
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


def photo_crops(n: int, size: int, seed: int) -> np.ndarray:
    """`n` size×size crops, at random places and scales, of matplotlib's bundled photograph."""
    import matplotlib
    import matplotlib.image
    import tensorflow as tf

    path = pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photo = matplotlib.image.imread(path).astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    crops = []
    for _ in range(n):
        side = int(rng.uniform(0.3, 1.0) * min(h, w))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crops.append(tf.image.resize(photo[y : y + side, x : x + side], (size, size)).numpy())
    return np.stack(crops)


def write_resnet_template(root: pathlib.Path) -> None:
    """One epoch of `CNNViz(budget=None)` on ResNet50 at 224×224: every kind of every layer."""
    import keras

    from tb_cnnviz.callbacks import CNNViz

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)
    model.compile("adam", "sparse_categorical_crossentropy")
    x = photo_crops(16, 224, seed=0)
    y = np.arange(16) % 10
    viz = CNNViz(
        str(root),
        probe_images=x[:8],
        labels=y[:8],
        reference_images=photo_crops(64, 224, seed=1),
        budget=None,
        max_bytes=None,
    )
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[viz])


#: Which template tags a step `s` of the replayed run carries, by kind (see the docstring).
SCHEDULE = {
    "weights": lambda s, i: True,
    "attribution": lambda s, i: True,
    "feature_maps": lambda s, i: (s + i) % 2 == 0,
    "responses": lambda s, i: s % 5 == 0,
    "actmax": lambda s, i: s % 10 == 9,
    "references": lambda s, i: s == 0,  # once per run, as the callback writes them
}


def write_real_scale(root: pathlib.Path, runs=20, steps=100, picture_runs=2) -> dict:
    """The real-model-scale logdir (see the module docstring); returns what it holds.

    Every run holds the same tags and steps, but only the first `picture_runs` hold pictures:
    in the others every blob is emptied. ResNet50's pictures at 20 runs × 100 steps (14 GB at
    the callback's defaults, more on this schedule) would not fit TensorBoard's memory on this
    machine: TensorBoard keeps every loaded blob in memory. `/tags` reads no blob, so its cost
    is that of 20 full runs; the tab shows, and `/layer` is timed on, the runs with pictures.
    """
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.compat.proto import summary_pb2

    from tb_cnnviz import metadata, summary

    template = root.parent / "resnet50_template"
    if not template.exists():
        write_resnet_template(template)
    values = {}  # tag -> (kind, layer index, Summary.Value), in the order first written
    layers: list[str] = []
    for path in sorted(template.rglob("events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name != metadata.PLUGIN_NAME:
                    continue
                layer, kind = v.tag.rsplit("/", 1)
                if kind not in SCHEDULE or v.tag in values:
                    continue
                if kind in ("weights", "feature_maps") and layer not in layers:
                    layers.append(layer)  # the callbacks write layers in the network's order
                values[v.tag] = (kind, layers.index(layer) if layer in layers else 0, v)

    def write(run: pathlib.Path, pictures: bool) -> int:
        with tf.summary.create_file_writer(str(run)).as_default():
            for step in range(steps):
                drawn = []
                for tag, (kind, i, v) in values.items():
                    if not SCHEDULE[kind](step, i):
                        continue
                    if not pictures:
                        hollow = summary_pb2.Summary.Value()
                        hollow.CopyFrom(v)
                        del hollow.tensor.string_val[:]
                        hollow.tensor.string_val.extend([b""] * len(v.tensor.string_val))
                        v = hollow
                    one = summary_pb2.Summary(value=[v]).SerializeToString()
                    tf.summary.experimental.write_raw_pb(one, step=step)
                    drawn.append(tag)
                summary.write_plan("cnnviz", step, drawn=drawn, budget=0.05, layers=layers)
        return sum(f.stat().st_size for f in run.iterdir())

    full, hollow = root / "run_00", root / f"run_{picture_runs:02d}"
    full_bytes, hollow_bytes = write(full, True), write(hollow, False)
    for r in range(1, runs):
        source = full if r < picture_runs else hollow
        if r != picture_runs:
            (root / f"run_{r:02d}").mkdir(parents=True, exist_ok=True)
            for path in source.iterdir():
                os.link(path, root / f"run_{r:02d}" / path.name)
    return {
        "layers": len(layers),
        "tags": dict(collections.Counter(kind for kind, _, _ in values.values())),
        "picture_runs": picture_runs,
        "run_bytes": full_bytes,
        "bytes": full_bytes * picture_runs + hollow_bytes * (runs - picture_runs),
    }


# ---------------------------------------------------------------------------------------------
# TensorBoard and the browser.


class TensorBoard:
    """A `tensorboard` subprocess serving `logdir` on a free port."""

    def __init__(self, logdir: pathlib.Path, expect_runs: int, load_fast: str = "auto"):
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
                f"--load_fast={load_fast}",
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


WIDE = "&p.cnnviz.run=wide&p.cnnviz.layer=conv_wide&p.cnnviz.kind=weights"


def step_switch_ms(browser, base: str, switches: int, hash_=WIDE) -> tuple[list[float], int]:
    page, frame = open_tab(browser, base, hash_ + "&p.cnnviz.step=0")
    tiles = frame.evaluate("document.querySelectorAll('.cv-tile').length")
    times = []
    for i in range(switches):
        frame.wait_for_timeout(400)  # give the prefetch of the neighbours time, as a user would
        key = "." if (i // 7) % 2 == 0 else ","
        times.append(frame.evaluate(STEP_SWITCH_JS, key))
    page.close()
    return times, tiles


def route_ms(tb: TensorBoard, samples: int, runs=None) -> dict[str, list[float]]:
    """Route timings over random (run, tag, step) of `runs` (None: all)."""
    tags = tb.get("/data/plugin/cnnviz/tags")
    pairs = [
        (run, tag, steps["steps"])
        for run, by_tag in tags.items()
        if runs is None or run in runs
        for tag, steps in by_tag.items()
        if steps["kind"] != "responses"  # numbers for /examples and /similarity, not pictures
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


def process_tree_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (TensorBoard and its data server), MB."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in pathlib.Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def wait_loaded(tb: TensorBoard, runs: int, steps: int, tag: str) -> float:
    """Waits until every run serves `steps` steps of `tag`; returns the seconds it took."""
    t0 = time.time()
    while True:
        tags = tb.get("/data/plugin/cnnviz/tags")
        if len(tags) >= runs and all(
            len(t.get(tag, {}).get("steps", [])) >= steps for t in tags.values()
        ):
            return time.time() - t0
        if time.time() - t0 > 1800:
            raise RuntimeError("TensorBoard did not load the real-scale logdir in 30 minutes")
        time.sleep(2)


def demo_scale(args, root, sync_playwright) -> bool:
    """The demo-like logdir, a 512-filter layer and 20 runs of 6 small layers (1-3 above)."""
    runs, steps = (5, 20) if args.quick else (20, 100)
    t0 = time.time()
    dirs = {"demo": root / "demo_like", "wide": root / "wide_layer", "many": root / "many"}
    if not dirs["demo"].exists():
        write_demo_like(dirs["demo"])
    if not dirs["wide"].exists():
        write_wide_layer(dirs["wide"])
    if not (dirs["many"] / f"run_{runs - 1:02d}").exists():
        shutil.rmtree(dirs["many"], ignore_errors=True)
        write_many(dirs["many"], runs=runs, steps=steps)
    print(f"  logdirs written in {time.time() - t0:.0f} s", flush=True)

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
    return ok


REAL_STEP_LAYER = "conv5_block3_2_conv"  # ResNet50's widest 3×3 kernels: 512 × 512


def real_scale(args, root, sync_playwright) -> bool:
    """20 runs × 100 steps of ResNet50's conv layers with every kind (4-6 above)."""
    runs, steps = (5, 20) if args.quick else (20, 100)
    logdir = root / f"real_{runs}x{steps}"
    facts_file = root / f"{logdir.name}.json"
    t0 = time.time()
    if not facts_file.exists():
        shutil.rmtree(logdir, ignore_errors=True)
        facts_file.write_text(json.dumps(write_real_scale(logdir, runs=runs, steps=steps)))
    facts = json.loads(facts_file.read_text())
    shown = facts["picture_runs"]
    print(
        f"  real-scale logdir ready in {time.time() - t0:.0f} s: {runs} runs × {steps} steps ×"
        f" {facts['layers']} conv layers, tags by kind {facts['tags']};"
        f" {facts['run_bytes'] / 1e6:.0f} MB a run with pictures ({shown} runs),"
        f" {facts['bytes'] / 1e9:.1f} GB in all",
        flush=True,
    )
    weights = f"{REAL_STEP_LAYER}/weights"
    ok = True
    tb = TensorBoard(logdir, runs, load_fast=args.load_fast)
    try:
        load_s = wait_loaded(tb, runs, steps, weights)
        time.sleep(6)  # one more reload of the data server, then idle
        loaded_mb = process_tree_mb(tb.proc.pid)
        tags_ms = []
        for _ in range(21):
            t1 = time.perf_counter()
            tb.get("/data/plugin/cnnviz/tags")
            tags_ms.append((time.perf_counter() - t1) * 1000)
        picture_runs = [f"run_{r:02d}" for r in range(shown)]
        routes = route_ms(tb, samples=200, runs=picture_runs)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            open_tab(browser, tb.base)[0].close()  # the browser's cache of the tab's files
            first = first_grid_ms(browser, tb.base, repeats=5)
            hash_ = f"&p.cnnviz.run=run_00&p.cnnviz.layer={REAL_STEP_LAYER}&p.cnnviz.kind=weights"
            switches, tiles = step_switch_ms(browser, tb.base, switches=14, hash_=hash_)
            browser.close()
        after_mb = process_tree_mb(tb.proc.pid)
    finally:
        tb.close()

    loader = {"auto": "Rust data server", "true": "Rust data server", "false": "Python loader"}
    print(
        f"\nAt a real model's scale: {runs} runs × {steps} steps × ResNet50's conv layers"
        f" ({loader[args.load_fast]})"
    )
    ok &= report(
        f"/tags p50, {runs} runs (warm, of 20)",
        pct(tags_ms[1:], 50),
        50,
        "ms",
        f"   [p90 {pct(tags_ms[1:], 90):.0f}; the first after loading {tags_ms[0]:.0f}]",
    )
    ok &= report(
        "/layer p50, first request of each (run, tag, step)",
        pct(routes["layer_first"], 50),
        30,
        "ms",
        f"   [p90 {pct(routes['layer_first'], 90):.1f}]",
    )
    ok &= report(
        "/layer p50, warm",
        pct(routes["layer"], 50),
        5,
        "ms",
        f"   [p90 {pct(routes['layer'], 90):.1f}]",
    )
    ok &= report(
        "time to first grid after the tab opens (median of 5)",
        statistics.median(first),
        1000,
        "ms",
        f"   [all: {', '.join(f'{t:.0f}' for t in first)}]",
    )
    ok &= report(
        f"step switch, {REAL_STEP_LAYER} weights, {tiles} tiles (p50 of {len(switches)})",
        pct(switches, 50),
        100,
        "ms",
        f"   [p90 {pct(switches, 90):.0f}, max {max(switches):.0f}]",
    )
    print(
        f"  {'(info) /stats p50 (one run and tag, every step)':<58}"
        f" {pct(routes['stats'], 50):8.1f} ms"
    )
    print(f"  {'(info) TensorBoard served every step after':<58} {load_s:8.0f} s")
    print(
        f"  {'(info) TensorBoard memory, logdir loaded':<58} {loaded_mb:8.0f} MB"
        f"   [{loaded_mb / (facts['bytes'] / 1e6):.2f} MB per MB of logdir]"
    )
    print(
        f"  {'(info) ... after every request above':<58} {after_mb:8.0f} MB"
        f"   [+{after_mb - loaded_mb:.0f} MB: the plugin's caches, bounded]"
    )
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller logdirs")
    parser.add_argument("--only", choices=["demo", "real"], help="one of the two parts")
    parser.add_argument("--keep", type=pathlib.Path, help="write logdirs here and keep them")
    parser.add_argument(
        "--load_fast",
        choices=["auto", "true", "false"],
        default="auto",
        help="TensorBoard's --load_fast for the real-scale logdir (false: the Python loader)",
    )
    args = parser.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print(f"{CHROMIUM} is missing; the dashboard benchmark needs Chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    root = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="cnnviz_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"Writing logdirs under {root} …", flush=True)
    ok = True
    if args.only in (None, "demo"):
        ok &= demo_scale(args, root, sync_playwright)
    if args.only in (None, "real"):
        ok &= real_scale(args, root, sync_playwright)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
