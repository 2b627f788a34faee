"""Ask the model: run any image through a run's model at a logged step.

`probe(logdir, run, image, step=None, layer=None, target=None)` finds the run's snapshots (kept
by `tb_cnnviz.callbacks.Snapshots`, which `CNNViz` runs by default; the layout is in
`tb_cnnviz.metadata.parse_snapshot_index`), rebuilds the model from its architecture with
Keras' `safe_mode=True` (no code from the logdir is ever run), loads the step's weights, and
returns what the model makes of the image: its predictions, the Grad-CAM heatmap
(`tb_cnnviz.attribution.gradcam`) and one layer's feature maps
(`tb_cnnviz.layers.extractor`), the same numbers the callbacks log.

It runs on whichever Keras backend is installed (TensorFlow is not needed) and is safe to call
from a server: only files inside `logdir` are opened, loaded models are kept in a small LRU
cache (`MAX_MODELS` models and `MAX_CACHE_BYTES` of weights at most, keyed by the files and
their modification times), and one call at a time runs each model (others wait up to
`timeout` seconds). The module itself can be called: `tb_cnnviz.probe(...)` is `probe(...)`.

How an image is fed to the model
================================

1. A file name or encoded bytes (PNG, JPEG, … anything Pillow reads) is decoded; an array is
   taken as it is (`[h, w]`, `[h, w, c]` or `[1, h, w, c]`).
2. Pixels are read as intensities in [0, 1]: `uint8` (and any integer image) is divided by 255,
   as is a float image whose maximum is above 1 (taken as [0, 255]); other floats are kept.
3. Channels are matched to the model's input: grey is repeated to RGB, an alpha channel is
   dropped, RGB becomes grey by its channel mean for a one-channel model.
4. The image is resized (bilinear, antialiased) to the input size recorded in the index.
5. [0, 1] is mapped linearly onto the value range recorded with the snapshots: the
   `value_range` the callbacks were given (default `(0, 1)`), or where the probe images fall
   outside it, the smallest of [0, 1], [-1, 1] and [0, 255] that holds them (else their own
   minimum and maximum): `tb_cnnviz.callbacks.snapshots.input_range`.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import re
import sys
import threading
import types

import numpy as np

from tb_cnnviz import metadata

__all__ = [
    "MAX_CACHE_BYTES",
    "MAX_MODELS",
    "ModelLoadError",
    "Prediction",
    "ProbeResult",
    "clear_cache",
    "probe",
    "snapshot_index",
    "snapshot_steps",
]

#: Loaded models kept at most (least recently used dropped first).
MAX_MODELS = 4
#: Bytes of loaded weights kept at most (a single larger model is still loaded, then dropped).
MAX_CACHE_BYTES = 1 << 30

_DRIVE = re.compile(r"^[A-Za-z]:")  # a Windows drive: absolute there
_RUN_SEARCH_LIMIT = 2000  # directories looked at to list the runs that have snapshots


class ModelLoadError(ValueError):
    """The snapshot's model cannot be rebuilt or its weights loaded here; the message says why
    and what to change (a server answers it apart from a bad request)."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One class the model sees in the image.

    Attributes:
        class_id: The class index.
        name: Its name from the snapshots' class names, or None.
        probability: The model's probability of it.
    """

    class_id: int
    name: str | None
    probability: float


@dataclasses.dataclass
class ProbeResult:
    """What the model at one step makes of one image.

    Attributes:
        run: The run, as given.
        step: The step whose weights ran.
        steps: Every step of the run that has a snapshot.
        image: The image as fed to the model, float32 `[h, w, c]`.
        value_range: `(low, high)` the image was mapped onto.
        head: How the output was read (`tb_cnnviz.heads.KINDS`).
        predictions: Every class, most probable first; empty for a regression.
        target: The class the heatmap explains (the predicted one unless `target` was given).
        heatmap: Grad-CAM of `target`, float32 `[h, w]` in [0, 1].
        heatmap_layer: The conv layer Grad-CAM read.
        layer: The layer whose feature maps these are.
        feature_maps: Its output, float32 `[h', w', filters]`.
        filter_strength: Each filter's mean activation, float32 `[filters]`, for sorting.
    """

    run: str
    step: int
    steps: list[int]
    image: np.ndarray
    value_range: tuple[float, float]
    head: str
    predictions: list[Prediction]
    target: int | None
    heatmap: np.ndarray
    heatmap_layer: str | None
    layer: str
    feature_maps: np.ndarray
    filter_strength: np.ndarray


def probe(logdir, run, image, step=None, layer=None, target=None, *, timeout=60.0):
    """Runs an image through the run's model at a logged step.

    Args:
        logdir: The log directory TensorBoard serves.
        run: The run: `NAME` finds `NAME/train` (where the callbacks write) too. No absolute
            paths and no `..`.
        image: A file name, encoded image bytes, or an array (see the module docstring for how
            it is scaled, matched and resized).
        step: The step; None for the latest one with a snapshot.
        layer: The layer whose feature maps to return (name or `outer/inner` path); None for
            the last conv layer.
        target: The class the heatmap explains; None for the predicted class.
        timeout: Seconds to wait while another call runs the same model.

    Returns:
        A `ProbeResult`.

    Raises:
        ValueError: If the run has no snapshots, `step` has none (the message lists the steps
            that do), `run` leaves the logdir, the architecture names a class that cannot be
            imported (the message names it), the image cannot be read or does not fit, or
            `layer` or `target` is not one of the model's.
        TimeoutError: If the model stayed busy for `timeout` seconds.

    Example:
        >>> import numpy as np, keras, tempfile
        >>> from tb_cnnviz.callbacks import CNNViz
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
        >>> model.compile("adam", "sparse_categorical_crossentropy")
        >>> logdir = tempfile.mkdtemp()
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros(4), epochs=2, verbose=0,
        ...     callbacks=[CNNViz(logdir, np.random.rand(2, 8, 8, 3), class_names=["a", "b"])])
        >>> result = probe(logdir, "train", np.random.rand(16, 16, 3))
        >>> result.step, result.steps, result.heatmap.shape, result.feature_maps.shape
        (1, [0, 1], (8, 8), (6, 6, 4))
        >>> sorted(p.name for p in result.predictions)
        ['a', 'b']
    """
    logdir = os.fspath(logdir)
    folder = _snapshot_folder(logdir, run)
    index = _read_index(folder)
    steps = list(index["steps"])
    if not steps:
        raise ValueError(f"run {run!r} has no weights kept yet (its snapshot index is empty)")
    if step is None:
        step = steps[-1]
    if step not in index["steps"]:
        raise ValueError(
            f"step {step} of run {run!r} has no snapshot; steps with one: "
            f"{metadata.names_text(steps)}. Received: step={step!r}"
        )
    entry = _model(logdir, folder, index, step)
    if not entry.lock.acquire(timeout=timeout):
        raise TimeoutError(f"the model of run {run!r} at step {step} stayed busy {timeout} s")
    try:
        return _ask(entry.model, index, run, step, steps, image, layer, target)
    finally:
        entry.lock.release()


def snapshot_steps(logdir, run) -> list[int]:
    """The steps of a run that have a snapshot, ascending.

    Raises:
        ValueError: If the run has no snapshots or leaves the logdir.

    Example:
        >>> import tempfile
        >>> snapshot_steps(tempfile.mkdtemp(), "run1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: run 'run1' has no model snapshots in ...
    """
    return list(snapshot_index(logdir, run)["steps"])


def snapshot_index(logdir, run) -> dict:
    """The run's parsed snapshot index (`tb_cnnviz.metadata.parse_snapshot_index`): its steps,
    input shape, value range and class names, read without loading the model or Keras.

    Raises:
        ValueError: If the run has no snapshots or leaves the logdir.

    Example:
        >>> import tempfile
        >>> snapshot_index(tempfile.mkdtemp(), "../x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: run must be a run name inside the logdir. Received: run='../x'
    """
    return _read_index(_snapshot_folder(os.fspath(logdir), run))


def clear_cache() -> None:
    """Forgets every loaded model (the next call of each loads it again).

    Example:
        >>> clear_cache()
    """
    with _CACHE_LOCK:
        _CACHE.clear()


# -- finding and reading the snapshots ---------------------------------------------------------


def _snapshot_folder(logdir: str, run) -> str:
    """The run's snapshot folder, checked to lie inside `logdir`."""
    if not isinstance(run, str) or not run or "\x00" in run:
        raise ValueError(f"run must be a run name. Received: run={run!r}")
    parts = re.split(r"[/\\]", run)
    if os.path.isabs(run) or run.startswith(("/", "\\")) or ".." in parts or _DRIVE.match(run):
        raise ValueError(f"run must be a run name inside the logdir. Received: run={run!r}")
    for candidate in (run, f"{run.rstrip('/')}/train"):
        folder = os.path.join(logdir, candidate, metadata.SNAPSHOTS_DIR)
        if os.path.isfile(os.path.join(folder, metadata.SNAPSHOTS_INDEX)):
            return _inside(logdir, folder)
    have = _runs_with_snapshots(logdir)
    raise ValueError(
        f"run {run!r} has no model snapshots in {logdir!r}; runs that have: "
        f"{metadata.names_text(have)}. CNNViz keeps them unless snapshots=None."
    )


def _runs_with_snapshots(logdir: str) -> list[str]:
    found = []
    for i, (folder, dirs, _) in enumerate(os.walk(logdir)):
        if i >= _RUN_SEARCH_LIMIT:
            break
        if metadata.SNAPSHOTS_DIR in dirs:
            found.append(os.path.relpath(folder, logdir).replace(os.sep, "/"))
            dirs.remove(metadata.SNAPSHOTS_DIR)
    return sorted(found, key=metadata.natural_key)


def _inside(logdir: str, path: str) -> str:
    """`path`, resolved, if it lies inside `logdir` (links followed); else a ValueError."""
    root = os.path.realpath(logdir)
    real = os.path.realpath(path)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise ValueError(f"{path!r} lies outside the logdir {logdir!r}; only its files are read")
    return real


def _read_index(folder: str) -> dict:
    path = os.path.join(folder, metadata.SNAPSHOTS_INDEX)
    with open(path, "rb") as f:
        index = metadata.parse_snapshot_index(f.read())
    if index is None:
        raise ValueError(f"{path!r} was written by a newer tb-cnnviz; upgrade to probe it")
    return index


# -- loaded models -----------------------------------------------------------------------------


class _Entry:
    def __init__(self):
        self.lock = threading.Lock()  # one call at a time runs the model
        self.model = None
        self.bytes = 0


_CACHE: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()


def _model(logdir: str, folder: str, index: dict, step: int) -> _Entry:
    """The cache entry of the model at `step`, loaded on first use."""
    architecture = _inside(logdir, os.path.join(folder, index["architecture"]))
    weights = _inside(logdir, os.path.join(folder, index["steps"][step]["weights"]))
    for path in (architecture, weights):
        if not os.path.isfile(path):
            raise ValueError(f"the snapshot file {path!r} is missing")
    key = (architecture, os.path.getmtime(architecture), weights, os.path.getmtime(weights))
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
        if entry is None:
            entry = _CACHE[key] = _Entry()
        _CACHE.move_to_end(key)
    with entry.lock:
        if entry.model is None:
            entry.model = _load(architecture, weights)
            entry.bytes = sum(int(np.prod(w.shape)) * 4 for w in entry.model.weights)
    with _CACHE_LOCK:
        while len(_CACHE) > 1 and (
            len(_CACHE) > MAX_MODELS or sum(e.bytes for e in _CACHE.values()) > MAX_CACHE_BYTES
        ):
            _CACHE.popitem(last=False)
    return entry


def _load(architecture: str, weights: str):
    import keras

    with open(architecture, encoding="utf-8") as f:
        config = json.load(f)
    try:
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as e:  # Keras raises TypeError for unknown classes, ValueError for lambdas
        raise ModelLoadError(_load_error(e, config)) from e
    try:
        if weights.endswith(".npz"):
            _set_weights(model, weights)
        else:  # Keras' own files (a ModelCheckpoint's `.weights.h5` or `.keras`)
            model.load_weights(weights)
    except Exception as e:
        raise ModelLoadError(f"cannot load the weights {weights!r}: {_short(e)}") from e
    return model


def _set_weights(model, path: str) -> None:
    """Puts the arrays of a `.weights.npz` snapshot (`model.get_weights()` in order) back."""
    with np.load(path, allow_pickle=False) as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    expected = [tuple(w.shape) for w in model.weights]
    found = [tuple(a.shape) for a in arrays]
    if found != expected:
        raise ValueError(
            f"the snapshot holds {len(found)} arrays and the model {len(expected)} weights; "
            f"the first that differs: {_first_difference(expected, found)}"
        )
    model.set_weights(arrays)


def _first_difference(expected, found) -> str:
    for i, (e, f) in enumerate(zip(expected, found, strict=False)):
        if e != f:
            return f"weight {i} has shape {e}, the snapshot's array {f}"
    return f"weight {min(len(expected), len(found))} is missing from one of them"


def _load_error(error: Exception, config=None) -> str:
    text = str(error)
    missing = re.search(r"Could not locate (?:class|function|\w+) '([^']+)'", text)
    name = missing.group(1) if missing else _unresolved(config)
    if name:
        return (
            f"the model uses the class {name!r}, which cannot be imported here. "
            "Make it importable in this process (install and import the module that defines "
            "it) and register it with @keras.saving.register_keras_serializable()"
        )
    if "safe_mode" in text or "Lambda" in text:
        return (
            "the model holds code (a Lambda layer or function) that Keras' safe_mode does not "
            "load: replace it with a registered custom layer "
            "(@keras.saving.register_keras_serializable())"
        )
    return f"cannot rebuild the model from its architecture: {_short(error)}"


def _unresolved(config) -> str | None:
    """The first class the architecture names that this process cannot find, or None.

    Keras words this differently from version to version (3.6 reports the whole model as not
    deserializable): the config says itself which class it needs, by module and name, or by the
    name it was registered under.

    Example:
        >>> _unresolved({"module": "keras.layers", "class_name": "Conv2D", "config": {}})
        >>> _unresolved({"module": "no_such_module", "class_name": "NoSuchConv"})
        'NoSuchConv'
    """
    import importlib

    import keras

    if isinstance(config, list):
        for item in config:
            found = _unresolved(item)
            if found:
                return found
        return None
    if not isinstance(config, dict):
        return None
    name, module = config.get("class_name"), config.get("module")
    if isinstance(name, str) and (module is not None or config.get("registered_name")):
        registered = config.get("registered_name")
        known = registered and keras.saving.get_registered_object(registered) is not None
        if not known and isinstance(module, str):
            try:
                known = hasattr(importlib.import_module(module), name)
            except Exception:  # not importable here
                known = False
        if not known and not (registered and registered != name):
            known = keras.saving.get_registered_object(name) is not None
        if not known:
            return name
    for value in config.values():
        found = _unresolved(value)
        if found:
            return found
    return None


def _short(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# -- asking it ---------------------------------------------------------------------------------


def _ask(model, index, run, step, steps, image, layer, target) -> ProbeResult:
    import keras

    from tb_cnnviz import attribution, heads
    from tb_cnnviz import layers as layer_lib

    if len(layer_lib.input_shapes(model)) > 1:
        raise ValueError("the probe runs models with one image input; this one has several")
    low, high = index["value_range"] or (0.0, 1.0)
    x = _feed(image, index["input_shape"], float(low), float(high))[None]
    outputs = model(x, training=False)
    units = [int(np.prod(o.shape[1:])) for o in keras.tree.flatten(outputs)]
    head = heads.read(model, units=units)
    p = heads.probabilities(head, outputs)
    names = index["class_names"]
    predictions = []
    if p is not None:
        for c in np.argsort(-p[0], kind="stable"):
            name = names[c] if names is not None and c < len(names) else None
            predictions.append(Prediction(int(c), name, float(p[0, c])))
    if target is None and predictions:
        target = predictions[0].class_id
    heatmap = attribution.gradcam(model, x, target=target)[0]
    [heatmap_layer] = attribution.gradcam_layers(model, x)[:1] or [None]
    if layer is None:
        convs = layer_lib.conv_layers(model, x)
        if not convs:
            raise ValueError("the model has no conv layer to show feature maps of")
        path, chosen = convs[-1]
    else:
        [(path, chosen)] = layer_lib.resolve_layers(model, [layer], inputs=x)
    [maps] = layer_lib.extractor(model, [chosen])(x)
    maps = np.asarray(keras.ops.convert_to_numpy(maps), np.float32)[0]
    return ProbeResult(
        run=run,
        step=step,
        steps=steps,
        image=x[0],
        value_range=(float(low), float(high)),
        head=head.kind,
        predictions=predictions,
        target=None if target is None else int(target),
        heatmap=np.asarray(heatmap, np.float32),
        heatmap_layer=heatmap_layer,
        layer=path,
        feature_maps=maps,
        filter_strength=maps.reshape(-1, maps.shape[-1]).mean(0),
    )


def _feed(image, input_shape, low: float, high: float) -> np.ndarray:
    """The image as the model takes it, `[h, w, c]` float32 (see the module docstring)."""
    pixels = _decode(image)
    if pixels.ndim == 4 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or min(pixels.shape) == 0:
        raise ValueError(
            f"image must be one image [h, w] or [h, w, channels]. Received: shape={pixels.shape}"
        )
    if pixels.dtype == np.bool_ or np.issubdtype(pixels.dtype, np.integer):
        x = pixels.astype(np.float32) / (1.0 if pixels.dtype == np.bool_ else 255.0)
    elif np.issubdtype(pixels.dtype, np.floating):
        x = pixels.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError("image contains NaN or Inf values")
        if x.max() > 1.0:
            x = x / 255.0
    else:
        raise ValueError(f"image must hold numbers. Received: dtype={pixels.dtype}")
    height, width, channels = input_shape or (*x.shape[:2], x.shape[-1])
    x = _channels(x, channels)
    if x.shape[:2] != (height, width):
        import keras

        x = keras.ops.image.resize(x[None], (height, width), antialias=True)[0]
        x = np.asarray(keras.ops.convert_to_numpy(x), np.float32)
    return (x * (high - low) + low).astype(np.float32)


def _decode(image) -> np.ndarray:
    if isinstance(image, str | os.PathLike | bytes | bytearray):
        from PIL import Image, UnidentifiedImageError

        source = io.BytesIO(image) if isinstance(image, bytes | bytearray) else os.fspath(image)
        what = "the image bytes" if isinstance(image, bytes | bytearray) else repr(source)
        try:
            with Image.open(source) as opened:
                return np.asarray(opened.convert("RGBA" if "A" in opened.mode else "RGB"))
        except FileNotFoundError:
            raise ValueError(f"no image file {what}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{what} is not an image Pillow can read ({_short(e)})") from None
    try:
        return np.asarray(image)
    except Exception as e:
        raise ValueError(f"image must be an array, a file name or bytes: {_short(e)}") from e


def _channels(x: np.ndarray, channels: int) -> np.ndarray:
    have = x.shape[-1]
    if have == 4 and channels != 4:
        x, have = x[..., :3], 3
    if have == channels:
        return x
    if have == 1:
        return np.repeat(x, channels, -1)
    if channels == 1:
        return x.mean(-1, keepdims=True)
    raise ValueError(
        f"the model takes images with {channels} channels; this one has {have}. "
        f"Received: image shape {x.shape}"
    )


class _CallableModule(types.ModuleType):
    """Lets `tb_cnnviz.probe(...)` call `probe` even after this module was imported as
    `tb_cnnviz.probe` (importing a submodule sets the package's attribute to the module)."""

    def __call__(self, *args, **kwargs):
        return probe(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
