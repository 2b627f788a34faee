"""Seconds per epoch with and without CNNViz (defaults) for every model shape of tests/zoo.py.

Each model trains on 512 generated examples (batch 32). Per model, in one run and side by side:
one fit each way of 1 + `--repeats` epochs, first without callbacks, then with
`CNNViz(log_dir, probe_images=4 images)`; the first epoch (graph tracing) is left out and the
median of the others is reported, each epoch timed up to the end of CNNViz's epoch-end work.
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


class _EpochClock(keras.callbacks.Callback):
    """Records when each epoch ends; listed last, so it sees other callbacks' epoch-end work."""

    def on_train_begin(self, logs=None):
        self.ends = [time.perf_counter()]

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


def epoch_seconds(model, x, y, callbacks, repeats):
    """Median steady-state seconds per epoch: the first epoch (tracing) is left out."""
    clock = _EpochClock()
    model.fit(x, y, epochs=1 + repeats, batch_size=32, verbose=0, callbacks=[*callbacks, clock])
    return statistics.median(b - a for a, b in zip(clock.ends[1:-1], clock.ends[2:], strict=True))


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
            plain = epoch_seconds(model, x, y, [], args.repeats)
            viz_callback = CNNViz(tempfile.mkdtemp(), probe_images=probes)
            viz = epoch_seconds(model, x, y, [viz_callback], args.repeats)
            kinds = [c.kind for c in viz_callback.callbacks]
        finally:
            keras.mixed_precision.set_global_policy(policy)
        print(
            f"| {name} | {', '.join(kinds)} | {viz:.2f} | {plain:.2f} | {viz / plain:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
