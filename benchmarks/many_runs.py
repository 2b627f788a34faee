"""The CNN Viz tab on a logdir of many runs: 50 runs × 100 steps (issue 22, item 3).

Builds the logdir with `tb_cnnviz.summary` (TensorFlow-free writer): each of 50 runs holds 100
steps of two conv layers' filter weights (3×3×16×32, as `dashboard.py`'s `write_many`) and
their responses to 64 reference images (what the Similarity view's CKA needs, as
`similarity_route.py` writes them), plus the reference images once. Then it starts a real
`tensorboard` process (its default Rust data server; `dashboard.TensorBoard`) and measures:

1. the tab's first listing: the first `/runs` and `/tags` the tab asks for once TensorBoard has
   read the whole logdir (the plugin's caches cold), then `/tags` warm (p50 of 20);
2. TensorBoard's memory (the process and its data server, resident): with the logdir loaded,
   and again after browsing (300 `/layer` reads spread over every run, every run's `/plan`,
   Runs × runs heatmaps at 10 steps, Layer over time for 10 runs);
3. the Similarity view's Runs × runs heatmap of all 50 runs (both layers, one request, as the
   tab asks): cold (a step no request asked before: 100 Gram matrices read and decoded, 2 ×
   1,225 CKA pairs) and warm (the same request again: the answered heatmap is cached).

Each number is printed against the bound the README states. Usage:
    python benchmarks/many_runs.py [--runs 50] [--steps 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from dashboard import TensorBoard, pct, process_tree_mb, report  # noqa: E402

from tb_cnnviz import similarity, summary  # noqa: E402

LAYERS = 2
REFERENCES = 64
PREFIX = "/data/plugin/cnnviz/"


def build(logdir: pathlib.Path, runs: int, steps: int) -> None:
    """Writes `runs` runs × `steps` steps of two layers' weights and responses."""
    rng = np.random.default_rng(0)
    refs = rng.random((REFERENCES, 16, 16, 3), dtype=np.float32)
    digest = similarity.reference_hash(refs)
    for r in range(runs):
        kernels = [rng.normal(0, 0.1, (3, 3, 16, 32)).astype(np.float32) for _ in range(LAYERS)]
        base = [rng.normal(size=(REFERENCES, 4, 4, 16)) for _ in range(LAYERS)]
        drift = [rng.normal(size=(REFERENCES, 4, 4, 16)) for _ in range(LAYERS)]
        writer = summary.create_file_writer(str(logdir / f"run_{r:02d}"))
        for step in range(steps):
            with writer.as_default(step=step):
                if step == 0:
                    summary.reference_images(refs)
                for k in range(LAYERS):
                    kernels[k] += rng.normal(0, 0.01, kernels[k].shape).astype(np.float32)
                    summary.filter_weights(f"conv_{k}", kernels[k])
                    acts = np.maximum(base[k] + drift[k] * (step / steps), 0).astype(np.float32)
                    summary.responses(f"conv_{k}", acts, reference_images=digest)
        writer.close()
        print(f"  wrote run {r + 1}/{runs}", end="\r", flush=True)
    print()


def timed_get(tb: TensorBoard, path: str) -> tuple[float, object]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(tb.base + path, timeout=120) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{path}: {e.code} {e.read()[:300]!r}") from None
    ms = (time.perf_counter() - t0) * 1000
    return ms, json.loads(body) if body[:1] in (b"{", b"[") else None


def core_runs(tb: TensorBoard) -> int:
    with urllib.request.urlopen(tb.base + "/data/runs", timeout=30) as r:
        return len(json.loads(r.read()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--keep", type=pathlib.Path, help="write the logdir under DIR and reuse it")
    args = parser.parse_args(argv)
    runs, steps = args.runs, args.steps
    root = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="tb-cnnviz-many-"))
    logdir = root / f"many_{runs}x{steps}"
    marker = root / f"{logdir.name}.done"
    t0 = time.time()
    if not marker.exists():
        build(logdir, runs, steps)
        marker.write_text("ok")
    disk = sum(f.stat().st_size for f in logdir.rglob("*") if f.is_file())
    print(
        f"logdir: {runs} runs × {steps} steps × {LAYERS} layers (weights, responses to "
        f"{REFERENCES} reference images): {disk / 1e6:.0f} MB, ready in {time.time() - t0:.0f} s"
    )
    names = [f"run_{r:02d}" for r in range(runs)]
    ok = True
    launched = time.time()
    tb = TensorBoard(logdir, 0)  # 0: do not wait on the plugin's /runs, to keep its caches cold
    try:
        while core_runs(tb) < runs:  # TensorBoard's own route: the plugin stays cold
            time.sleep(0.5)
        time.sleep(12)  # the data server's reloads (every 5 s) finish reading every step
        runs_ms, listed = timed_get(tb, PREFIX + "runs")
        tags_ms, tags = timed_get(tb, PREFIX + "tags")
        complete = len(tags) == runs and all(
            len(t.get("conv_0/weights", {}).get("steps", [])) == steps for t in tags.values()
        )
        load_s = time.time() - launched
        loaded_mb = process_tree_mb(tb.proc.pid)
        warm_tags = [timed_get(tb, PREFIX + "tags")[0] for _ in range(20)]

        last = steps - 1
        query = urllib.parse.urlencode({"mode": "runs", "runs": json.dumps(names), "step": last})
        sim = PREFIX + "similarity?" + query
        cold_ms, body = timed_get(tb, sim)
        assert len(body["matrices"]) == LAYERS and len(body["matrices"][0]) == runs, body.keys()
        warm_ms = [timed_get(tb, sim)[0] for _ in range(10)]

        rng = random.Random(0)
        for _ in range(300):
            run, k = rng.choice(names), rng.randrange(LAYERS)
            path = urllib.parse.urlencode(
                {"run": run, "tag": f"conv_{k}/weights", "step": rng.randrange(steps)}
            )
            timed_get(tb, PREFIX + "layer?" + path)
        for run in names:
            timed_get(tb, PREFIX + "plan?" + urllib.parse.urlencode({"run": run}))
        fresh = []  # cold heatmaps at steps no request asked for before
        for step in range(max(0, last - 10), last):
            q = urllib.parse.urlencode({"mode": "runs", "runs": json.dumps(names), "step": step})
            fresh.append(timed_get(tb, PREFIX + "similarity?" + q)[0])
        for run in names[:10]:
            q = urllib.parse.urlencode({"mode": "time", "run": run, "layer": "conv_0"})
            timed_get(tb, PREFIX + "similarity?" + q)
        after_mb = process_tree_mb(tb.proc.pid)
    finally:
        tb.close()

    print(f"\n{runs} runs × {steps} steps, TensorBoard's Rust data server, {os.cpu_count()} CPUs")
    print(f"  (info) /data/runs listed every run, the plugin untouched, after {load_s:.0f} s")
    print(f"  (info) the first /tags held every step of every run: {complete}")
    ok &= report(
        "first /runs + /tags of the tab (plugin cold)",
        runs_ms + tags_ms,
        1000,
        "ms",
        f"   [/runs {runs_ms:.0f}, /tags {tags_ms:.0f}; {len(listed)} runs]",
    )
    ok &= report(
        "/tags p50, warm (of 20)",
        pct(warm_tags, 50),
        100,
        "ms",
        f"   [p90 {pct(warm_tags, 90):.0f}]",
    )
    ok &= report(
        f"Runs × runs heatmap, {runs} runs × {LAYERS} layers, first at a step",
        cold_ms,
        3000,
        "ms",
        f"   [10 more steps: median {statistics.median(fresh):.0f}, max {max(fresh):.0f}]",
    )
    ok &= report(
        "Runs × runs heatmap, warm (p50 of 10)",
        pct(warm_ms, 50),
        100,
        "ms",
        f"   [max {max(warm_ms):.0f}]",
    )
    ok &= report(
        "TensorBoard memory, logdir loaded",
        loaded_mb,
        1500,
        "MB",
        f"   [{loaded_mb / (disk / 1e6):.2f} MB per MB of logdir]",
    )
    ok &= report(
        "TensorBoard memory after browsing",
        after_mb,
        2000,
        "MB",
        f"   [+{after_mb - loaded_mb:.0f} MB: the plugin's caches, bounded]",
    )
    print("load average (1, 5, 15 min):", os.getloadavg())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
