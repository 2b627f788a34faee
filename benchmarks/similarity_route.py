"""What the CNN Viz tab's comparison routes cost: CKA heatmaps, alignment, dataset examples.

Builds a logdir of 20 runs x 100 steps (by default 2 conv layers, 256 reference images: each
step of each layer a real responses datum, 132 KB of Gram matrix, written through
`tb_cnnviz.summary.responses` from synthetic activations), loads it through TensorBoard's own
`EventMultiplexer` and `MultiplexerDataProvider`, and asks the real plugin WSGI app
(`application.TensorBoardWSGI`, `werkzeug.test.Client`, as the tests do):

* `/similarity?mode=time`: one layer of one run, every step against every step (100 x 100);
* `/similarity?mode=runs`: the 20 runs against each other at a step, for every layer at once;
* `/similarity?mode=layers`: the layers of one run at a step;
* `/alignment` and `/examples` of one layer.

Each is timed cold (a new plugin: nothing decoded yet), warm with the decoded triangles cached
but a heatmap not answered before, and warm (the same request again, back to back: the step
list is reused for 2 s and the answered heatmap is cached). The issue's target: a similarity
heatmap of 20 runs x 100 steps answers in <= 100 ms warm.

Run: `python benchmarks/similarity_route.py [--runs 20] [--steps 100] [--layers 2]
[--references 256] [--repeats 7] [--logdir DIR]` (an existing `--logdir` built with the same
sizes is reused).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from tb_cnnviz import plugin as plugin_lib  # noqa: E402
from tb_cnnviz import similarity, summary  # noqa: E402

PREFIX = "/data/plugin/cnnviz/"


def build(logdir: str, runs: int, steps: int, layers: int, references: int) -> None:
    """Writes `runs` runs of `steps` steps of every layer's responses, and the images once."""
    rng = np.random.default_rng(0)
    refs = rng.random((references, 16, 16, 3), dtype=np.float32)
    digest = similarity.reference_hash(refs)
    for r in range(runs):
        writer = summary.create_file_writer(os.path.join(logdir, f"run{r:02d}"))
        base = [rng.normal(size=(references, 4, 4, 16)) for _ in range(layers)]
        drift = [rng.normal(size=(references, 4, 4, 16)) for _ in range(layers)]
        for step in range(steps):
            with writer.as_default(step=step):
                if step == 0:
                    summary.reference_images(refs)
                for k in range(layers):
                    acts = np.maximum(base[k] + drift[k] * (step / steps), 0).astype(np.float32)
                    summary.responses(f"conv{k + 1}", acts, reference_images=digest)
        writer.close()
        print(f"  wrote run {r + 1}/{runs}", end="\r", flush=True)
    print()


def load(logdir: str):
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer

    mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"cnnviz": 0})
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    return data_provider.MultiplexerDataProvider(mux, logdir)


def client(provider):
    import werkzeug.test
    import werkzeug.wrappers
    from tensorboard.backend import application
    from tensorboard.plugins import base_plugin

    ctx = base_plugin.TBContext(data_provider=provider, sampling_hints={"cnnviz": 0})
    plugin = plugin_lib.CNNVizPlugin(ctx)
    app = application.TensorBoardWSGI([plugin], data_provider=provider)
    return plugin, werkzeug.test.Client(app, werkzeug.wrappers.Response)


def timed(http, url: str) -> float:
    start = time.perf_counter()
    response = http.get(PREFIX + url)
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise SystemExit(f"{url}: {response.status_code} {response.get_data(as_text=True)}")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--references", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--logdir", help="build here, or reuse what an earlier run built")
    args = parser.parse_args(argv)

    logdir = args.logdir or tempfile.mkdtemp(prefix="tb-cnnviz-similarity-")
    sizes = f"{args.runs} {args.steps} {args.layers} {args.references}"
    marker = os.path.join(logdir, "SIZES")
    if not (os.path.exists(marker) and open(marker).read() == sizes):
        start = time.perf_counter()
        build(logdir, args.runs, args.steps, args.layers, args.references)
        with open(marker, "w") as f:
            f.write(sizes)
        print(f"built {logdir} in {time.perf_counter() - start:.0f} s")
    disk = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(logdir) for f in files
    )
    start = time.perf_counter()
    provider = load(logdir)
    print(
        f"logdir: {args.runs} runs x {args.steps} steps x {args.layers} layers, "
        f"{args.references} reference images, {disk / 1e6:.0f} MB; loaded by TensorBoard's "
        f"multiplexer in {time.perf_counter() - start:.1f} s"
    )
    last = args.steps - 1
    runs = ",".join(f"run{r:02d}" for r in range(args.runs))
    requests = [
        (
            f"time: 1 run, {args.steps}x{args.steps} steps",
            "similarity?mode=time&run=run00&layer=conv1",
        ),
        (
            f"runs: {args.runs}x{args.runs} runs x {args.layers} layers",
            f"similarity?mode=runs&runs={runs}&step={last}",
        ),
        (f"layers: {args.layers}x{args.layers}", f"similarity?mode=layers&run=run00&step={last}"),
        (
            "alignment: 16 filters",
            f"alignment?layer=conv1&a=run00&b=run01&a_step={last}&b_step={last}",
        ),
        ("examples: 16 filters x 8", f"examples?run=run00&layer=conv1&step={last}"),
    ]
    rows = []
    for name, url in requests:
        cold = []
        for _ in range(max(3, args.repeats // 2)):  # a new plugin each time: nothing cached
            _, http = client(provider)
            cold.append(timed(http, url))
        plugin, http = client(provider)
        timed(http, url)
        decoded, warm, stale = [], [], []
        for _ in range(args.repeats):
            plugin.forget_similarity()  # heatmaps answered: forgotten
            decoded.append(timed(http, url))
            timed(http, url)
            warm.append(timed(http, url))
        for _ in range(3):  # the step lists are re-read after 2 s
            time.sleep(plugin_lib.SERIES_FRESH_SECONDS + 0.1)
            stale.append(timed(http, url))
        rows.append((name, *(statistics.median(v) * 1e3 for v in (cold, decoded, warm, stale))))
    print(f"load average (1, 5, 15 min): {os.getloadavg()} on {os.cpu_count()} CPUs")
    head = ("request", "cold", "decoded", "warm", "warm, steps re-read")
    print(f"{head[0]:<38}{head[1]:>10}{head[2]:>10}{head[3]:>10}{head[4]:>22}")
    for name, *values in rows:
        print(f"{name:<38}" + "".join(f"{v:>10.1f}" for v in values[:3]) + f"{values[3]:>22.1f}")
    print("(median ms; target: <= 100 ms warm)")


if __name__ == "__main__":
    main()
