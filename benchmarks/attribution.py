"""Prints what attribution of 16 probe images costs per epoch, as a share of one training epoch.

The demo CNN (32x32x3, Conv32-Conv32-MaxPool-Conv64-Conv64-MaxPool-Flatten-Dense128-Dense10,
Adam) trains one epoch of 50,000 generated images, and in the same process the `Attribution`
callback logs Grad-CAM, Grad-CAM++ and SmoothGrad for 16 probes with labels (the predicted and
the true class), timed at steady state, PNG encoding and event writing included. The one-time
cost of compiling each method is printed apart. Target: the default (Grad-CAM) <= 3% of an
epoch.

    python benchmarks/attribution.py [--batch-size 32] [--images 50000] [--repeats 5]

With `--images` below 50,000 the epoch time is scaled up linearly to 50,000 images, and the
output says so.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

EPOCH_IMAGES = 50_000
PROBES = 16


def main(argv=None) -> None:
    """Runs the benchmark and prints one line per measurement.

    Example:
        >>> main("--images 256 --repeats 1 --methods gradcam".split())  # doctest: +ELLIPSIS
        one epoch of 50000 images, batch 32: ... s (measured on 256, scaled)
        gradcam            16 probes: ...
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=EPOCH_IMAGES)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--methods", nargs="+", default=["gradcam", "gradcam_plus_plus", "smoothgrad"]
    )
    args = parser.parse_args(argv)

    from tb_cnnviz.callbacks import Attribution
    from tb_cnnviz.demo.model import build_demo_cnn

    rng = np.random.default_rng(0)
    x = rng.random((args.images, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, args.images)
    probes, labels = x[:PROBES], y[:PROBES]
    model = build_demo_cnn()
    model.fit(
        x[: args.batch_size * 4],
        y[: args.batch_size * 4],
        batch_size=args.batch_size,
        epochs=1,
        verbose=0,
    )  # compiles the train step outside the timed epoch

    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
    epoch = (time.perf_counter() - start) * EPOCH_IMAGES / args.images
    scaled = "" if args.images == EPOCH_IMAGES else f" (measured on {args.images}, scaled)"
    print(f"one epoch of {EPOCH_IMAGES} images, batch {args.batch_size}: {epoch:.2f} s{scaled}")

    with tempfile.TemporaryDirectory() as log_dir:
        for method in args.methods:
            callback = Attribution(log_dir, probes, labels=labels, methods=(method,), budget=None)
            callback.set_model(model)
            callback.on_train_begin()
            start = time.perf_counter()
            callback.on_epoch_end(0)
            first = time.perf_counter() - start
            times = []
            for step in range(1, args.repeats + 1):
                start = time.perf_counter()
                callback.on_epoch_end(step)
                times.append(time.perf_counter() - start)
            callback.on_train_end()
            cost = statistics.median(times)
            print(
                f"{method:<18} {PROBES} probes: {cost * 1000:7.1f} ms per epoch = "
                f"{cost / epoch:6.2%} of an epoch (first call, compiling: {first:.2f} s)"
            )


if __name__ == "__main__":
    main()
