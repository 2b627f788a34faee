"""Probe view latency: the first answer for a new image through `POST /probe` on the demo CNN.

Trains the demo CNN briefly with `CNNViz` (demo data, its class names and probe images;
snapshots at the first and latest step), then measures three ways, each a new image (a demo
shape drawn at 48x48, so the probe resizes it, from a different seed each time):

* cold: a new `tensorboard` process per image (the real program, its default data loader, the
  plugin found through its entry point), sent its first `POST /probe` over HTTP as soon as it
  answers. Two times: from the moment the process starts, and from the request (Keras is
  imported where TensorBoard's start has not imported it yet, the model rebuilt from its
  architecture and its weights loaded, Grad-CAM and the feature maps computed). Beside them,
  what a fresh process takes to import the plugin, TensorFlow and Keras: where the time before
  the request goes.
* cold in a running server: the model cache cleared (`tb_cnnviz.probe.clear_cache()`) in a
  process that has answered before (TensorBoard's WSGI app in this process), so Keras is
  imported but the model is rebuilt and loaded.
* warm: the model loaded; a new image each time, at both snapshot steps.

Prints medians and worst of each.

    python benchmarks/probe.py [--images 5] [--warm 15] [--logdir DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

RUN = "lr_1e-3"


def upload(seed: int) -> bytes:
    """A new demo shape (class by seed), 48x48, as PNG bytes."""
    import numpy as np
    from PIL import Image

    from demo.data import make_shapes

    images, _ = make_shapes(1, size=48, seed=seed)
    out = io.BytesIO()
    Image.fromarray(np.round(images[0] * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def client(logdir: str):
    """TensorBoard's WSGI app with the real plugin on `logdir`, as a werkzeug test client."""
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as multiplexer
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    from tb_cnnviz import plugin

    mux = multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    ctx = base_plugin.TBContext(logdir=logdir, data_provider=provider, sampling_hints={})
    app = application.TensorBoardWSGI([plugin.CNNVizPlugin(ctx)], data_provider=provider)
    return Client(app, Response)


def ask(app, seed: int, step: int | None = None) -> tuple[float, dict]:
    """Seconds for one `POST /probe` of a new image, and the answer."""
    body = upload(seed)
    query = f"run={RUN}" + ("" if step is None else f"&step={step}")
    start = time.perf_counter()
    answer = app.post(f"/data/plugin/cnnviz/probe?{query}", data=body)
    seconds = time.perf_counter() - start
    assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    return seconds, answer.get_json()


def cold_start(logdir: str, seed: int, timeout: float = 120.0) -> dict:
    """Starts the `tensorboard` program on `logdir` (a fresh process: TensorBoard's default
    loader, the plugin found through its entry point) and POSTs one new image to it as soon as
    it answers. Returns seconds from the process start and from the request."""
    import urllib.request

    port = free_port()
    program = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    argv = [program, "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    body = upload(seed)
    started = time.perf_counter()
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while True:  # TensorBoard's own route: nothing of the plugin runs before the request
            try:
                with urllib.request.urlopen(f"{base}/data/environment", timeout=5):
                    break
            except OSError:
                if time.perf_counter() - started > timeout or server.poll() is not None:
                    raise RuntimeError("tensorboard did not start") from None
                time.sleep(0.02)
        listening = time.perf_counter()
        request = urllib.request.Request(
            f"{base}/data/plugin/cnnviz/probe?run={RUN}", data=body, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        done = time.perf_counter()
    finally:
        server.terminate()
        server.communicate(timeout=30)
    return {
        "tensorboard_up": listening - started,
        "request": done - listening,
        "total": done - started,
        "top": answer["predictions"][0]["name"],
    }


def import_seconds(module: str) -> float:
    """Seconds a fresh Python process takes to import `module` (the interpreter's start not
    counted)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(logdir: str, epochs: int, samples: int) -> None:
    import keras

    from demo.data import CLASS_NAMES, make_shapes
    from demo.model import build_demo_cnn
    from demo.train import demo_probes
    from tb_cnnviz.callbacks import CNNViz

    x, y = make_shapes(samples, seed=0)
    probes, labels = demo_probes()
    viz = CNNViz(
        os.path.join(logdir, RUN),
        probes,
        labels=labels,
        class_names=list(CLASS_NAMES),
        actmax_freq=0,  # not needed by the probe; keeps the setup short
    )
    model = build_demo_cnn()
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=[viz])
    print(f"backend {keras.backend.backend()}, demo CNN, {epochs} epochs of {samples} shapes")
    print(f"CPU cores {os.cpu_count()}, Python {sys.version.split()[0]}")


def summary(name: str, seconds: list[float], what: str = "images") -> str:
    ms = [1000 * s for s in seconds]
    median, worst = statistics.median(ms), max(ms)
    return f"{name}: median {median:.0f} ms, worst {worst:.0f} ms ({len(ms)} {what})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5, help="cold starts, one image each")
    parser.add_argument("--warm", type=int, default=15, help="warm requests")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--logdir", help="reuse a logdir this script trained")
    args = parser.parse_args()
    logdir = args.logdir or tempfile.mkdtemp(prefix="bench-probe-")
    if not os.path.isdir(os.path.join(logdir, RUN)):
        train(logdir, args.epochs, args.samples)
    from tb_cnnviz import probe

    steps = probe.snapshot_steps(logdir, RUN)
    names = probe.snapshot_index(logdir, RUN)["class_names"]
    print(f"{logdir}: snapshots at steps {steps}; class names {names[:3]}...")

    cold = []
    for k in range(args.images):
        cold.append(cold_start(logdir, 100 + k))
        print(
            f"cold start {k}: "
            + ", ".join(
                f"{a} {b:.3f} s" if isinstance(b, float) else f"{a} {b!r}"
                for a, b in cold[-1].items()
            )
        )

    # Where a cold process's time goes before the request: TensorBoard's start imports
    # TensorFlow where it is installed; the plugin's own import is small.
    for module in ("tb_cnnviz.plugin", "tensorflow", "keras"):
        times = [import_seconds(module) for _ in range(3)]
        print(summary(f"import {module} in a fresh process", times, "runs"))

    app = client(logdir)
    ask(app, 1)  # Keras imported in this process
    restarted, warm = [], []
    for k in range(args.images):
        probe.clear_cache()
        restarted.append(ask(app, 200 + k)[0])
    ask(app, 2, step=steps[0])
    for k in range(args.warm):
        warm.append(ask(app, 300 + k, step=steps[k % len(steps)])[0])
    print(
        summary(
            "cold: new tensorboard process, its start to the answer", [c["total"] for c in cold]
        )
    )
    print(
        summary(
            "  of which tensorboard starting until it answers", [c["tensorboard_up"] for c in cold]
        )
    )
    print(summary("cold: the first request in that process", [c["request"] for c in cold]))
    print(summary("model cache cleared in a running server", restarted))
    print(summary("warm (model loaded)", warm))


if __name__ == "__main__":
    main()
