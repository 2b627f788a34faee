"""Probe view latency: the first answer for a new image through `POST /probe` on the demo CNN.

Trains the demo CNN briefly with `CNNViz` (snapshots at the first and latest step), serves the
logdir with the real plugin in TensorBoard's WSGI app, and times one new image per request:
cold (the model cache cleared with `tb_cnnviz.probe.clear_cache()`, so the architecture is
rebuilt and the weights loaded) and warm (the model loaded). Prints medians and worst.

    python benchmarks/probe.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, ".")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import keras
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as multiplexer
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    from demo.data import make_shapes
    from demo.model import build_demo_cnn
    from tb_cnnviz import plugin, probe
    from tb_cnnviz.callbacks import CNNViz

    logdir = tempfile.mkdtemp()
    x, y = make_shapes(512, seed=0)
    model = build_demo_cnn()
    model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[CNNViz(logdir, x[:8])])
    mux = multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    ctx = base_plugin.TBContext(logdir=logdir, data_provider=provider, sampling_hints={})
    client = Client(
        application.TensorBoardWSGI([plugin.CNNVizPlugin(ctx)], data_provider=provider), Response
    )

    def image(seed: int) -> bytes:
        pixels = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG")
        return out.getvalue()

    def ask(seed: int) -> float:
        start = time.perf_counter()
        answer = client.post("/data/plugin/cnnviz/probe?run=train", data=image(seed))
        seconds = time.perf_counter() - start
        assert answer.status_code == 200, answer.get_json()
        return seconds

    cold, warm = [], []
    for seed in range(args.repeats):
        probe.clear_cache()
        cold.append(ask(1000 + seed))
        warm.extend(ask(2000 + 10 * seed + k) for k in range(3))
    print(f"backend {keras.backend.backend()}, demo CNN, {args.repeats} cold, {len(warm)} warm")
    for name, times in (("cold (model rebuilt and loaded)", cold), ("warm (model loaded)", warm)):
        ms = [1000 * t for t in times]
        print(f"{name}: median {statistics.median(ms):.0f} ms, worst {max(ms):.0f} ms")


if __name__ == "__main__":
    main()
