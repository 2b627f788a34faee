"""Activation-maximization benchmark: every figure of issue 3, measured side by side in one run.

Setting: the demo CNN (`tb_cnnviz.demo`: 32x32x3 input, Conv32-Conv32-MaxPool-Conv64-Conv64-
MaxPool-Flatten-Dense128-Dense10, Adam) trained one epoch on 10,000 generated, learnable images
(`tb_cnnviz.demo.data.make_shapes`: ten shape classes in random colours, at a random place and
size); the layer is its last conv layer `conv4` (64 filters), 128 steps at 32x32.

Sections (all by default; pick with --only):

* speed: the compiled batched renderer (default regularization: Fourier parameterization,
  decorrelated colours, transforms) against the compute floor, i.e. the same number of plain
  forward+backward passes of a batch of 64 through the truncated model, compiled the same way
  (`tb_cnnviz.backend.compile`: a `tf.function` on TensorFlow, a `jax.jit` on JAX);
  against the one-filter-at-a-time eager gradient loop of the tutorials (timed on a subset of
  filters and extrapolated per filter); on TensorFlow also with XLA (`jit_compile=True`) against
  without. The one-time compile of the renderer is reported apart.
* quality: activation reached and high-frequency energy against a plain pixel-space Adam batch
  without regularization. HF energy of an image: normalize each channel to zero mean and unit
  variance, take the 2-D power spectrum, and report the fraction of power at radial frequency
  above half Nyquist (0.25 cycles/pixel); averaged over images.
* warm: after one more epoch of training, the steps a warm start (from the previous epoch's
  images) needs to reach 95% of a cold start's mean activation.
* truth: for each conv layer, the share of live filters whose image (cold, `--steps` steps, at
  the callbacks' defaults) excites the filter more than the best of `--truth-images` real images.
* overhead: fit() of the demo CNN on 50,000 random 32x32 images (CIFAR-10's size), 3 epochs
  with `CNNViz` (its defaults, 8 probe images) and 3 without, in one process, epoch by epoch in
  turns (one fit() call per epoch; which model goes first alternates). Per epoch, the ratio of
  the two epoch times, and (insensitive to other processes sharing the CPU) the ratio of plain
  epoch time plus the time spent inside CNNViz's hooks to plain epoch time; then the median
  over the steady epochs (epoch 1 includes CNNViz's one-time tracing).
* figure: `--figure PATH` renders every conv layer of the demo CNN, trained `--figure-epochs`
  epochs, into one PNG grid.

Timings take the best of `--repeats` runs, interleaved, because other processes share the CPU.

The backend is Keras': `KERAS_BACKEND=jax python benchmarks/actmax.py` measures JAX (the
renderer and its compute floor both under `jax.jit`).

Run: `python benchmarks/actmax.py` (about 20 minutes on 2 busy cores, most of it the overhead
section's four 50,000-image epochs; `--only speed quality warm` takes about 5).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from tb_cnnviz import actmax, backend  # noqa: E402
from tb_cnnviz.demo.data import make_shapes  # noqa: E402
from tb_cnnviz.demo.model import build_demo_cnn  # noqa: E402

IMAGE = 32
LAYER = "conv4"
FILTERS = 64


def train_demo(epochs: int = 1, n: int = 10_000, seed: int = 0):
    """The demo CNN trained `epochs` epochs on `n` generated images; returns it and the data."""
    x, y = make_shapes(n, seed=seed)
    model = build_demo_cnn(seed=seed)
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model, (x, y)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# -- the baselines -----------------------------------------------------------------------------
def compute_floor(model, steps: int, jit_compile: bool = False):
    """`steps` plain forward+backward passes of a batch of 64 through the truncated model, as one
    compiled loop (`backend.compile_loop`, as the renderer's): the gradient of the layer's mean
    output with respect to the input batch.

    `jit_compile=True` (TensorFlow only) compiles the same loop with XLA."""
    extractor = keras.Model(model.inputs[0], model.get_layer(LAYER).output)
    start = np.random.default_rng(0).random((FILTERS, IMAGE, IMAGE, 3), np.float32)
    gradient = backend.value_and_grad(
        lambda batch: (ops.mean(extractor(batch, training=False)), None)
    )

    def step(batch):
        _, grad = gradient(batch)
        return batch + 1e-3 * grad

    if jit_compile:
        import tensorflow as tf

        loop = tf.function(
            lambda batch, n: ops.fori_loop(0, n, lambda i, b: step(b), batch), jit_compile=True
        )

        def run(n, batch):
            return loop(batch, ops.convert_to_tensor(np.int32(n)))

    else:
        run = backend.compile_loop(step, extractor.variables)
    batch = ops.convert_to_tensor(start)

    def timed():
        backend.to_numpy(run(steps, batch))

    backend.to_numpy(run(2, batch))  # trace and compile
    return timed


def eager_loop(model, filters, steps: int, optimizer: str):
    """One filter at a time, an eager gradient loop (a GradientTape on TensorFlow), as the
    tutorials write it.

    `optimizer="adam"`: a Keras Adam step per iteration (as tf-keras-vis does); `"normalized"`:
    the Keras tutorial's normalized-gradient step, without its tf.function.
    """
    extractor = keras.Model(model.inputs[0], model.get_layer(LAYER).output)
    rng = np.random.default_rng(0)
    for f in filters:
        image = keras.Variable(rng.uniform(0.4, 0.6, (1, IMAGE, IMAGE, 3)).astype(np.float32))
        adam = keras.optimizers.Adam(0.05)
        gradient = backend.value_and_grad(
            lambda x, f=f: (ops.mean(extractor(x, training=False)[..., f]), None)
        )
        for _ in range(steps):
            _, grad = gradient(image.value)
            if optimizer == "adam":
                adam.apply_gradients([(-grad, image)])
            else:
                norm = ops.sqrt(ops.maximum(ops.sum(ops.square(grad)), 1e-12))  # l2_normalize
                image.assign(image.value + 0.05 * grad / norm)
            image.assign(ops.clip(image.value, 0.0, 1.0))


def pixel_baseline(model, filters, steps: int, seed: int = 0, lr: float = 0.05):
    """A plain pixel-space Adam batch without regularization: the images are the variables, in
    [0, 1], clipped after every step; the objective is each filter's mean activation.

    Returns the final images (NumPy) and what each reached."""
    extractor = keras.Model(model.inputs[0], model.get_layer(LAYER).output)
    rng = np.random.default_rng(seed)
    start = rng.uniform(0.4, 0.6, (len(filters), IMAGE, IMAGE, 3)).astype(np.float32)
    ids = np.asarray(filters, np.int32)[:, None]
    beta1, beta2, epsilon = 0.9, 0.999, 1e-7  # keras.optimizers.Adam's defaults

    def reached(images):
        means = ops.mean(extractor(images, training=False), axis=(1, 2))
        return ops.take_along_axis(means, ids, axis=-1)[:, 0]

    gradient = backend.value_and_grad(lambda images: (ops.sum(reached(images)), None))

    def run(images, n):
        def body(i, state):
            images, m, v = state
            _, grad = gradient(images)
            t = ops.cast(i + 1, "float32")
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            step = lr * ops.sqrt(1 - beta2**t) / (1 - beta1**t)
            images = ops.clip(images + step * m / (ops.sqrt(v) + epsilon), 0.0, 1.0)
            return images, m, v

        zeros = ops.zeros_like(images)
        images, _, _ = ops.fori_loop(0, n, body, (images, zeros, zeros))
        return images, reached(images)

    images, act = backend.compile(run, extractor.variables)(
        ops.convert_to_tensor(start), ops.convert_to_tensor(np.int32(steps))
    )
    return backend.to_numpy(images), backend.to_numpy(act)


def reached(model, images, filters) -> np.ndarray:
    """Each image's own filter's mean activation (post-ReLU)."""
    extractor = keras.Model(model.inputs[0], model.get_layer(LAYER).output)
    maps = backend.to_numpy(extractor(np.asarray(images), training=False)).mean(axis=(1, 2))
    return maps[np.arange(len(filters)), filters]


def hf_energy(images: np.ndarray) -> float:
    """Mean fraction of spectral power above half Nyquist (0.25 cycles/pixel, radially), after
    normalizing each image's channels to zero mean and unit variance."""
    x = np.asarray(images, np.float64)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    x = x / (x.std(axis=(1, 2), keepdims=True) + 1e-8)
    power = np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2  # [n, h, w, c]
    fy = np.fft.fftfreq(x.shape[1])[:, None]
    fx = np.fft.fftfreq(x.shape[2])[None, :]
    high = (np.sqrt(fx**2 + fy**2) > 0.25)[None, :, :, None]
    fractions = (power * high).sum(axis=(1, 2, 3)) / power.sum(axis=(1, 2, 3))
    return float(fractions.mean())


# -- sections ----------------------------------------------------------------------------------
def speed(model, args, out):
    filters = list(range(FILTERS))
    renderer = actmax.Renderer(model, LAYER)
    start = time.perf_counter()
    renderer(filters, steps=2)  # trace and compile
    out("speed", "renderer: trace and compile, one-time", f"{time.perf_counter() - start:.2f} s")
    floor = compute_floor(model, args.steps)
    ours_t, floor_t = [], []
    for _ in range(args.repeats):  # interleaved: other processes share the CPU
        floor_t.append(best_of(floor, 1))
        ours_t.append(best_of(lambda: renderer(filters, steps=args.steps), 1))
    ours, floor_s = min(ours_t), min(floor_t)
    out("speed", "renderer, all 64 filters, one call", f"{ours:.2f} s")
    out("speed", f"compute floor ({args.steps} fwd+bwd of 64)", f"{floor_s:.2f} s")
    out("speed", "renderer / compute floor (target <= 1.5)", f"{ours / floor_s:.2f}x")
    subset = filters[: args.eager_filters]
    for kind, label in (("adam", "Keras Adam, as tf-keras-vis"), ("normalized", "normalized step")):
        eager_loop(model, subset[:1], 2, kind)  # warm up
        eager = best_of(lambda kind=kind: eager_loop(model, subset, args.steps, kind), 1)
        per_filter = eager / len(subset)
        scaled = f"{len(subset)} filters timed, x{FILTERS / len(subset):g}"
        out("speed", f"eager one-filter loop ({label}), {scaled}", f"{per_filter * FILTERS:.1f} s")
        ratio = per_filter * FILTERS / ours
        out("speed", f"eager ({label}) / renderer (target >= 20)", f"{ratio:.1f}x")
    if backend.name() == "tensorflow":  # JAX always compiles with XLA
        xla = compute_floor(model, args.xla_steps, jit_compile=True)
        plain = compute_floor(model, args.xla_steps)
        ratio = best_of(xla, args.repeats) / best_of(plain, args.repeats)
        what = f"compute floor with XLA / without ({args.xla_steps} steps)"
        out("speed", what, f"{ratio:.2f}x")


def quality(model, data, args, out):
    filters = list(range(FILTERS))
    base_images, base_act = pixel_baseline(model, filters, args.steps)
    results = {"default": actmax.render(model, LAYER, filters, steps=args.steps)}
    colours = actmax.color_correlation(data[0][:256])
    results["data colours"] = actmax.render(
        model, LAYER, filters, steps=args.steps, decorrelate=colours
    )
    base_hf = hf_energy(base_images)
    summary = f"{base_act.mean():.3f}, {base_hf:.3f}"
    out("quality", "pixel baseline: mean activation, HF energy", summary)
    for name, images in results.items():
        act = reached(model, images, filters)
        out(
            "quality",
            f"{name}: activation / baseline (target >= 0.9)",
            f"{act.mean() / base_act.mean():.2f}x",
        )
        out(
            "quality",
            f"{name}: HF energy / baseline (target <= 0.5)",
            f"{hf_energy(images) / base_hf:.2f}x",
        )
    return results["default"]


def warm(model, data, previous, args, out):
    """One more epoch of training, then warm steps from `previous` against a cold start."""
    x, y = data
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    filters = list(range(FILTERS))
    renderer = actmax.Renderer(model, LAYER)
    cold = renderer(filters, steps=args.steps).activations.mean()
    goal = 0.95 * cold
    taken, current = 0, previous
    found = None
    reached_at = {0: reached(model, previous, filters).mean()}
    for target in (1, 2, 4, 8, 16, 32, 64, 128):
        current = renderer(filters, steps=target - taken, init=current)
        taken = target
        reached_at[target] = current.activations.mean()
        if found is None and reached_at[target] >= goal:
            found = target
            break
    if reached_at[0] >= goal:
        found = 0
    curve = ", ".join(f"{k}: {v / cold:.2f}" for k, v in reached_at.items())
    out("warm", "cold start activation after one more epoch", f"{cold:.3f}")
    out("warm", "warm start activation / cold, by steps", curve)
    out(
        "warm",
        "steps a warm start needs for 95% of a cold start's activation",
        "more than 128" if found is None else f"{found} (cold: {args.steps})",
    )


def overhead(args, out):
    """fit() of the demo CNN on 50,000 (--overhead-images) images, with and without CNNViz.

    The two models (same initial weights, same data) train epoch by epoch in turns, one fit()
    call per epoch, the one going first alternating, so a slowdown of the shared machine falls
    on both; each epoch's ratio compares neighbouring epochs. CNNViz's one-time setup per fit()
    (in `on_train_begin`) is outside the epoch timer, as it is outside a real run's epochs.
    """
    from tb_cnnviz.callbacks import CNNViz

    n = args.overhead_images
    rng = np.random.default_rng(0)
    x = rng.random((n, IMAGE, IMAGE, 3), dtype=np.float32)
    y = rng.integers(0, 10, n)
    probes = x[:8]
    times = {"plain": [], "cnnviz": []}
    spent = []  # seconds inside CNNViz's per-batch and per-epoch hooks, per epoch

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self, sink):
            super().__init__()
            self.sink = sink

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.sink.append(time.perf_counter() - self.start)

    class TimedCNNViz(CNNViz):
        def on_epoch_begin(self, epoch, logs=None):
            spent.append(0.0)

        def _timed(self, hook, *args):
            start = time.perf_counter()
            getattr(super(), hook)(*args)
            spent[-1] += time.perf_counter() - start

        def on_train_batch_end(self, batch, logs=None):
            self._timed("on_train_batch_end", batch, logs)

        def on_epoch_end(self, epoch, logs=None):
            self._timed("on_epoch_end", epoch, logs)

    models = {name: build_demo_cnn(seed=0) for name in times}
    callbacks = {
        "plain": [EpochTimer(times["plain"])],
        # CNNViz first, so the timer's epoch end comes after CNNViz has logged.
        "cnnviz": [
            TimedCNNViz(tempfile.mkdtemp(), probe_images=probes),
            EpochTimer(times["cnnviz"]),
        ],
    }
    for epoch in range(args.overhead_epochs):
        order = ("plain", "cnnviz") if epoch % 2 == 0 else ("cnnviz", "plain")
        for name in order:
            models[name].fit(
                x,
                y,
                initial_epoch=epoch,
                epochs=epoch + 1,
                batch_size=32,
                verbose=0,
                callbacks=callbacks[name],
            )
    ratios, hook_ratios = [], []
    for epoch, (plain, viz) in enumerate(zip(times["plain"], times["cnnviz"], strict=True)):
        what = f"epoch {epoch + 1} of {n} images" + (" (includes tracing)" if epoch == 0 else "")
        out(
            "overhead",
            f"{what}: CNNViz / plain fit, side by side",
            f"{viz / plain:.3f}x ({viz:.1f} s / {plain:.1f} s)",
        )
        out(
            "overhead",
            f"{what}: (plain + time inside CNNViz's hooks) / plain",
            f"{(plain + spent[epoch]) / plain:.3f}x ({spent[epoch]:.1f} s in CNNViz)",
        )
        if epoch:
            ratios.append(viz / plain)
            hook_ratios.append((plain + spent[epoch]) / plain)
    if ratios:
        out(
            "overhead",
            "steady epochs, median: CNNViz / plain fit (target <= 1.10)",
            f"{np.median(ratios):.3f}x; (plain + hooks) / plain {np.median(hook_ratios):.3f}x",
        )


def truth(model, data, args, out):
    """Each live filter's image against the best of `--truth-images` real images.

    For every conv layer of the demo CNN, the images `Renderer` draws cold in `--steps` steps,
    at the defaults of the callbacks (`size="receptive_field"`): a full-size image is compared
    on the filter's mean activation with the real image of the highest mean; an image on a
    receptive-field canvas on its centre position with the highest activation at any position
    of any real image (the best patch). A filter is live when its highest activation on the
    real images is at least 1% of the highest of its layer (a filter that barely fires on any
    real image has nothing to beat, nor much to show).
    """
    from tb_cnnviz import layers as layer_lib

    x, _ = data
    real = x[-args.truth_images :]
    for path_, layer in layer_lib.conv_layers(model):
        renderer = actmax.Renderer(model, path_, size="receptive_field")
        images = np.asarray(renderer(steps=args.steps), np.float32)
        extract = layer_lib.extractor(model, [layer])
        batches = range(0, len(real), 256)
        acts = np.concatenate([backend.to_numpy(extract(real[s : s + 256])[0]) for s in batches])
        with layer_lib.capture_outputs([layer]) as seen:
            layer_lib.run_model(model, images, any_size=True)
        mine = backend.to_numpy(seen[id(layer)])
        rows = np.arange(len(images))
        if renderer.receptive_field is None:
            got = mine.mean(axis=(1, 2))[rows, rows]
            best = acts.mean(axis=(1, 2)).max(axis=0)
        else:
            got = mine[rows, mine.shape[1] // 2, mine.shape[2] // 2, rows]
            best = acts.max(axis=(0, 1, 2))
        peak = acts.max(axis=(0, 1, 2))
        live = peak >= 0.01 * peak.max()
        wins = float(np.mean((got > best)[live]))
        ratio = float(np.median(got[live] / np.maximum(best[live], 1e-12)))
        out(
            "truth",
            f"{path_} ({renderer.size[0]}x{renderer.size[1]}, {int(live.sum())} live filters)",
            f"{wins:.0%} excite their filter more than the best of {len(real)} real images "
            f"(median {ratio:.2f}x)",
        )


def figure(path: str, args, out):
    """Every conv layer of the demo CNN, trained a few epochs, as one labelled PNG grid."""
    from PIL import Image, ImageDraw

    model, (x, _) = train_demo(args.figure_epochs)
    colours = actmax.color_correlation(x[:256])
    scale, rows = 3, []
    for path_, layer in [(layer.name, layer) for layer in model.layers if "conv" in layer.name]:
        images = actmax.render(model, path_, steps=args.figure_steps, decorrelate=colours)
        n, h, w, _ = images.shape
        cols = 16
        grid = np.ones(((-(-n // cols)) * (h + 2), cols * (w + 2), 3), np.float32)
        for i, image in enumerate(np.asarray(images)):
            row, col = divmod(i, cols)
            top, left = row * (h + 2) + 1, col * (w + 2) + 1
            grid[top : top + h, left : left + w] = image
        picture = Image.fromarray((np.clip(grid, 0, 1) * 255).astype(np.uint8))
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
        label = Image.new("RGB", (picture.width, 22), "white")
        ImageDraw.Draw(label).text((4, 4), f"{path_} ({layer.filters} filters)", fill="black")
        rows += [label, picture]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height
    sheet.save(path)
    out("figure", "actmax grid of every conv layer", path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", nargs="*", default=["speed", "quality", "warm", "truth", "overhead"]
    )
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eager-filters", type=int, default=2)
    parser.add_argument("--xla-steps", type=int, default=4)
    parser.add_argument("--overhead-images", type=int, default=50_000)
    parser.add_argument("--overhead-epochs", type=int, default=3)
    parser.add_argument("--truth-images", type=int, default=2000)
    parser.add_argument("--figure", default=None, help="write the actmax grid PNG here")
    parser.add_argument("--figure-epochs", type=int, default=5)
    parser.add_argument("--figure-steps", type=int, default=256)
    args = parser.parse_args(argv)

    def out(section, what, value):
        print(f"[{section}] {what}: {value}", flush=True)

    out("setup", "Keras backend (KERAS_BACKEND)", backend.name())

    needs_model = {"speed", "quality", "warm", "truth"} & set(args.only)
    if needs_model:
        model, data = train_demo(1)
    if "speed" in args.only:
        speed(model, args, out)
    previous = None
    if "quality" in args.only or "warm" in args.only:
        previous = quality(model, data, args, out)
    if "warm" in args.only:
        warm(model, data, previous, args, out)
    if "truth" in args.only:
        truth(model, data, args, out)
    if "overhead" in args.only:
        overhead(args, out)
    if args.figure:
        figure(args.figure, args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
