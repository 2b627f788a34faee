"""What comparing runs costs: one logged step of layer similarity, alignment and dataset examples.

With 256 reference images on the demo CNN (four conv layers), measured side by side in one run
(median of interleaved repeats):

* the forward pass of the reference images (batches of 64, every conv layer's output captured),
  as the `References` callback runs it;
* per layer, `summary.responses`: the reduction on the Keras backend (centered Gram matrix,
  pooled responses, per-image peaks) and the rest (packing, standardizing, top-k, encoding,
  writing);
* one logged step of all three features for all four layers (the issue's target: <= 0.5 s);
* bytes per layer per step on disk (target: <= 300 KB), and the reference images written once;
* the `References` callback inside `fit()` (budget=None: every layer at every epoch), its own
  time per epoch beside the epoch's training time;
* the serving side (`tb_cnnviz.compare`, a `Logdir` loaded once): one CKA, one alignment, one
  layer's examples.

Run: `python benchmarks/compare.py [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from demo.data import make_shapes  # noqa: E402
from demo.model import build_demo_cnn  # noqa: E402
from tb_cnnviz import compare, similarity, summary  # noqa: E402
from tb_cnnviz import layers as layer_lib  # noqa: E402
from tb_cnnviz.callbacks import References  # noqa: E402

N_REFERENCES = 256
BATCH = 64


def forward(model, convs, refs):
    """The callback's forward pass: every conv layer's output over the references."""
    parts = {id(layer): [] for layer in convs}
    with layer_lib.capture_outputs(convs) as captured:
        for start in range(0, len(refs), BATCH):
            model(refs[start : start + BATCH], training=False)
            for key, out in captured.items():
                parts[key].append(out)
    return {key: keras.ops.concatenate(outs, axis=0) for key, outs in parts.items()}


def disk_bytes(path: str) -> int:
    return sum(os.path.getsize(f) for f in glob.glob(os.path.join(path, "events.out.*")))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    model = build_demo_cnn()
    x, y = make_shapes(2000, seed=0)
    refs, _ = make_shapes(N_REFERENCES, seed=7)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)  # trained a little: real activations
    convs = [model.get_layer(f"conv{i}") for i in range(1, 5)]
    digest = similarity.reference_hash(refs)
    root = tempfile.mkdtemp()
    run = os.path.join(root, "bench")
    writer = summary.create_file_writer(run)

    with writer.as_default(step=0):  # once per run
        start, before = time.perf_counter(), disk_bytes(run)
        summary.reference_images(refs)
        writer.flush()
        refs_seconds, refs_bytes = time.perf_counter() - start, disk_bytes(run) - before

    times = {k: [] for k in ["forward", "reduce", "rest", "step", "step_cpu"]}
    per_layer_bytes = {layer.name: [] for layer in convs}
    forward(model, convs, refs)  # warm-up: first calls pay one-time costs
    for step in range(1, args.repeats + 1):
        with writer.as_default(step=step):
            c0 = time.process_time()
            t0 = time.perf_counter()
            outputs = forward(model, convs, refs)
            t1 = time.perf_counter()
            cpu_forward = time.process_time() - c0
            reduce_seconds = 0.0
            for layer in convs:
                acts = outputs[id(layer)]
                r0 = time.perf_counter()
                similarity.layer_responses(acts, ops=keras.ops)  # the reduction alone
                reduce_seconds += time.perf_counter() - r0
            t2 = time.perf_counter()
            c2 = time.process_time()
            for layer in convs:  # the whole write: the reduction again, then the rest
                before = disk_bytes(run)
                summary.responses(layer.name, outputs[id(layer)], reference_images=digest)
                writer.flush()
                per_layer_bytes[layer.name].append(disk_bytes(run) - before)
            t3 = time.perf_counter()
            c3 = time.process_time()
        times["forward"].append(t1 - t0)
        times["reduce"].append(reduce_seconds)
        times["rest"].append((t3 - t2) - reduce_seconds)
        times["step"].append((t1 - t0) + (t3 - t2))
        times["step_cpu"].append((c3 - c2) + cpu_forward)
    writer.close()

    logs = compare.Logdir(root)
    serve = {"cka": [], "align": [], "examples": []}
    for _ in range(args.repeats):
        for name, fn in [
            ("cka", lambda: compare.cka(logs, "conv3", ("bench", 1), ("bench", 2))),
            ("align", lambda: compare.align(logs, "conv3", ("bench", 1), ("bench", 2))),
            ("examples", lambda: compare.examples(logs, "bench", "conv3", 1)),
        ]:
            s0 = time.perf_counter()
            fn()
            serve[name].append(time.perf_counter() - s0)

    # The callback inside fit(): its own time per epoch beside the epoch's training time.
    fit_model = build_demo_cnn(seed=1)
    epochs = 3
    callback = References(os.path.join(root, "fit"), refs, budget=None)
    start = time.perf_counter()
    fit_model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=[callback])
    wall = time.perf_counter() - start
    own = callback.time_budget.own_seconds

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print(f"demo CNN, {N_REFERENCES} reference images, median of {args.repeats} steps")
    print(f"{'what':<52}{'seconds':>10}")
    print(f"{'forward pass of the references (4 conv layers)':<52}{med['forward']:>10.3f}")
    print(f"{'reductions on the backend (Gram, pooled, peaks)':<52}{med['reduce']:>10.3f}")
    print(f"{'packing, top-k, encoding, writing':<52}{med['rest']:>10.3f}")
    print(f"{'one logged step, all three features, 4 layers':<52}{med['step']:>10.3f}")
    print(f"{'  its CPU time (both cores together)':<52}{med['step_cpu']:>10.3f}")
    print(f"{'  (target)':<52}{0.5:>10.3f}")
    print(f"{'reference images, written once per run':<52}{refs_seconds:>10.3f}")
    print()
    print(f"{'bytes on disk per step':<40}{'KB':>10}")
    for name, sizes in per_layer_bytes.items():
        layer = model.get_layer(name)
        filters = layer.output.shape[-1]
        print(f"{name + f' ({filters} filters)':<40}{statistics.median(sizes) / 1e3:>10.1f}")
    print(f"{'  (target per layer)':<40}{300:>10.1f}")
    print(f"{'reference images, once per run':<40}{refs_bytes / 1e3:>10.1f}")
    print()
    print(f"{'serving (compare, Logdir loaded once)':<52}{'ms':>10}")
    for name, values in serve.items():
        print(f"{name:<52}{statistics.median(values) * 1e3:>10.1f}")
    print()
    train = wall - own
    print(
        f"References in fit() (budget=None, {epochs} epochs of 2,000 images): own time "
        f"{own / epochs:.3f} s per epoch (setup and the reference images included) against "
        f"{train / epochs:.2f} s of training per epoch ({own / train:.1%})"
    )


if __name__ == "__main__":
    main()
