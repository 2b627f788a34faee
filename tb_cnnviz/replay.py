"""Replay: CNN Viz pictures for a training run that was done without the callbacks.

`keras.callbacks.ModelCheckpoint("ckpt/model_{epoch:02d}.keras")` leaves one saved model per
epoch. `replay` loads them in epoch order and drives `tb_cnnviz.callbacks.CNNViz` over them as
`model.fit` would have (`set_model`, `on_train_begin`, then `on_epoch_end` per checkpoint,
`on_train_end`), so every kind `CNNViz` logs, now or in later versions, is replayed too.

How checkpoints become steps
============================

Keras numbers the `{epoch}` of a checkpoint name from 1, while the callbacks log each epoch at
the 0-based index Keras hands to `on_epoch_end`. `model_03.keras`, saved at the end of the third
epoch, is therefore logged at **step 2**: the step `CNNViz` would have logged that epoch at, so a
replayed run lines up with a run logged by the callbacks, epoch for epoch. Checkpoints whose
numbers start at 0 are taken as already 0-based and logged at their own number.

The epoch number is read from the file name: the first number that differs between the
checkpoints (`model_03-0.42.keras` is epoch 3), or the first number when there is a single one.
The first checkpoint is loaded with `keras.saving.load_model(..., compile=False)`; the weights of
the next ones are loaded into that same model, as training would have changed them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np

from tb_cnnviz.progress import Progress
from tb_cnnviz.reader import names_text, natural_key

__all__ = [
    "CHECKPOINT_SUFFIX",
    "Checkpoint",
    "ReplayError",
    "find_checkpoints",
    "load_probe_images",
    "replay",
]

#: File names replay reads: what `keras.callbacks.ModelCheckpoint` writes for whole models.
CHECKPOINT_SUFFIX = ".keras"


class ReplayError(ValueError):
    """Checkpoints that cannot be replayed; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One saved model and the step it is logged at.

    Attributes:
        path: The `.keras` file.
        epoch: The epoch number in its name, as written (1-based with `ModelCheckpoint`).
        step: The step its pictures are logged at (the callbacks' 0-based epoch index).
    """

    path: str
    epoch: int
    step: int


def find_checkpoints(directory: str | os.PathLike) -> list[Checkpoint]:
    """Lists the `.keras` checkpoints of a directory in epoch order, with their steps.

    Args:
        directory: The folder `ModelCheckpoint` wrote into.

    Returns:
        The checkpoints, by ascending step.

    Raises:
        ReplayError: If the folder does not exist, holds no `.keras` file, or a file's epoch
            cannot be told from its name, or two files share one.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("model_10.keras", "model_09.keras", "model_11.keras", "notes.txt"):
        ...     _ = (folder / name).write_bytes(b"")
        >>> [(os.path.basename(c.path), c.step) for c in find_checkpoints(folder)]
        [('model_09.keras', 8), ('model_10.keras', 9), ('model_11.keras', 10)]
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ReplayError(f"checkpoint directory {directory!r} is not a directory")
    names = sorted(
        (n for n in os.listdir(directory) if n.endswith(CHECKPOINT_SUFFIX)), key=natural_key
    )
    names = [n for n in names if os.path.isfile(os.path.join(directory, n))]
    if not names:
        raise ReplayError(
            f"no {CHECKPOINT_SUFFIX} files in {directory!r}; save one per epoch with "
            "keras.callbacks.ModelCheckpoint('<dir>/model_{epoch:02d}.keras')"
        )
    numbers = {n: [int(d) for d in re.findall(r"\d+", n[: -len(CHECKPOINT_SUFFIX)])] for n in names}
    unnumbered = [n for n, found in numbers.items() if not found]
    if unnumbered:
        raise ReplayError(
            f"cannot tell the epoch of {names_text(unnumbered)} from the name; name checkpoints "
            "with the epoch, as ModelCheckpoint('<dir>/model_{epoch:02d}.keras') does"
        )
    position = _epoch_position(list(numbers.values()))
    epochs = {n: numbers[n][position] for n in names}
    seen: dict[int, str] = {}
    for name, epoch in epochs.items():
        if epoch in seen:
            raise ReplayError(
                f"{seen[epoch]!r} and {name!r} both look like epoch {epoch}; keep one "
                "checkpoint per epoch in the directory"
            )
        seen[epoch] = name
    offset = 0 if min(epochs.values()) == 0 else 1  # ModelCheckpoint's {epoch} starts at 1
    checkpoints = [
        Checkpoint(os.path.join(directory, n), epoch=e, step=e - offset) for n, e in epochs.items()
    ]
    return sorted(checkpoints, key=lambda c: c.step)


def replay(
    checkpoint_dir: str | os.PathLike,
    logdir: str | os.PathLike,
    *,
    probe_images=None,
    labels=None,
    layers: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Checkpoint]:
    """Logs CNN Viz pictures of saved checkpoints as if `CNNViz` had run during training.

    Pictures go where `CNNViz(logdir)` writes them: the `train` run of `logdir`. Kinds that
    need probe images are skipped without them.

    Args:
        checkpoint_dir: The folder of `.keras` checkpoints, one per epoch.
        logdir: The `log_dir` to write to, as given to `CNNViz`.
        probe_images: Images `[n, *input_shape]` for feature maps and attribution.
        labels: The probe images' true classes, for attribution.
        layers: Layer names to draw; `None` means every conv layer.
        progress: Report each checkpoint on stderr.

    Returns:
        The checkpoints replayed, in order.

    Raises:
        ReplayError: If the checkpoints cannot be found or loaded, or the run already holds
            CNN Viz pictures (steps are kept once; replay into a fresh `logdir`).
        ValueError: If `CNNViz` rejects its arguments for this model (for example probe
            images of the wrong shape).

    Example:
        >>> import tempfile, numpy as np, keras
        >>> folder, logdir = tempfile.mkdtemp(), tempfile.mkdtemp()
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> save = keras.callbacks.ModelCheckpoint(folder + "/model_{epoch:02d}.keras")
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 2)), epochs=2, verbose=0,
        ...               callbacks=[save])
        >>> [c.step for c in replay(folder, logdir, progress=False)]
        [0, 1]
    """
    import keras

    from tb_cnnviz.callbacks import CNNViz

    checkpoints = find_checkpoints(checkpoint_dir)
    logdir = os.fspath(logdir)
    _check_fresh(os.path.join(logdir, "train"))
    model = _load(keras, checkpoints[0])
    # Replay is all the run there is: no training to keep cheap, every kind at every checkpoint.
    options = {"probe_images": probe_images, "budget": None}
    if labels is not None:
        options["labels"] = labels
    if layers is not None:
        options["layers"] = list(layers)
    viz = CNNViz(logdir, **options)
    viz.set_model(model)
    viz.set_params({"epochs": checkpoints[-1].step + 1, "steps": None, "verbose": 0})
    viz.on_train_begin()
    bar = Progress(len(checkpoints), "replay") if progress else None
    try:
        for i, checkpoint in enumerate(checkpoints):
            if i:
                _load_weights(model, checkpoint)
            viz.on_epoch_begin(checkpoint.step)
            viz.on_epoch_end(checkpoint.step, logs={})
            if bar is not None:
                bar.advance(f"{os.path.basename(checkpoint.path)} -> step {checkpoint.step}")
    finally:
        viz.on_train_end()
        if bar is not None:
            bar.close()
    return checkpoints


def load_probe_images(path: str | os.PathLike) -> np.ndarray:
    """Loads probe images (or labels) saved with `numpy.save`.

    Raises:
        ReplayError: If the file is missing or not a plain `.npy` array.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/probes.npy"
        >>> np.save(path, np.zeros((2, 8, 8, 3)))
        >>> load_probe_images(path).shape
        (2, 8, 8, 3)
    """
    path = os.fspath(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ReplayError(f"cannot read {path!r} as a .npy array: {e}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise ReplayError(f"{path!r} is not a single .npy array (save it with numpy.save)")
    return array


def _epoch_position(numbers: list[list[int]]) -> int:
    """Which number of the names is the epoch: the first that differs between files."""
    shortest = min(len(found) for found in numbers)
    for position in range(shortest):
        if len({found[position] for found in numbers}) > 1:
            return position
    return 0


def _check_fresh(run_dir: str) -> None:
    """Refuses a run that already holds pictures: TensorBoard keeps the first write of a step."""
    if not os.path.isdir(run_dir):
        return
    from tb_cnnviz.reader import Logdir

    if Logdir(run_dir).runs():
        raise ReplayError(
            f"{run_dir!r} already holds CNN Viz pictures; replay into a new --logdir "
            "(TensorBoard would show the old pictures for steps written twice)"
        )


def _load(keras, checkpoint: Checkpoint):
    try:
        return keras.saving.load_model(checkpoint.path, compile=False)
    except Exception as e:  # Keras raises many types for a damaged or foreign file
        raise ReplayError(f"cannot load {checkpoint.path!r}: {_short(e)}") from e


def _load_weights(model, checkpoint: Checkpoint) -> None:
    try:
        model.load_weights(checkpoint.path)
    except Exception as e:
        raise ReplayError(
            f"cannot load the weights of {checkpoint.path!r} into the model of the first "
            f"checkpoint: {_short(e)}"
        ) from e


def _short(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
