"""Bytes of a long run with and without thinning (issue 22, item 2).

Trains the demo CNN and MobileNetV2 (96x96, weights=None) on a handful of images per epoch with
`CNNViz` defaults, once as is (thinned, `max_run_bytes` 1 GiB) and once with `thin_after=None`
(every epoch drawn), and prints the bytes of each run's event files. MobileNetV2 is slow on a
shared CPU: `--mobilenet-epochs` trains fewer epochs, and the line says so.

    python benchmarks/long_run.py --epochs 300 --mobilenet-epochs 300
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from demo.model import build_demo_cnn  # noqa: E402
from tb_cnnviz.callbacks import CNNViz  # noqa: E402


def run_bytes(log_dir: str) -> int:
    run = os.path.join(log_dir, "train")
    return sum(os.path.getsize(os.path.join(run, n)) for n in os.listdir(run) if "tfevents" in n)


def measure(name, build, shape, classes, epochs, thin_after):
    model = build()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.random((8, *shape), dtype=np.float32)
    y = rng.integers(0, classes, 8)
    log_dir = tempfile.mkdtemp(prefix="long_run_")
    kwargs = {} if thin_after == "default" else {"thin_after": None}
    viz = CNNViz(log_dir, probe_images=x[:4], snapshots=None, **kwargs)
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=[viz])
    size = run_bytes(log_dir)
    label = "thinned (defaults)" if thin_after == "default" else "every epoch"
    print(
        f"{name:12s} {epochs:4d} epochs  {label:20s} {size / 1e6:8.2f} MB "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    return size


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--mobilenet-epochs", type=int, default=300)
    parser.add_argument("--skip-demo", action="store_true", help="measure MobileNetV2 only")
    args = parser.parse_args()
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    for epochs in sorted({30, args.epochs}) if not args.skip_demo else ():
        for thin in ("default", None):
            measure("demo CNN", lambda: build_demo_cnn(), (32, 32, 3), 10, epochs, thin)
    mobilenet = lambda: keras.applications.MobileNetV2(  # noqa: E731
        input_shape=(96, 96, 3), weights=None, classes=10, classifier_activation=None
    )
    for epochs in sorted({30, args.mobilenet_epochs}):
        for thin in ("default", None):
            measure("MobileNetV2", mobilenet, (96, 96, 3), 10, epochs, thin)


if __name__ == "__main__":
    main()
