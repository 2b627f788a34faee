"""Seconds per epoch with and without CNNViz (defaults) for every model shape of tests/zoo.py.

Each model trains on 512 generated examples (batch 32). Per model, in one run and side by side:
one warm-up epoch each way (graph tracing is not what users pay per epoch), then the median of
`--repeats` timed epochs without callbacks and with `CNNViz(log_dir, probe_images=4 images)`.
Prints a Markdown table: the kinds logged, both timings and their ratio.

    python benchmarks/models.py [--repeats 2] [--only ResNet50 Conv1D ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import zoo  # noqa: E402

from tb_cnnviz.callbacks import CNNViz  # noqa: E402

EXAMPLES = 512


def grow(x, n=EXAMPLES):
    """Repeats the zoo's few examples (with fresh noise) up to `n`."""
    if isinstance(x, list):
        return [grow(a, n) for a in x]
    reps = -(-n // len(x))
    rng = np.random.default_rng(1)
    return np.concatenate([x] * reps)[:n] + rng.normal(0, 0.01, (n, *x.shape[1:])).astype(x.dtype)


def epoch_seconds(model, x, y, callbacks_factory, repeats):
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=callbacks_factory())
    times = []
    for _ in range(repeats):
        callbacks = callbacks_factory()
        start = time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=callbacks)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    print("| model or scenario | kinds logged | s/epoch with CNNViz | s/epoch without | ratio |")
    print("|---|---|---|---|---|")
    for name, build in zoo.MODELS.items():
        if args.only and name not in args.only:
            continue
        policy = keras.mixed_precision.global_policy()
        try:
            model, x, y, probes = build()
            x, y = grow(x), np.resize(y, EXAMPLES)
            plain = epoch_seconds(model, x, y, list, args.repeats)
            logdir = tempfile.mkdtemp()
            kinds = []

            def with_viz(logdir=logdir, kinds=kinds, probes=probes):
                viz = CNNViz(logdir, probe_images=probes)
                kinds[:] = [c.kind for c in viz.callbacks]
                return [viz]

            viz = epoch_seconds(model, x, y, with_viz, args.repeats)
        finally:
            keras.mixed_precision.set_global_policy(policy)
        print(
            f"| {name} | {', '.join(kinds)} | {viz:.2f} | {plain:.2f} | {viz / plain:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
