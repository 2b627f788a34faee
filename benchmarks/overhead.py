"""What `CNNViz` defaults cost in `fit()`, beside plain `fit()` and Keras' TensorBoard callback.

For each configuration, in one process, the same model (same initial weights, same data) is
trained by three whole `fit()` calls, in turns (the order rotates between repeats so that a
slowdown of the shared machine falls on all three):

* `plain`: no callbacks;
* `cnnviz`: `CNNViz(log_dir, probe_images=8 images, labels=...)` at its defaults (budget 5%);
* `keras_tb`: `keras.callbacks.TensorBoard(log_dir, histogram_freq=1, write_images=True)`.

Each `fit()` is timed whole: the first epoch, tracing and every callback's setup included. The
ratios are against `plain`; `own` is CNNViz's own time as a fraction of the training time it
measured; MB/epoch is the size of the event files each callback wrote, per epoch; `drawn` counts
the drawings of each kind over the run (from CNNViz's plan records) against the drawings due.
The machine's speed drifts (other tenants, clock changes): wall ratios are medians over repeats,
and CPU-time ratios (`time.process_time`, which such drift moves less) are printed beside them.

Configurations (`--only` picks some):

* `tutorial`: two conv layers (a first tutorial's model) on 64 generated 32x32 images per
  epoch, 25 epochs, batch 32: training of a few seconds in all;
* `demo-2000`, `demo-4000`, `demo-50000`: the demo CNN (`tb_cnnviz.demo`, 32x32x3) on that
  many generated images per epoch, batch 64;
* `MobileNetV2` (256 images per epoch), `EfficientNetB0`, `ResNet50` (512): `keras.applications`
  with `weights=None`, at 224x224x3, 10 classes, random images, batch 16.

Besides the ratios it prints what was drawn (tags drawn at least once against tags due, and
drawings made against due, per kind, from the plan records) and where CNNViz's own time went,
per kind and phase (`tb_cnnviz.profile`: setup, trace, compute, copy, encode, write).

Run: `python benchmarks/overhead.py` (about 35 minutes on 2 cores). `--epochs`, `--repeats` and
`--seeds` set the run's length and how often each configuration is measured; the summary table
reports the median ratio per configuration and the worst over seeds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tb_cnnviz import metadata  # noqa: E402
from tb_cnnviz.callbacks import CNNViz  # noqa: E402

#: name -> (builder, images per epoch, batch size, default epochs, default repeats)
CONFIGS = {
    "tutorial": ("tutorial", 64, 32, 25, 3),
    "demo-2000": ("demo", 2000, 64, 5, 5),
    "demo-4000": ("demo", 4000, 64, 5, 3),
    "demo-50000": ("demo", 50000, 64, 3, 1),
    "MobileNetV2": ("MobileNetV2", 256, 16, 3, 1),
    "EfficientNetB0": ("EfficientNetB0", 512, 16, 3, 1),
    "ResNet50": ("ResNet50", 512, 16, 3, 1),
}
VARIANTS = ("plain", "cnnviz", "keras_tb")


def make_data(kind: str, n: int, seed: int):
    """Training images and labels, and 8 probe images with labels, for one configuration."""
    if kind in ("demo", "tutorial"):
        from tb_cnnviz.demo.data import make_shapes

        x, y = make_shapes(n + 8, seed=seed)
        return x[8:], y[8:], x[:8], y[:8]
    rng = np.random.default_rng(seed)
    x = rng.random((n + 8, 224, 224, 3), dtype=np.float32)
    y = rng.integers(0, 10, n + 8)
    return x[8:], y[8:], x[:8], y[:8]


def make_model(kind: str, seed: int):
    keras.utils.set_random_seed(seed)
    if kind == "tutorial":  # two conv layers, as a first tutorial writes them
        model = keras.Sequential(
            [
                keras.Input((32, 32, 3)),
                keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model
    if kind == "demo":
        from tb_cnnviz.demo.model import build_demo_cnn

        return build_demo_cnn(seed=seed)
    model = getattr(keras.applications, kind)(weights=None, input_shape=(224, 224, 3), classes=10)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def folder_bytes(path: str, *, snapshots: bool = False) -> int:
    """Bytes of the pictures under `path`, or (`snapshots=True`) of the model snapshots only.

    Snapshots are bounded per run (two copies of the weights at the defaults), not per epoch:
    the per-epoch log size is that of the pictures.
    """
    total = 0
    for root, _, files in os.walk(path):
        inside = metadata.SNAPSHOTS_DIR in root.split(os.sep)
        if inside == snapshots:
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def drawn_counts(run_dir: str) -> tuple[collections.Counter, collections.Counter, dict]:
    """`(drawn, due, tags)` per kind, from the plan records in the event files of `run_dir`:
    drawings made and due over the run, and `{kind: (tags drawn at least once, tags due)}`."""
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util

    drawn, due = collections.Counter(), collections.Counter()
    tags_drawn: dict[str, set] = collections.defaultdict(set)
    tags_due: dict[str, set] = collections.defaultdict(set)
    for name in sorted(os.listdir(run_dir)):
        if "tfevents" not in name:
            continue
        for event in event_file_loader.EventFileLoader(os.path.join(run_dir, name)).Load():
            for value in event.summary.value:
                if not value.tag.endswith("/plan"):
                    continue
                record = json.loads(tensor_util.make_ndarray(value.tensor)[0])
                for tag in record["drawn"]:
                    kind = tag.rsplit("/", 1)[1]
                    drawn[kind] += 1
                    due[kind] += 1
                    tags_drawn[kind].add(tag)
                    tags_due[kind].add(tag)
                for tag in record["skipped"]:
                    kind = tag.rsplit("/", 1)[1]
                    due[kind] += 1
                    tags_due[kind].add(tag)
    tags = {k: (len(tags_drawn[k]), len(tags_due[k])) for k in tags_due}
    return drawn, due, tags


def run_config(name: str, seed: int, epochs: int, repeats: int) -> dict:
    kind, n, batch, _, _ = CONFIGS[name]
    x, y, probes, probe_labels = make_data(kind, n, seed)
    initial = make_model(kind, seed).get_weights()
    times = {v: [] for v in VARIANTS}
    cpu = {v: [] for v in VARIANTS}
    facts = {}
    for r in range(repeats):
        order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
        for variant in order:
            model = make_model(kind, seed)
            model.set_weights(initial)
            log_dir = tempfile.mkdtemp(prefix=f"overhead-{variant}-")
            callbacks = []
            viz = None
            if variant == "cnnviz":
                viz = CNNViz(log_dir, probe_images=probes, labels=probe_labels)
                callbacks = [viz]
            elif variant == "keras_tb":
                callbacks = [
                    keras.callbacks.TensorBoard(log_dir, histogram_freq=1, write_images=True)
                ]
            start, start_cpu = time.perf_counter(), time.process_time()
            model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, callbacks=callbacks)
            times[variant].append(time.perf_counter() - start)
            cpu[variant].append(time.process_time() - start_cpu)
            mb = folder_bytes(log_dir) / 2**20 / epochs
            if variant == "cnnviz":
                budget = viz.time_budget
                drawn, due, tags = drawn_counts(os.path.join(log_dir, "train"))
                facts["cnnviz"] = {
                    "mb": mb,
                    "own": budget.own_seconds / max(budget.train_seconds, 1e-9),
                    "drawn": {k: f"{drawn[k]}/{due[k]}" for k in sorted(due)},
                    "coverage": {k: f"{tags[k][0]}/{tags[k][1]}" for k in sorted(tags)},
                    "profile": budget.profile.table(),
                    "own_seconds": budget.own_seconds,
                    "snapshot_mb": folder_bytes(log_dir, snapshots=True) / 2**20,
                }
            elif variant == "keras_tb":
                facts["keras_tb"] = {"mb": mb}
            print(
                f"  [{name} seed {seed} repeat {r}] {variant}: {times[variant][-1]:.1f} s "
                f"(CPU {cpu[variant][-1]:.1f} s)",
                flush=True,
            )
    ratios = [{v: times[v][r] / times["plain"][r] for v in VARIANTS[1:]} for r in range(repeats)]
    cpu_ratios = [cpu["cnnviz"][r] / cpu["plain"][r] for r in range(repeats)]
    return {
        "plain": statistics.median(times["plain"]),
        "cnnviz": statistics.median(r["cnnviz"] for r in ratios),
        "keras_tb": statistics.median(r["keras_tb"] for r in ratios),
        "cnnviz_cpu": statistics.median(cpu_ratios),
        **{f"{k}_facts": v for k, v in facts.items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit()")
    parser.add_argument("--repeats", type=int, default=None, help="fits of each variant")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    args = parser.parse_args()
    rows = []
    for name in args.only:
        _, n, _, epochs, repeats = CONFIGS[name]
        epochs = args.epochs or epochs
        repeats = args.repeats or repeats
        results = []
        for seed in args.seeds:
            result = run_config(name, seed, epochs, repeats)
            results.append(result)
            f, k = result["cnnviz_facts"], result["keras_tb_facts"]
            print(
                f"[{name} seed {seed}] {epochs} epochs of {n} images: plain "
                f"{result['plain']:.1f} s; CNNViz {result['cnnviz']:.3f}x wall, "
                f"{result['cnnviz_cpu']:.3f}x CPU (own {f['own']:.1%} "
                f"of training, {f['mb']:.2f} MB/epoch, drawn {f['drawn']}, tags drawn at least "
                f"once {f['coverage']}); Keras TensorBoard "
                f"{result['keras_tb']:.3f}x ({k['mb']:.2f} MB/epoch)",
                flush=True,
            )
        rows.append((name, n, epochs, results))
    print()
    print(
        "| configuration | epochs x images | plain fit() | CNNViz defaults, wall (worst seed) "
        "| CNNViz, CPU time | CNNViz own time / training (worst) | Keras TensorBoard cb, wall "
        "| CNNViz MB/epoch | Keras TB MB/epoch | drawn (tags at least once; drawings) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, n, epochs, results in rows:
        plain = statistics.median(r["plain"] for r in results)
        wall = statistics.median(r["cnnviz"] for r in results)
        worst = max(r["cnnviz"] for r in results)
        own = max(r["cnnviz_facts"]["own"] for r in results)
        cpu = statistics.median(r["cnnviz_cpu"] for r in results)
        keras_tb = statistics.median(r["keras_tb"] for r in results)
        print(
            f"| {name} | {epochs} x {n} | {plain:.1f} s | {wall:.3f}x ({worst:.3f}x) "
            f"| {cpu:.3f}x | {own:.1%} | {keras_tb:.3f}x "
            f"| {max(r['cnnviz_facts']['mb'] for r in results):.2f} "
            f"| {max(r['keras_tb_facts']['mb'] for r in results):.2f} "
            f"| {coverage_text(results[0]['cnnviz_facts'])} |",
            flush=True,
        )
    print()
    print_profiles(rows)
    return 0


def coverage_text(facts) -> str:
    """`feature_maps 52/52 (40/156)`: tags drawn at least once / due; drawings made / due."""
    return ", ".join(
        f"{kind} {facts['coverage'][kind]} ({facts['drawn'][kind]})" for kind in facts["coverage"]
    )


def print_profiles(rows) -> None:
    """Where CNNViz's own time went (`tb_cnnviz.profile`), per configuration, kind and phase.

    Seconds over the whole run, summed over repeats and seeds' last repeat each (the `cnnviz`
    fit whose facts were kept).
    """
    from tb_cnnviz.profile import PHASES

    print("Where CNNViz's own time goes (seconds over the run; kinds x phases):")
    print()
    print("| configuration | kind | " + " | ".join(PHASES) + " | total |")
    print("|---|---|" + "---|" * (len(PHASES) + 1))
    for name, _, _, results in rows:
        merged: dict[str, collections.Counter] = {}
        for r in results:
            for kind, phases in r["cnnviz_facts"]["profile"].items():
                merged.setdefault(kind, collections.Counter()).update(phases)
        for kind in sorted(merged, key=lambda k: -sum(merged[k].values())):
            cells = [f"{merged[kind][p] / len(results):.2f}" for p in PHASES]
            total = sum(merged[kind].values()) / len(results)
            print(f"| {name} | {kind} | " + " | ".join(cells) + f" | {total:.2f} |")
        own = statistics.mean(r["cnnviz_facts"]["own_seconds"] for r in results)
        print(f"| {name} | (own time, all) | " + " | " * (len(PHASES) - 1) + f" | {own:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
