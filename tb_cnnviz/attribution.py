"""Class attribution maps: which pixels of an image decide what a CNN makes of it, on every backend.

Three methods, each a function of `(model, images, …)` returning heatmaps as a float32 NumPy array
`[n, h, w]` in `[0, 1]` at the size of the image input, 1 marking the most important pixels.
Inputs with one or three spatial dimensions (Conv1D, Conv3D models) get `[n, length]` and
`[n, d, h, w]` maps the same way.

* `gradcam` (Selvaraju et al., 2017): the feature maps of a conv layer weighted by the spatial
  mean of the class score's gradient, summed, rectified and upsampled.
* `gradcam_plus_plus` (Chattopadhay et al., 2018): as Grad-CAM, but each position's gradient is
  weighted by the closed-form coefficients of the paper, which spreads the map over several
  instances of a class instead of the single strongest one.
* `smoothgrad` (Smilkov et al., 2017): the gradient of the class score with respect to the
  pixels, averaged over noisy copies of the image; sharper but grainier than Grad-CAM.

What they share:

* The *score* is read as `tb_cnnviz.heads` reads the model's head (softmax, binary or
  multi-label sigmoid, regression, several outputs), before a final softmax or sigmoid, so the
  gradients of a confident model do not vanish in a saturated softmax. The activation is
  switched off only while the attribution graph is traced, never during training. Subclassed
  models whose output layer cannot be found are differentiated through their output as is.
* `target=None` means each image's predicted class of the first output (a regression's only
  value); an int picks one class for every image, a sequence one class per image, an output
  name that output's predicted class, an `(output name, index)` pair a class of that output,
  and a callable on the outputs (read before squashing) any score of your own, one per image.
  A binary head's classes are 1 (the positive class, scored by its logit) and 0 (its
  complement, scored by minus the logit). `class_index=` is the same argument's earlier name.
* Images are channels-last, in the value range the model trains on. For a model with several
  inputs pass a list with one array per input; the result is then a list aligned with the inputs:
  a heatmap array for each image input (`[n, *spatial, channels]`, 1 to 3 spatial dimensions)
  and `None` for the others (and, for Grad-CAM, for image inputs no conv layer reads).
* The work is batched and compiled where the backend compiles (`tb_cnnviz.backend.compile`:
  `tf.function`, `jax.jit`; eager on PyTorch): one function per (model, method, layer, target
  output), cached while the model lives and reading the model's current weights at each call.
  The gradient with respect to a conv layer's output is taken with respect to a zero tensor
  added to it (`tb_cnnviz.layers.capture_outputs(add=...)`), which every backend can
  differentiate. Mixed precision models work; the map arithmetic runs in float32.
"""

from __future__ import annotations

import hashlib
import math
import types
import weakref

import keras
import numpy as np
from keras import ops

from tb_cnnviz import backend, checks, heads, profile
from tb_cnnviz import layers as layer_lib

__all__ = [
    "METHODS",
    "check_images",
    "check_target",
    "gradcam",
    "gradcam_layers",
    "gradcam_plus_plus",
    "head",
    "num_classes",
    "predicted_classes",
    "predictions",
    "runs_through_tail",
    "smoothgrad",
    "tracing_count",
]

#: Noisy copies per image that `smoothgrad` averages by default.
DEFAULT_SMOOTHGRAD_SAMPLES = 25

# model -> {key: value}. Compiled functions hold the model only weakly, so a cached entry never
# keeps a model alive.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tracing_count(model) -> int:
    """How many times the compiled attribution functions of `model` were traced.

    One function per (method, target layer, target output, input shapes) is traced once and
    then reused by every later call, epoch and `fit()` (any batch size on TensorFlow; on JAX
    once per batch size rounded up by `tb_cnnviz.backend.batch_size`); this count lets a test
    pin that. On PyTorch, which runs eagerly, nothing traces: 0.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3),
        ...                           keras.layers.GlobalAveragePooling2D()])
        >>> _ = gradcam(model, np.random.rand(2, 8, 8, 3))
        >>> _ = gradcam(model, np.random.rand(5, 8, 8, 3))
        >>> tracing_count(model) == (1 if backend.name() != "torch" else 0)
        True
    """
    return sum(
        backend.tracing_count(fn) for fn in _CACHE.get(model, {}).values() if hasattr(fn, "traces")
    )


def gradcam(model, images, layer=None, target=None, *, class_index=None):
    """Grad-CAM heatmaps: where a conv layer saw evidence for the target.

    Args:
        model: A built Keras model on any supported backend.
        images: Images `[n, h, w, channels]`, or for a multi-input model a list with one array
            per input.
        layer: The conv layer to read, by name or `outer/inner` path; `None` picks the last conv
            layer that reads the image input and feeds the output, also inside nested models.
            For several image inputs, a list with one entry (name or `None`) per image input.
        target: What to explain (see the module docstring): `None` for each image's predicted
            class, a class index, one index per image, an output name, an `(output name,
            index)` pair, or a callable on the outputs returning one score per image.
        class_index: The earlier name of `target`.

    Returns:
        Float32 heatmaps `[n, h, w]` in `[0, 1]` at the input's size; for a list of `images`, a
        list aligned with it (`None` for inputs that are not images).

    Raises:
        ValueError: If `images` do not fit the model, `layer` is not a conv layer of the model
            with the input's rank (Conv2D-like for images), or `target` is not a target of the
            model's head (the message names the output and what it supports).

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> maps = gradcam(model, np.random.rand(5, 8, 8, 3))
        >>> maps.shape, bool(maps.min() >= 0 and maps.max() <= 1)
        ((5, 8, 8), True)
    """
    target, argument = _target_argument(target, class_index)
    return _cam(model, images, layer, target, argument, plus_plus=False)


def gradcam_plus_plus(model, images, layer=None, target=None, *, class_index=None):
    """Grad-CAM++ heatmaps: Grad-CAM with per-position gradient weights.

    Args:
        model: A built Keras model.
        images: Images `[n, h, w, channels]`, or a list with one array per model input.
        layer: The conv layer to read; `None` picks the last conv layer reading the images. A
            list with one entry per image input for several image inputs.
        target: What to explain, as in `gradcam`.
        class_index: The earlier name of `target`.

    Returns:
        Float32 heatmaps `[n, h, w]` in `[0, 1]`; for a list of `images`, a list aligned with it.

    Raises:
        ValueError: If `images` do not fit the model, `layer` is not a conv layer of the model
            with the input's rank, or `target` is not a target of the model's head.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> gradcam_plus_plus(model, np.random.rand(2, 8, 8, 3), target=1).shape
        (2, 8, 8)
    """
    target, argument = _target_argument(target, class_index)
    return _cam(model, images, layer, target, argument, plus_plus=True)


def smoothgrad(
    model,
    images,
    target=None,
    samples=DEFAULT_SMOOTHGRAD_SAMPLES,
    noise=0.15,
    *,
    seed=0,
    class_index=None,
):
    """SmoothGrad saliency: the pixel gradient of the target's score, averaged over noisy copies.

    The map of a pixel is the absolute averaged gradient summed over its channels, clipped at
    the image's 99th percentile so that a few extreme pixels do not wash out the rest.

    Args:
        model: A built Keras model.
        images: Images `[n, h, w, channels]`, or a list with one array per model input (noise is
            added to the image inputs only).
        target: What to explain, as in `gradcam` (`None`: each image's predicted class on the
            clean image).
        samples: Noisy copies per image.
        noise: The noise's standard deviation as a fraction of each image's value range
            (the paper finds 0.1-0.2 best).
        seed: Seed of the noise; the same seed gives the same maps (on one backend: each
            backend draws its own noise).
        class_index: The earlier name of `target`.

    Returns:
        Float32 heatmaps `[n, h, w]` in `[0, 1]`; for a list of `images`, a list aligned with it.

    Raises:
        ValueError: If `images` do not fit the model, `target` is not a target of the model's
            head, `samples` is not a positive integer or `noise` is negative.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> smoothgrad(model, np.random.rand(3, 8, 8, 3), samples=4).shape
        (3, 8, 8)
    """
    target, argument = _target_argument(target, class_index)
    samples = checks.integer("samples", samples, minimum=1)
    noise = checks.number("noise", noise, at_least=0)
    seed = checks.integer("seed", seed)
    arrays, multi = check_images(model, images), isinstance(images, list | tuple)
    checked = check_target(model, arrays, target, argument=argument)
    specs = _specs(arrays)
    key = ("smoothgrad", _shape_key(arrays), checked.key)
    fn = _cached(model, key, lambda ref: _build_smoothgrad(ref, checked, specs))
    grads = _call(
        fn,
        arrays,
        _ids(checked, len(arrays[0])),
        ops.convert_to_tensor(int(samples), "int32"),
        ops.convert_to_tensor(float(noise), "float32"),
        ops.convert_to_tensor(int(seed) % 2**31, "int32"),
    )
    image_inputs = [i for i, a in enumerate(arrays) if _spatial(a)]
    maps: list = [None] * len(arrays)
    for i, g in zip(image_inputs, grads, strict=True):
        maps[i] = _percentile_normalize(g)
    return maps if multi else maps[0]


def check_target(model, images, target=None, *, argument: str = "target") -> heads.Target:
    """Checks `target` against `model`'s head for `images` (see `tb_cnnviz.heads.check_target`).

    Reads the output's size from the model, or from a one-image forward pass where the model
    cannot tell it (subclassed models).

    Args:
        model: A built Keras model.
        images: Images, or a list with one array per model input.
        target: As in `gradcam`.
        argument: The argument's name, for messages.

    Returns:
        A `tb_cnnviz.heads.Target`.

    Raises:
        ValueError: If `target` is not a target of the model's head; the message names the
            output and what it supports.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)),
        ...     keras.layers.Dense(1, activation="sigmoid", name="p")])
        >>> check_target(model, np.zeros((2, 4)), 1).head.kind
        'binary'
    """
    arrays, _ = _as_arrays(images)
    return heads.check_target(
        model, target, len(arrays[0]), units=_first_units(model, arrays), argument=argument
    )


def predictions(model, images, output=None) -> tuple[heads.Head, dict]:
    """What the model predicts for each image, read as its head says.

    Args:
        model: A Keras model.
        images: Images, or a list with one array per model input.
        output: The output's name or position; `None` for the first.

    Returns:
        `(head, predictions)`: the `tb_cnnviz.heads.Head` and
        `tb_cnnviz.heads.predictions`' dict (`predicted`, `confidence`, `value`).

    Example:
        >>> model = keras.Sequential([keras.Input((4,)),
        ...     keras.layers.Dense(1, activation="sigmoid", name="p")])
        >>> head, p = predictions(model, np.zeros((2, 4)))
        >>> head.kind, p["predicted"].tolist(), p["confidence"].tolist()
        ('binary', [0, 0], [0.5, 0.5])
    """
    arrays, _ = _as_arrays(images)
    outputs = _outputs_through_tail(model, arrays)
    if outputs is None:
        outputs = model(_model_inputs(arrays), training=False)
    head = heads.read(model, output, units=[_units(o) for o in keras.tree.flatten(outputs)])
    return head, heads.predictions(head, outputs)


def head(model, images, output=None) -> heads.Head:
    """How to read one output of the model (`tb_cnnviz.heads.Head`), without a forward pass
    where the graph knows every output's shape.

    A subclassed model, or one whose outputs have free dimensions, runs on the first image
    (`predictions`) to tell.

    Args:
        model: A Keras model.
        images: Images, or a list with one array per model input (one is enough).
        output: The output's name or position; `None` for the first.

    Returns:
        A `tb_cnnviz.heads.Head`.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="z")])
        >>> head(model, np.zeros((1, 4))).kind
        'softmax'
    """
    try:
        shapes = [tuple(t.shape) for t in keras.tree.flatten(model.outputs)]
    except (AttributeError, ValueError, TypeError):
        shapes = []
    if shapes and all(d is not None for shape in shapes for d in shape[1:]):
        return heads.read(model, output, units=[math.prod(shape[1:]) for shape in shapes])
    arrays, _ = _as_arrays(images)
    first = [a[:1] for a in arrays]
    return predictions(model, first if len(first) > 1 else first[0], output)[0]


def predicted_classes(model, images, output=None) -> tuple[np.ndarray, np.ndarray]:
    """Each image's predicted class and the model's confidence in it.

    The class and confidence are read as the output's head says (`tb_cnnviz.heads`): a
    softmax's most probable class and its probability; a binary sigmoid's class 1 where its
    probability is above 0.5, else 0, with the probability of that class; a multi-label
    output's most probable label and that label's own probability.

    Args:
        model: A Keras model.
        images: Images, or a list with one array per model input.
        output: The output's name or position; `None` for the first.

    Returns:
        `(classes, confidence)`: int64 `[n]` and float32 `[n]`.

    Raises:
        ValueError: If the output is a regression, which has no classes.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> classes, confidence = predicted_classes(model, np.zeros((2, 4)))
        >>> classes.tolist(), [round(float(c), 3) for c in confidence]
        ([0, 0], [0.333, 0.333])
    """
    head, p = predictions(model, images, output)
    if p["predicted"] is None:
        raise ValueError(
            f"The output {head.describe()} is a regression: it has no predicted class. "
            f"Supported: softmax, binary and multi-label sigmoid outputs."
        )
    return p["predicted"], p["confidence"]


def num_classes(model, images, output=None) -> int:
    """The number of classes of the model's first output (or of `output`).

    A softmax output has one class per unit, a binary sigmoid unit two (0 and 1), a
    multi-label output one label per unit. Read from the model's output shape, or from a
    one-image forward pass when the shape is not known in advance (subclassed models).

    Args:
        model: A Keras model.
        images: Images, or a list with one array per model input (one image is enough).
        output: The output's name or position; `None` for the first.

    Returns:
        The number of classes.

    Raises:
        ValueError: If the output is a regression, which has no classes.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> num_classes(model, np.zeros((1, 4)))
        3
    """
    arrays, _ = _as_arrays(images)
    head = heads.read(model, output, units=_first_units(model, arrays))
    if head.classes is None:
        raise ValueError(
            f"The output {head.describe()} is a regression: it has no classes. "
            f"Supported: softmax, binary and multi-label sigmoid outputs."
        )
    return head.classes


def check_images(model, images, argument: str = "images") -> list[np.ndarray]:
    """Checks that `images` fit `model`'s inputs and holds at least one image input.

    Args:
        model: A Keras model.
        images: An array, or a list with one array per model input.
        argument: The argument name used in error messages.

    Returns:
        The arrays as float32, one per model input.

    Raises:
        ValueError: If the number of arrays, their shapes or their batch sizes do not fit the
            model, or no array is an image batch `[n, *spatial, channels]`.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
        >>> [a.shape for a in check_images(model, np.zeros((2, 8, 8, 3)))]
        [(2, 8, 8, 3)]
    """
    arrays, multi = _as_arrays(images, argument)
    names = [f"{argument}[{i}]" for i in range(len(arrays))] if multi else [argument]
    shapes = [a.shape for a in arrays]
    received = f"{argument} with shapes {shapes}" if multi else f"{argument}.shape={shapes[0]}"
    if len({len(a) for a in arrays}) != 1 or len(arrays[0]) == 0:
        raise ValueError(
            f"{argument} must hold at least one image and the same number of images per input. "
            f"Received: {received}"
        )
    if not any(_spatial(a) for a in arrays):
        raise ValueError(
            f"{argument} must include an image batch [n, height, width, channels] (or "
            f"[n, length, channels], [n, depth, height, width, channels]). Received: {received}"
        )
    expected = _input_shapes(model)
    if expected is None:  # subclassed: only a forward pass can tell
        try:
            model(_model_inputs([a[:1] for a in arrays]), training=False)
        except Exception as e:
            raise ValueError(
                f"{argument} do not fit the model {model.name!r}: {type(e).__name__}: {e}. "
                f"Received: {received}"
            ) from e
        return arrays
    if len(expected) != len(arrays):
        raise ValueError(
            f"{argument} must hold one array per model input ({len(expected)} inputs). "
            f"Received: {received}"
        )
    for name, array, shape in zip(names, arrays, expected, strict=True):
        if array.ndim != len(shape) or any(
            s is not None and s != a for s, a in zip(shape[1:], array.shape[1:], strict=True)
        ):
            want = ", ".join(["n", *("any" if s is None else str(s) for s in shape[1:])])
            raise ValueError(
                f"{name} must have shape [{want}] to fit the model "
                f"{model.name!r}. Received: {name}.shape={array.shape}"
            )
    return arrays


def gradcam_layers(model, images, layer=None) -> list[str | None]:
    """The conv layer Grad-CAM reads for each model input, by path.

    Args:
        model: A Keras model.
        images: An array, or a list with one array per model input.
        layer: As in `gradcam`.

    Returns:
        One layer path per model input; `None` for inputs that are not images, and (with
        `layer=None`) for image inputs that no conv layer reads.

    Raises:
        ValueError: If `layer` names no conv layer, or a conv layer of the wrong rank for its
            input, or no conv layer reads any image input. The message lists the valid names.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)),
        ...     keras.layers.Conv2D(4, 3, name="first"), keras.layers.Conv2D(4, 3, name="last")])
        >>> gradcam_layers(model, np.zeros((1, 8, 8, 3)))
        ['last']
    """
    arrays, _ = _as_arrays(images)
    image_inputs = [i for i, a in enumerate(arrays) if _spatial(a)]
    example = _model_inputs([a[:1] for a in arrays])
    convs = layer_lib.conv_layers(model, example)
    if isinstance(layer, str) or layer is None:
        wanted = [layer] * len(image_inputs)
    else:
        wanted = list(layer)
        if len(wanted) != len(image_inputs):
            raise ValueError(
                f"layer must be one name, or a list with one name (or None) per image input "
                f"({len(image_inputs)} image inputs). Received: layer={layer!r}"
            )
    chosen: list[str | None] = [None] * len(arrays)
    for i, name in zip(image_inputs, wanted, strict=True):
        rank = _spatial(arrays[i])
        if name is None:
            chosen[i] = _last_conv_reading(model, arrays, i, convs)
        else:
            chosen[i] = layer_lib.find_layer(
                model,
                name,
                among=lambda c, rank=rank: layer_lib.is_conv(c) and c.rank == rank,
                need=f"a {rank}-D conv layer (Grad-CAM of a {rank}-D input reads one)",
                received=layer,
            )[0]
            why = layer_lib.weights_only(model, example).get(chosen[i])
            if why is not None:
                raise ValueError(
                    f"layer: Grad-CAM cannot read {chosen[i]!r} ({why}): pick another conv "
                    f"layer. Received: layer={layer!r}"
                )
    if not any(chosen):
        raise ValueError(
            f"No conv layer of the model {model.name!r} reads an image input and feeds the "
            f"output, so Grad-CAM has nothing to read. Received: layer={layer!r}"
        )
    return chosen


# -- Grad-CAM and Grad-CAM++ ---------------------------------------------------------------------


def _cam(model, images, layer, target, argument, *, plus_plus):
    arrays, multi = check_images(model, images), isinstance(images, list | tuple)
    paths = gradcam_layers(model, arrays, layer)
    checked = check_target(model, arrays, target, argument=argument)
    probe = _probe(model, arrays)
    by_path = dict(layer_lib.all_layers(model))
    targets = []
    for i, path in enumerate(paths):
        if path is None:
            continue
        if path not in probe["feeding"]:
            raise ValueError(
                f"layer: {path!r} does not lead to the model's output, so Grad-CAM cannot read "
                f"it. Received: layer={layer!r}"
            )
        targets.append((i, by_path[path]))
    fast = _cam_through_tail(model, arrays, targets, checked, plus_plus)
    if fast is not None:
        return fast if multi else fast[0]
    shapes = {id(by_path[p]): probe["shapes"][p] for p in paths if p is not None}
    specs = _specs(arrays)
    key = (
        "cam",
        plus_plus,
        _shape_key(arrays),
        tuple((i, id(t)) for i, t in targets),
        checked.key,
    )
    fn = _cached(
        model, key, lambda ref: _build_cam(ref, targets, shapes, checked, plus_plus, specs)
    )
    results = _call(fn, arrays, _ids(checked, len(arrays[0])))
    maps: list = [None] * len(arrays)
    for (i, _), m in zip(targets, results, strict=True):
        maps[i] = np.clip(m, 0.0, 1.0)
    return maps if multi else maps[0]


def _build_cam(model_ref, targets, shapes, checked, plus_plus, specs):
    layer_refs = [(i, weakref.ref(t)) for i, t in targets]

    def run(inputs, ids):
        model = model_ref()
        chosen = [(i, ref()) for i, ref in layer_refs]
        unique = list({id(t): t for _, t in chosen}.values())
        n = ops.shape(inputs[0])[0]
        zeros = tuple(ops.zeros((n, *shapes[id(t)]), "float32") for t in unique)

        def forward(deltas, inputs, ids):
            add = {id(t): d for t, d in zip(unique, deltas, strict=True)}
            with layer_lib.capture_outputs(unique, add=add) as captured, heads.logits(model):
                outputs = model(_model_inputs(inputs), training=False)
            acts = tuple(captured[id(t)] for t in unique)
            # The images of a batch are independent at inference, so the gradient of the sum is
            # each image's own gradient.
            return ops.sum(heads.score(checked, outputs, ids)), acts

        (_, acts), grads = backend.value_and_grad(forward)(zeros, inputs, ids)
        found = {id(t): (a, g) for t, a, g in zip(unique, acts, grads, strict=True)}
        return tuple(
            _cam_map(*found[id(conv)], conv, plus_plus, tuple(inputs[i].shape[1:-1]))
            for i, conv in chosen
        )

    signature = [specs, backend.tensor_spec([None], "int32")]
    return backend.compile(run, model_ref().variables, input_signature=signature)


def _cam_map(a, g, conv, plus_plus: bool, size):
    """The Grad-CAM (or Grad-CAM++) map of activations `a` and their gradient `g`, in [0, 1]
    at the input's `size`."""
    a, g = ops.cast(a, "float32"), ops.cast(g, "float32")
    rank = len(a.shape)
    if getattr(conv, "data_format", "channels_last") == "channels_first":
        perm = (0, *range(2, rank), 1)
        a, g = ops.transpose(a, perm), ops.transpose(g, perm)
    spatial = tuple(range(1, rank - 1))
    weights = _plus_plus_weights(a, g) if plus_plus else ops.mean(g, axis=spatial)
    weights = ops.reshape(weights, (-1, *[1] * len(spatial), a.shape[-1]))
    cam = ops.relu(ops.sum(a * weights, axis=-1))
    return _scale_to_unit(_resize(cam, size))


# -- through a pass already traced, and the model's tail -----------------------------------------
#
# Where the feature maps' compiled pass (traced before the first epoch) already computes a conv
# layer's output, and everything after that layer is a small model of its own (`layers.tail`:
# normalization, pooling, dense), Grad-CAM needs no trace of a forward and backward pass of the
# whole model: that pass, then the tail's gradient. On MobileNetV2 at 224 the whole model's
# trace took 1.4 s, and predicting the probes' classes an eager pass of 0.25 s each epoch.


def runs_through_tail(model, layer) -> bool:
    """Whether Grad-CAM of `layer` (a path) runs from a compiled pass already made and the
    model's tail (`tb_cnnviz.layers.tail`), with no trace of the whole model: for a one-input
    graph model whose feature maps' pass includes the layer and what its tail reads besides
    (`Tail.extras`: a residual sum's skip tensor), and everything after it is a model of its
    own.

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c"),
        ...                       keras.layers.GlobalAveragePooling2D()])
        >>> before = runs_through_tail(m, "c")
        >>> _ = layer_lib.extractor(m, [m.get_layer("c")])
        >>> before, runs_through_tail(m, "c")
        (False, True)
    """
    layers = dict(layer_lib.all_layers(model))
    if layer not in layers or len(layer_lib.input_shapes(model)) != 1:
        return False
    return _tail_reads(model, layers[layer]) is not None


def _tail_reads(model, layer):
    """`(extractor, index of layer, indices of the tail's extras there, tail)` for an extractor
    already made that includes `layer` and everything its tail reads; None where there is none.
    """
    # The pass is looked up first: a tail is made (a graph walk) only for a layer one includes.
    found = layer_lib.extractor_including(model, layer)
    after = layer_lib.tail(model, layer) if found is not None else None
    if after is None:
        return None
    extract, index = found
    if not after.extras:
        return extract, index, [], after
    # The extras must come from the same pass: the widest pass with the layer may lack them
    # where the feature maps' pass (which adds them) is not the widest.
    for candidate in layer_lib.extractors(model):
        layers = candidate.layers
        places = [_position(layers, e) for e in (layer, *after.extras)]
        if None not in places:
            return candidate, places[0], places[1:], after
    return None


def _position(layers, layer):
    return next((i for i, candidate in enumerate(layers) if candidate is layer), None)


def _tail_pass(model, arrays, layer):
    """`(activations of layer, the extras' activations, its tail)` from an extractor already
    made, or None; NumPy arrays (a later copy of the few small maps is cheaper than a first
    eager gather on the device)."""
    if len(arrays) != 1:
        return None
    found = _tail_reads(model, layer)
    if found is None:
        return None
    extract, index, extra_index, after = found
    # Grad-CAM of a callback's probes repeats the probes it explains for a second class: the
    # pass runs on each image once (on JAX, at the batch size the predictions traced it for).
    # (By a digest of each image's bytes: `np.unique(axis=0)` compares rows through a
    # structured dtype of one field per pixel, a second for eight 224-pixel images.)
    images = np.ascontiguousarray(arrays[0])
    keys = [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images]
    place = {key: i for i, key in reversed(list(enumerate(keys)))}  # each key's first row
    if len(place) == len(keys):
        outs = extract(arrays, reuse=True)
        rows = None
    else:
        firsts = sorted(place.values())
        outs = extract([images[firsts]], reuse=True)
        position = {keys[row]: i for i, row in enumerate(firsts)}
        rows = [position[key] for key in keys]

    def read(i):
        values = backend.to_numpy(outs[i])
        return values if rows is None else values[rows]

    return read(index), [read(i) for i in extra_index], after


def _outputs_through_tail(model, arrays):
    """The model's outputs for `arrays` through an extractor already made and the tail after
    its last layer that has one; None where there is no such pair."""
    if len(arrays) != 1 or not layer_lib.has_graph(model):
        return None
    for _, conv in reversed(layer_lib.conv_layers(model)):
        found = _tail_pass(model, arrays, conv)  # a pass already made first, then a tail
        if found is not None:
            acts, extras, after = found
            return after(acts, extras)  # layers called without `training` run at inference
    return None


def _cam_through_tail(model, arrays, targets, checked, plus_plus):
    """Grad-CAM maps (one list entry per input) from `_tail_pass`, or None where it does not
    apply (several inputs or layers, no extractor with the layer, no tail)."""
    if len(targets) != 1:
        return None
    i, conv = targets[0]
    found = _tail_pass(model, arrays, conv)
    if found is None:
        return None
    acts, extras, after = found
    size = tuple(arrays[i].shape[1:-1])
    shapes = tuple(tuple(a.shape[1:]) for a in (acts, *extras))
    key = ("tail-cam", plus_plus, shapes, id(conv), checked.key, size)
    spec = tuple(backend.tensor_spec([None, *shape], "float32") for shape in shapes)
    fn = _cached(
        model, key, lambda ref: _build_tail_cam(ref, after, conv, checked, plus_plus, size, spec)
    )
    (cam,) = _call(fn, [acts, *extras], _ids(checked, len(arrays[0])))
    maps: list = [None] * len(arrays)
    maps[i] = np.clip(cam, 0.0, 1.0)
    return maps


def _build_tail_cam(model_ref, after, conv, checked, plus_plus, size, spec):
    def run(inputs, ids):
        a, *extras = inputs

        def forward(a, ids):  # differentiated at the layer's output only, not at the extras
            with heads.logits(model_ref()):
                outputs = after(a, extras)
            return ops.sum(heads.score(checked, outputs, ids)), None

        _, g = backend.value_and_grad(forward)(a, ids)
        return (_cam_map(a, g, conv, plus_plus, size),)

    signature = [spec, backend.tensor_spec([None], "int32")]
    return backend.compile(run, model_ref().variables, input_signature=signature)


def _plus_plus_weights(a, g):
    """Grad-CAM++ channel weights, from the closed form of Chattopadhay et al. (2018), eq. 19.

    With the class score taken as exp(logit), the second and third derivatives reduce to powers
    of the first, so one backward pass suffices. As in the authors' reference code, a channel's
    coefficients are scaled to sum to one, which makes its weight a weighted mean of its positive
    gradients: without it a weakly active channel gets a weight near 1 / mean(activation), as
    large as the strongest evidence, and background texture floods the map.
    """
    spatial = tuple(range(1, len(a.shape) - 1))
    g2 = ops.square(g)
    g3 = g * g2
    denominator = 2.0 * g2 + ops.sum(a, axis=spatial, keepdims=True) * g3
    # Where the gradient is zero the coefficient is 0/0; the paper sets it to 0.
    alpha = ops.divide_no_nan(g2, denominator)
    alpha = ops.divide_no_nan(alpha, ops.sum(alpha, axis=spatial, keepdims=True))
    return ops.sum(alpha * ops.relu(g), axis=spatial)


def _resize(maps, size):
    """Bilinear resize of `[n, *spatial]` maps with 1 to 3 spatial dimensions to `size`."""
    rank = len(maps.shape) - 1

    def resize(images, to):
        return ops.image.resize(images, to, interpolation="bilinear", data_format="channels_last")

    if rank == 1:
        return resize(maps[:, :, None, None], (size[0], 1))[:, :, 0, 0]
    if rank == 2:
        return resize(maps[..., None], size)[..., 0]
    # 3-D: height and width slice by slice, then depth with height x width flattened.
    depth, height, width = maps.shape[1:]
    slices = resize(ops.reshape(maps, (-1, height, width, 1)), size[1:])
    area = size[1] * size[2]
    columns = resize(ops.reshape(slices, (-1, depth, area, 1)), (size[0], area))
    return ops.reshape(columns, (-1, *size))


# -- SmoothGrad ----------------------------------------------------------------------------------


def _build_smoothgrad(model_ref, checked, specs):
    scalar = backend.tensor_spec([], "int32")
    signature = [
        specs,
        backend.tensor_spec([None], "int32"),
        scalar,
        backend.tensor_spec([], "float32"),
        scalar,
    ]

    def run(inputs, ids, samples, noise, seed):
        model = model_ref()
        image_inputs = [i for i, x in enumerate(inputs) if len(x.shape) in (3, 4, 5)]
        if checked.fn is None:  # each image's own class, as the clean image shows it
            with heads.logits(model):
                clean = model(_model_inputs(inputs), training=False)
            ids = heads.resolve_ids(checked, clean, ids)
        # The noise scales with each image's own value range, as in the paper.
        sigma = []
        for x in (inputs[i] for i in image_inputs):
            axes = tuple(range(1, len(x.shape)))
            span = ops.max(x, axes, keepdims=True) - ops.min(x, axes, keepdims=True)
            sigma.append(noise * span)

        def forward(watched, inputs, ids):
            full = list(inputs)
            for k, i in enumerate(image_inputs):
                full[i] = watched[k]
            with heads.logits(model):
                outputs = model(_model_inputs(full), training=False)
            return ops.sum(heads.score(checked, outputs, ids)), None

        gradient = backend.value_and_grad(forward)

        def one_sample(step, total):
            noisy = []
            for k, i in enumerate(image_inputs):
                pair = ops.stack([seed, step * len(image_inputs) + k])
                draw = backend.stateless_normal(ops.shape(inputs[i]), pair)
                noisy.append(inputs[i] + sigma[k] * draw)
            _, grads = gradient(tuple(noisy), tuple(inputs), ids)
            return tuple(t + ops.cast(g, "float32") for t, g in zip(total, grads, strict=True))

        zeros = tuple(ops.zeros_like(inputs[i]) for i in image_inputs)
        total = ops.fori_loop(0, samples, one_sample, zeros)
        count = ops.cast(samples, "float32")
        return tuple(ops.sum(ops.abs(t / count), axis=-1) for t in total)

    return backend.compile(run, model_ref().variables, input_signature=signature)


def _percentile_normalize(maps: np.ndarray) -> np.ndarray:
    top = np.percentile(maps.reshape(len(maps), -1), 99, axis=1).reshape(-1, *[1] * (maps.ndim - 1))
    scaled = np.divide(maps, top, out=np.zeros_like(maps), where=top > 0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


# -- shared machinery ----------------------------------------------------------------------------


def _target_argument(target, class_index):
    """`(target, its argument's name)` from `target=` or its earlier name `class_index=`."""
    if class_index is None:
        return target, "target"
    if target is not None:
        raise ValueError(
            "target and class_index are one argument (class_index is its earlier name): give "
            f"one. Received: target={target!r}, class_index={class_index!r}"
        )
    return class_index, "class_index"


def _ids(checked: heads.Target, n: int) -> np.ndarray:
    return checked.ids if checked.ids is not None else np.full(n, -1, np.int32)


def _call(fn, arrays, ids, *rest) -> list[np.ndarray]:
    """Calls a compiled function on the images padded to `backend.batch_size`; NumPy results."""
    n = len(arrays[0])
    size = backend.batch_size(n)
    if size > n:
        arrays = [np.concatenate([a, np.zeros((size - n, *a.shape[1:]), a.dtype)]) for a in arrays]
        ids = np.concatenate([ids, np.full(size - n, -1, np.int32)])
    out = fn(
        tuple(ops.convert_to_tensor(a, "float32") for a in arrays),
        ops.convert_to_tensor(ids, "int32"),
        *rest,
    )
    return [backend.to_numpy(o)[:n] for o in out]


def _scale_to_unit(maps):
    top = ops.max(maps, axis=tuple(range(1, len(maps.shape))), keepdims=True)
    return ops.divide_no_nan(maps, top)


def _spatial(array) -> int:
    """Spatial dimensions of a channels-last batch (1 to 3), 0 for inputs that are not images."""
    return array.ndim - 2 if array.ndim in (3, 4, 5) else 0


def _model_inputs(xs):
    return list(xs) if len(xs) > 1 else xs[0]


def _shape_key(arrays) -> tuple:
    return tuple(tuple(a.shape[1:]) for a in arrays)


def _specs(arrays) -> tuple:
    # Any batch size: a callback's batch changes with the number of wrong probes, and each trace
    # of a large model costs seconds.
    return tuple(backend.tensor_spec([None, *a.shape[1:]], "float32") for a in arrays)


def _cached(model, key, build):
    entries = _CACHE.setdefault(model, {})
    if key not in entries:
        entries[key] = build(weakref.ref(model))
    return entries[key]


def _units(tensor) -> int:
    return int(np.prod(tensor.shape[1:])) if len(tensor.shape) > 1 else 1


def _first_units(model, arrays) -> int:
    """The size of the model's first output, by a one-image forward pass if the model cannot
    tell."""
    try:
        units = keras.tree.flatten(model.outputs)[0].shape[-1]
    except (AttributeError, IndexError, ValueError, TypeError):
        units = None
    if units is None:
        sample = _model_inputs([a[:1] for a in arrays])
        units = _units(keras.tree.flatten(model(sample, training=False))[0])
    return int(units)


def _as_arrays(images, argument: str = "images") -> tuple[list[np.ndarray], bool]:
    if isinstance(images, dict):
        raise ValueError(
            f"{argument} must be an array or a list of arrays (one per model input). "
            f"Received: {argument} of type dict"
        )
    multi = isinstance(images, list | tuple)
    arrays = []
    for k, item in enumerate(images if multi else [images]):
        name = f"{argument}[{k}]" if multi else argument
        try:
            array = np.asarray(keras.ops.convert_to_numpy(item))
        except Exception as e:
            raise ValueError(f"{name} must be a numeric array. Received: {e}") from e
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"{name} must hold numbers. Received: {name}.dtype={array.dtype}")
        arrays.append(array.astype(np.float32))
    if not arrays:
        raise ValueError(f"{argument} must not be empty. Received: {argument}={images!r}")
    return arrays, multi


def _input_shapes(model) -> list[tuple] | None:
    try:
        inputs = model.inputs
    except AttributeError:
        return None
    if not inputs:
        return None
    return [tuple(t.shape) for t in inputs]


def _last_conv_reading(model, arrays, input_index, convs) -> str | None:
    """The last conv layer (model order) of the input's rank that reads it and feeds the output.

    Layers that read only this input are preferred over layers after a merge, and layers whose
    maps have more than one position over a conv applied after global pooling (a KerasHub
    classifier's `classifier_conv`, whose 1x1 map would paint the whole image one colour).
    `None` when no conv layer reads the input.
    """
    probe = _probe(model, arrays)
    reach = probe["reach"]
    rank = _spatial(arrays[input_index])
    fitting = [(p, c) for p, c in convs if c.rank == rank and input_index in reach.get(p, ())]
    only = [(p, c) for p, c in fitting if reach[p] == {input_index}]

    def positions(path, conv) -> int:
        shape = probe["shapes"][path]
        first = getattr(conv, "data_format", "channels_last") == "channels_first"
        return math.prod(shape[1:] if first else shape[:-1])

    for candidates in (only, fitting):
        spread = [p for p, c in candidates if positions(p, c) > 1]
        if spread or candidates:
            return (spread or [p for p, _ in candidates])[-1]
    return None


def _probe(model, arrays) -> dict:
    """What a forward pass shows about the conv layers: cached per model and input shapes.

    `shapes`: each called conv layer's output shape per image. `feeding`: the conv layers
    whose output the model's outputs depend on (a nonzero gradient of a weighted sum of the
    logits, one backward pass). `reach`: for each feeding layer, the image inputs it reads (its
    output changes when noise is added to that input; one forward pass per input).
    """
    key = ("probe", _shape_key(arrays))
    entries = _CACHE.setdefault(model, {})
    if key not in entries:
        # Once per model: within a drawing, the profile counts it as setup, a cost the next
        # drawing does not pay again (`TimeBudget.record`).
        with profile.phase("setup"):
            entries[key] = _probe_now(model, arrays)
    return entries[key]


def _probe_from_graph(model, example, arrays, convs) -> dict | None:
    """`_probe`'s answer read from a Functional or Sequential graph, without running the model.

    Where every readable conv layer is a node of the model's own graph (keras.applications,
    the Functional models of Keras' guides), the graph says which inputs each reads and that
    it leads to an output, and the cached `layers.forward_trace` has its output shape: the
    eager forward and backward passes of `_probe_now` (about a second on MobileNetV2 at 224)
    are not needed. None where a conv lives inside a nested model or a custom layer.
    """
    reads = layer_lib.graph_inputs(model)
    trace = layer_lib.forward_trace(model, example)
    if reads is None or trace is None or not convs:
        return None
    if any(id(c) not in reads or id(c) not in trace.shapes for _, c in convs):
        return None
    images = {i for i, a in enumerate(arrays) if _spatial(a)}
    return {
        "shapes": {p: tuple(int(s) for s in trace.shapes[id(c)]) for p, c in convs},
        "feeding": {p for p, _ in convs},
        "reach": {p: set(reads[id(c)]) & images for p, c in convs},
    }


def _probe_now(model, arrays) -> dict:
    example = _model_inputs([a[:1] for a in arrays])
    unreadable = layer_lib.weights_only(model, example)
    convs = [(p, c) for p, c in layer_lib.conv_layers(model, example) if p not in unreadable]
    known = _probe_from_graph(model, example, arrays, convs)
    if known is not None:
        return known
    layers = [c for _, c in convs]
    xs = [ops.convert_to_tensor(a[:2]) for a in arrays]
    with keras.StatelessScope(), layer_lib.capture_outputs(layers) as seen:
        model(_model_inputs(xs), training=False)
    called = [(p, c) for p, c in convs if seen.calls[id(c)] == 1]
    unique = list({id(c): c for _, c in called}.values())
    before = {id(c): backend.to_numpy(seen[id(c)]) for c in unique}

    def total(deltas):
        add = {id(c): d for c, d in zip(unique, deltas, strict=True)}
        with layer_lib.capture_outputs(unique, add=add), heads.logits(model):
            outputs = model(_model_inputs(xs), training=False)
        value = 0.0
        for out in keras.tree.flatten(outputs):
            flat = ops.reshape(ops.cast(out, "float32"), (ops.shape(out)[0], -1))
            # Distinct weights per unit, so that no sum of the outputs is constant.
            value = value + ops.sum(flat * (1.0 + ops.arange(flat.shape[-1], dtype="float32")))
        return value, None

    zeros = tuple(ops.zeros(before[id(c)].shape, "float32") for c in unique)
    with keras.StatelessScope():
        _, grads = backend.value_and_grad(total)(zeros)
    live = {id(c) for c, g in zip(unique, grads, strict=True) if np.any(backend.to_numpy(g))}
    feeding = {p for p, c in called if id(c) in live}
    reach = {p: {0} for p in feeding}
    if len(xs) > 1:
        reach = {p: set() for p in feeding}
        rng = np.random.default_rng(0)
        for i, a in enumerate(arrays):
            if not _spatial(a):
                continue
            changed = list(xs)
            noise = rng.normal(0.0, 1.0 + float(np.ptp(a)), a[:2].shape)
            changed[i] = ops.convert_to_tensor((a[:2] + noise).astype(np.float32))
            with keras.StatelessScope(), layer_lib.capture_outputs(layers) as after:
                model(_model_inputs(changed), training=False)
            for p, c in called:
                if p in feeding and not np.array_equal(
                    backend.to_numpy(after[id(c)]), before[id(c)]
                ):
                    reach[p].add(i)
    shapes = {p: tuple(int(s) for s in before[id(c)].shape[1:]) for p, c in called}
    return {"shapes": shapes, "feeding": feeding, "reach": reach}


#: The attribution methods by name, as the `Attribution` callback's `methods` accepts them.
METHODS = types.MappingProxyType(
    {"gradcam": gradcam, "gradcam_plus_plus": gradcam_plus_plus, "smoothgrad": smoothgrad}
)
