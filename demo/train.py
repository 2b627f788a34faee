"""Training the demo: two runs of the demo CNN with every tb-cnnviz callback."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np

from tb_cnnviz.demo.data import CLASS_NAMES, make_shapes
from tb_cnnviz.demo.model import build_demo_cnn

__all__ = ["demo_probes", "train_demo"]


def demo_probes(n: int = 8, *, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Returns `n` fixed probe images (one per class, in class order) and their labels.

    Example:
        >>> images, labels = demo_probes(4)
        >>> images.shape, labels.tolist()
        ((4, 32, 32, 3), [0, 1, 2, 3])
    """
    images, labels = make_shapes(40 * len(CLASS_NAMES), seed=seed)
    picks = [
        int(np.flatnonzero(labels == c % len(CLASS_NAMES))[c // len(CLASS_NAMES)]) for c in range(n)
    ]
    return images[picks], labels[picks]


def train_demo(
    logdir: str,
    *,
    epochs: int = 5,
    samples: int = 4000,
    runs=(("lr_1e-3", 1e-3), ("lr_1e-4", 1e-4)),
    clean: bool = True,
    verbose: int | str = "auto",
) -> list[str]:
    """Trains the demo CNN once per `(name, learning_rate)` in `runs`, logging to `logdir/name`.

    Each run gets Keras' own `TensorBoard` callback (scalars, histograms) and `CNNViz` with
    fixed probe images and the same reference images (a held-out batch, for comparing the
    runs), so the CNN Viz tab stands beside Scalars and Histograms.

    Args:
        logdir: The parent log directory.
        epochs: Epochs per run.
        samples: Training images (generated; 20% more are generated for validation).
        runs: `(run name, learning rate)` pairs.
        clean: Remove each run's folder first, so steps of an earlier demo do not mix in.
        verbose: Keras' `fit` verbosity; `"auto"` shows Keras' progress bar on a terminal and
            exactly one line per epoch anywhere else (a log, CI).

    Returns:
        The run folders written.

    Example:
        >>> import tempfile
        >>> train_demo(tempfile.mkdtemp(), epochs=1, samples=64, runs=(("a", 1e-3),),
        ...            verbose=0)  # doctest: +ELLIPSIS
        Training run 'a' (Adam, learning rate 0.001) -> .../a
        ['.../a']
    """
    import keras

    from tb_cnnviz.callbacks import CNNViz

    lines = verbose == "auto" and not sys.stdout.isatty()
    if verbose == "auto":
        verbose = 1 if not lines else 0
    x, y = make_shapes(samples, seed=0)
    x_val, y_val = make_shapes(max(samples // 5, 32), seed=2)
    probes, probe_labels = demo_probes()
    written = []
    for name, learning_rate in runs:
        run_dir = os.path.join(logdir, name)
        if clean and os.path.isdir(run_dir):
            shutil.rmtree(run_dir)
        print(f"Training run {name!r} (Adam, learning rate {learning_rate:g}) -> {run_dir}")
        model = build_demo_cnn(learning_rate)
        callbacks = [
            keras.callbacks.TensorBoard(run_dir, histogram_freq=1),
            # The demo shows every kind at every epoch; in real training, keep the default
            # budget (5% of training time) or pick your own.
            CNNViz(
                run_dir,
                probe_images=probes,
                labels=probe_labels,
                class_names=list(CLASS_NAMES),
                # The same held-out images in both runs: the tab's Similarity view, Align
                # and the Examples kind compare the runs' responses to them.
                reference_images=x_val[:256],
                budget=None,
            ),
        ]
        if lines:  # Keras' verbose=2 prints two lines per epoch; a log reads better with one
            callbacks.append(_epoch_lines(name, epochs))
        model.fit(
            x,
            y,
            epochs=epochs,
            batch_size=64,
            validation_data=(x_val, y_val),
            verbose=verbose,
            callbacks=callbacks,
        )
        written.append(run_dir)
    return written


def _epoch_lines(run: str, epochs: int):
    """A callback printing one line per epoch: the run, the epoch, the metrics, the time."""
    import keras

    from tb_cnnviz.progress import Progress

    bar = Progress(epochs, f"{run} epoch", stream=sys.stdout, interactive=False)

    def report(epoch, logs):
        bar.advance(", ".join(f"{k} {v:.4g}" for k, v in sorted((logs or {}).items())))

    return keras.callbacks.LambdaCallback(on_epoch_end=report)
