"""Class attribution maps: which pixels of an image decide the class a CNN gives it (TensorFlow).

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

* The *class score* is the model's first output before a final softmax or sigmoid, so the
  gradients of a confident model do not vanish in a saturated softmax. The activation is
  switched off only while the attribution graph is traced, never during training. Subclassed
  models whose output layer cannot be found are differentiated through their output as is.
* `class_index=None` means each image's predicted class; an int picks one class for every image,
  a sequence one class per image.
* Images are channels-last, in the value range the model trains on. For a model with several
  inputs pass a list with one array per input; the result is then a list aligned with the inputs:
  a heatmap array for each image input (`[n, *spatial, channels]`, 1 to 3 spatial dimensions)
  and `None` for the others (and, for Grad-CAM, for image inputs no conv layer reads).
* The work is batched and compiled: one `tf.function` per (model, method, layer), cached while
  the model lives. Mixed precision models work; the map arithmetic runs in float32.
"""

from __future__ import annotations

import types
import weakref

import keras
import numpy as np
import tensorflow as tf

from tb_cnnviz import checks, compiled, heads
from tb_cnnviz import layers as layer_lib

__all__ = [
    "METHODS",
    "check_images",
    "gradcam",
    "gradcam_layers",
    "gradcam_plus_plus",
    "num_classes",
    "predicted_classes",
    "smoothgrad",
    "tracing_count",
]

#: Noisy copies per image that `smoothgrad` averages by default.
DEFAULT_SMOOTHGRAD_SAMPLES = 25


_CLASSES = tf.TensorSpec([None], tf.int32)

# model -> {key: value}. Compiled functions hold the model only weakly, so a cached entry never
# keeps a model alive.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tracing_count(model) -> int:
    """How many times the compiled attribution functions of `model` were traced.

    One function per (method, target layer, input shapes) is traced once and then reused by
    every later call, epoch and `fit()` (any batch size); this count lets a test pin that.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3),
        ...                           keras.layers.GlobalAveragePooling2D()])
        >>> _ = gradcam(model, np.random.rand(2, 8, 8, 3))
        >>> _ = gradcam(model, np.random.rand(5, 8, 8, 3))
        >>> tracing_count(model)
        1
    """
    return sum(
        fn.experimental_get_tracing_count()
        for fn in _CACHE.get(model, {}).values()
        if hasattr(fn, "experimental_get_tracing_count")
    )


def gradcam(model, images, layer=None, class_index=None):
    """Grad-CAM heatmaps: where a conv layer saw evidence for the class.

    Args:
        model: A built Keras model on the TensorFlow backend whose first output holds one score
            per class.
        images: Images `[n, h, w, channels]`, or for a multi-input model a list with one array
            per input.
        layer: The conv layer to read, by name or `outer/inner` path; `None` picks the last conv
            layer that reads the image input and feeds the output, also inside nested models.
            For several image inputs, a list with one entry (name or `None`) per image input.
        class_index: `None` for each image's predicted class, an int for one class, or one int
            per image.

    Returns:
        Float32 heatmaps `[n, h, w]` in `[0, 1]` at the input's size; for a list of `images`, a
        list aligned with it (`None` for inputs that are not images).

    Raises:
        ValueError: If `images` do not fit the model, `layer` is not a conv layer of the model
            with the input's rank (Conv2D-like for images), or `class_index` is out of range.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> maps = gradcam(model, np.random.rand(5, 8, 8, 3))
        >>> maps.shape, bool(maps.min() >= 0 and maps.max() <= 1)
        ((5, 8, 8), True)
    """
    return _cam(model, images, layer, class_index, plus_plus=False)


def gradcam_plus_plus(model, images, layer=None, class_index=None):
    """Grad-CAM++ heatmaps: Grad-CAM with per-position gradient weights.

    Args:
        model: A built Keras model whose first output holds one score per class.
        images: Images `[n, h, w, channels]`, or a list with one array per model input.
        layer: The conv layer to read; `None` picks the last conv layer reading the images. A
            list with one entry per image input for several image inputs.
        class_index: `None` for each image's predicted class, an int, or one int per image.

    Returns:
        Float32 heatmaps `[n, h, w]` in `[0, 1]`; for a list of `images`, a list aligned with it.

    Raises:
        ValueError: If `images` do not fit the model, `layer` is not a conv layer of the model
            with the input's rank, or `class_index` is out of range.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> gradcam_plus_plus(model, np.random.rand(2, 8, 8, 3), class_index=1).shape
        (2, 8, 8)
    """
    return _cam(model, images, layer, class_index, plus_plus=True)


def smoothgrad(
    model, images, class_index=None, samples=DEFAULT_SMOOTHGRAD_SAMPLES, noise=0.15, *, seed=0
):
    """SmoothGrad saliency: the pixel gradient of the class score, averaged over noisy copies.

    The map of a pixel is the absolute averaged gradient summed over its channels, clipped at
    the image's 99th percentile so that a few extreme pixels do not wash out the rest.

    Args:
        model: A built Keras model whose first output holds one score per class.
        images: Images `[n, h, w, channels]`, or a list with one array per model input (noise is
            added to the image inputs only).
        class_index: `None` for each image's predicted class (on the clean image), an int, or
            one int per image.
        samples: Noisy copies per image.
        noise: The noise's standard deviation as a fraction of each image's value range
            (the paper finds 0.1-0.2 best).
        seed: Seed of the noise; the same seed gives the same maps.

    Returns:
        Float32 heatmaps `[n, h, w]` in `[0, 1]`; for a list of `images`, a list aligned with it.

    Raises:
        ValueError: If `images` do not fit the model, `class_index` is out of range, `samples`
            is not a positive integer or `noise` is negative.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> smoothgrad(model, np.random.rand(3, 8, 8, 3), samples=4).shape
        (3, 8, 8)
    """
    samples = checks.integer("samples", samples, minimum=1)
    noise = checks.number("noise", noise, at_least=0)
    arrays, multi = check_images(model, images), isinstance(images, list | tuple)
    classes = _class_indices(model, arrays, class_index)
    specs = _specs(arrays)
    fn = _cached(model, ("smoothgrad", specs), lambda ref: _build_smoothgrad(ref, specs))
    grads = fn(
        tuple(tf.constant(a) for a in arrays),
        tf.constant(classes),
        tf.constant(int(samples)),
        tf.constant(float(noise)),
        tf.constant(int(seed), tf.int32),
    )
    image_inputs = [i for i, a in enumerate(arrays) if _spatial(a)]
    maps: list = [None] * len(arrays)
    for i, g in zip(image_inputs, grads, strict=True):
        maps[i] = _percentile_normalize(g.numpy())
    return maps if multi else maps[0]


def predicted_classes(model, images) -> tuple[np.ndarray, np.ndarray]:
    """Each image's predicted class and the model's confidence in it.

    The confidence is the predicted class's probability: the output itself when it is already a
    probability distribution (a final softmax), otherwise the softmax of the output (logits).

    Args:
        model: A Keras model whose first output holds one score per class.
        images: Images, or a list with one array per model input.

    Returns:
        `(classes, confidence)`: int64 `[n]` and float32 `[n]`.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> classes, confidence = predicted_classes(model, np.zeros((2, 4)))
        >>> classes.tolist(), [round(float(c), 3) for c in confidence]
        ([0, 0], [0.333, 0.333])
    """
    arrays, _ = _as_arrays(images)
    scores = _first_output(model(_model_inputs(arrays), training=False))
    scores = np.asarray(keras.ops.convert_to_numpy(scores), np.float64).reshape(len(arrays[0]), -1)
    is_distribution = (
        scores.min() >= 0 and scores.max() <= 1 and np.allclose(scores.sum(-1), 1, atol=1e-3)
    )
    if not is_distribution:
        shifted = np.exp(scores - scores.max(-1, keepdims=True))
        scores = shifted / shifted.sum(-1, keepdims=True)
    classes = scores.argmax(-1)
    return classes.astype(np.int64), scores[np.arange(len(classes)), classes].astype(np.float32)


def num_classes(model, images) -> int:
    """The number of classes of the model's first output.

    Read from the model's output shape, or from a one-image forward pass when the shape is not
    known in advance (subclassed models).

    Args:
        model: A Keras model whose first output holds one score per class.
        images: Images, or a list with one array per model input (one image is enough).

    Returns:
        The size of the output's last axis.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> num_classes(model, np.zeros((1, 4)))
        3
    """
    arrays, _ = _as_arrays(images)
    try:
        outputs = model.outputs
    except AttributeError:
        outputs = None
    if outputs and outputs[0].shape[-1] is not None:
        return int(outputs[0].shape[-1])
    sample = _model_inputs([a[:1] for a in arrays])
    return int(_first_output(model(sample, training=False)).shape[-1])


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
    convs = layer_lib.conv_layers(model)
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
    if not any(chosen):
        raise ValueError(
            f"No conv layer of the model {model.name!r} reads an image input and feeds the "
            f"output, so Grad-CAM has nothing to read. Received: layer={layer!r}"
        )
    return chosen


# -- Grad-CAM and Grad-CAM++ ---------------------------------------------------------------------


def _cam(model, images, layer, class_index, *, plus_plus):
    arrays, multi = check_images(model, images), isinstance(images, list | tuple)
    paths = gradcam_layers(model, arrays, layer)
    by_path = dict(layer_lib.all_layers(model))
    targets = tuple((i, by_path[p]) for i, p in enumerate(paths) if p is not None)
    classes = _class_indices(model, arrays, class_index)
    specs = _specs(arrays)
    key = ("cam", plus_plus, specs, tuple((i, id(t)) for i, t in targets))
    fn = _cached(model, key, lambda ref: _build_cam(ref, targets, plus_plus, specs))
    results = fn(tuple(tf.constant(a) for a in arrays), tf.constant(classes))
    maps: list = [None] * len(arrays)
    for (i, _), m in zip(targets, results, strict=True):
        maps[i] = np.clip(m.numpy(), 0.0, 1.0)
    return maps if multi else maps[0]


def _build_cam(model_ref, targets, plus_plus, specs):
    layer_refs = [(i, weakref.ref(t)) for i, t in targets]

    def run(inputs, classes):
        model = model_ref()
        chosen = [(i, ref()) for i, ref in layer_refs]
        unique = list({id(t): t for _, t in chosen}.values())
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            with layer_lib.capture_outputs(unique) as captured, heads.logits(model):
                outputs = model(_model_inputs(inputs), training=False)
            score = _score(outputs, classes)
            acts = [captured[id(t)] for _, t in chosen]
        grads = tape.gradient(score, acts)
        maps = []
        for (i, conv), a, g in zip(chosen, acts, grads, strict=True):
            if g is None:
                raise ValueError(
                    f"layer: {conv.name!r} does not lead to the model's output, so Grad-CAM "
                    f"cannot read it. Received: layer={conv.name!r}"
                )
            a, g = tf.cast(a, tf.float32), tf.cast(g, tf.float32)
            rank = a.shape.rank
            if getattr(conv, "data_format", "channels_last") == "channels_first":
                perm = [0, *range(2, rank), 1]
                a, g = tf.transpose(a, perm), tf.transpose(g, perm)
            spatial = list(range(1, rank - 1))
            weights = _plus_plus_weights(a, g) if plus_plus else tf.reduce_mean(g, axis=spatial)
            cam = tf.nn.relu(tf.reduce_sum(a * weights[:, *([None] * len(spatial)), :], -1))
            maps.append(_scale_to_unit(_resize(cam, tf.shape(inputs[i])[1:-1])))
        return tuple(maps)

    return compiled.function(run, input_signature=[specs, _CLASSES], autograph=False)


def _plus_plus_weights(a, g):
    """Grad-CAM++ channel weights, from the closed form of Chattopadhay et al. (2018), eq. 19.

    With the class score taken as exp(logit), the second and third derivatives reduce to powers
    of the first, so one backward pass suffices. As in the authors' reference code, a channel's
    coefficients are scaled to sum to one, which makes its weight a weighted mean of its positive
    gradients: without it a weakly active channel gets a weight near 1 / mean(activation), as
    large as the strongest evidence, and background texture floods the map.
    """
    spatial = list(range(1, a.shape.rank - 1))
    g2, g3 = tf.square(g), g * tf.square(g)
    denominator = 2.0 * g2 + tf.reduce_sum(a, axis=spatial, keepdims=True) * g3
    # Where the gradient is zero the coefficient is 0/0; the paper sets it to 0.
    alpha = tf.math.divide_no_nan(g2, denominator)
    alpha = tf.math.divide_no_nan(alpha, tf.reduce_sum(alpha, axis=spatial, keepdims=True))
    return tf.reduce_sum(alpha * tf.nn.relu(g), axis=spatial)


def _resize(maps, size):
    """Bilinear resize of `[n, *spatial]` maps with 1 to 3 spatial dimensions to `size`."""
    rank = maps.shape.rank - 1
    if rank == 1:
        grid = tf.image.resize(maps[:, :, None, None], tf.stack([size[0], 1]))
        return grid[:, :, 0, 0]
    if rank == 2:
        return tf.image.resize(maps[..., None], size)[..., 0]
    # 3-D: height and width slice by slice, then depth with height x width flattened.
    n, depth, height, width = tf.unstack(tf.shape(maps))
    slices = tf.image.resize(tf.reshape(maps, tf.stack([n * depth, height, width, 1])), size[1:])
    area = size[1] * size[2]
    columns = tf.reshape(slices, tf.stack([n, depth, area, 1]))
    columns = tf.image.resize(columns, tf.stack([size[0], area]))
    return tf.reshape(columns, tf.concat([[n], size], axis=0))


# -- SmoothGrad ----------------------------------------------------------------------------------


def _build_smoothgrad(model_ref, specs):
    scalar = tf.TensorSpec([], tf.int32)
    signature = [specs, _CLASSES, scalar, tf.TensorSpec([], tf.float32), scalar]

    def run(inputs, classes, samples, noise, seed):
        model = model_ref()
        image_inputs = [i for i, x in enumerate(inputs) if x.shape.rank in (3, 4, 5)]
        with heads.logits(model):
            clean = _first_output(model(_model_inputs(inputs), training=False))
        classes = tf.where(classes < 0, tf.argmax(clean, -1, output_type=tf.int32), classes)
        # The noise scales with each image's own value range, as in the paper.
        sigma = []
        for x in (inputs[i] for i in image_inputs):
            axes = list(range(1, x.shape.rank))
            span = tf.reduce_max(x, axes, keepdims=True) - tf.reduce_min(x, axes, keepdims=True)
            sigma.append(noise * span)

        def one_sample(step, total):
            noisy = list(inputs)
            for k, i in enumerate(image_inputs):
                pair = tf.stack([seed, step * len(image_inputs) + k])
                noisy[i] = inputs[i] + sigma[k] * tf.random.stateless_normal(
                    tf.shape(inputs[i]), pair
                )
            watched = [noisy[i] for i in image_inputs]
            with tf.GradientTape() as tape:
                tape.watch(watched)
                with heads.logits(model):
                    score = _score(model(_model_inputs(noisy), training=False), classes)
            grads = tape.gradient(score, watched)
            total = tuple(
                t if g is None else t + tf.cast(g, tf.float32)
                for t, g in zip(total, grads, strict=True)
            )
            return step + 1, total

        zeros = tuple(tf.zeros_like(inputs[i]) for i in image_inputs)
        _, total = tf.while_loop(lambda step, _: step < samples, one_sample, (0, zeros))
        count = tf.cast(samples, tf.float32)
        return tuple(tf.reduce_sum(tf.abs(t / count), axis=-1) for t in total)

    # autograph=False: the loop is an explicit tf.while_loop.
    return compiled.function(run, input_signature=signature, autograph=False)


def _percentile_normalize(maps: np.ndarray) -> np.ndarray:
    top = np.percentile(maps.reshape(len(maps), -1), 99, axis=1).reshape(-1, *[1] * (maps.ndim - 1))
    scaled = np.divide(maps, top, out=np.zeros_like(maps), where=top > 0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


# -- shared machinery ----------------------------------------------------------------------------


def _score(outputs, classes):
    """Each image's score for its class; `classes < 0` means the predicted class."""
    scores = tf.cast(_first_output(outputs), tf.float32)
    predicted = tf.argmax(scores, -1, output_type=tf.int32)
    classes = tf.where(classes < 0, predicted, classes)
    # The images of a batch are independent at inference, so the gradient of the sum is each
    # image's own gradient.
    return tf.reduce_sum(tf.gather(scores, classes, axis=1, batch_dims=1))


def _scale_to_unit(maps):
    top = tf.reduce_max(maps, axis=list(range(1, maps.shape.rank)), keepdims=True)
    return tf.math.divide_no_nan(maps, top)


def _first_output(outputs):
    return tf.nest.flatten(outputs)[0] if not hasattr(outputs, "shape") else outputs


def _spatial(array) -> int:
    """Spatial dimensions of a channels-last batch (1 to 3), 0 for inputs that are not images."""
    return array.ndim - 2 if array.ndim in (3, 4, 5) else 0


def _model_inputs(xs):
    return list(xs) if len(xs) > 1 else xs[0]


def _specs(arrays) -> tuple[tf.TensorSpec, ...]:
    # Any batch size: a callback's batch changes with the number of wrong probes, and each trace
    # of a large model costs seconds.
    return tuple(tf.TensorSpec([None, *a.shape[1:]], tf.float32) for a in arrays)


def _cached(model, key, build):
    entries = _CACHE.setdefault(model, {})
    if key not in entries:
        entries[key] = build(weakref.ref(model))
    return entries[key]


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


def _class_indices(model, arrays, class_index) -> np.ndarray:
    """`class_index` as int32 `[n]`, -1 standing for the predicted class."""
    n = len(arrays[0])
    if class_index is None:
        return np.full(n, -1, np.int32)
    if isinstance(class_index, bool | float) or (
        isinstance(class_index, np.ndarray) and not np.issubdtype(class_index.dtype, np.integer)
    ):
        raise ValueError(
            f"class_index must be an int or ints. Received: class_index={class_index!r}"
        )
    if np.ndim(class_index) == 0:
        classes = np.full(n, int(class_index), np.int64)
    else:
        classes = np.asarray(class_index).reshape(-1)
        if not np.issubdtype(classes.dtype, np.integer) or len(classes) != n:
            raise ValueError(
                f"class_index must be one int, or one int per image ({n} images). "
                f"Received: class_index={class_index!r}"
            )
    total = num_classes(model, arrays)
    bad = (classes < 0) | (classes >= total)
    if bad.any():
        raise ValueError(
            f"class_index must be a class of the model's output, in 0..{total - 1}. "
            f"Received: class_index={class_index!r}"
        )
    return classes.astype(np.int32)


def _last_conv_reading(model, arrays, input_index, convs) -> str | None:
    """The last conv layer (model order) of the input's rank that reads it and feeds the output.

    Layers that read only this input are preferred over layers after a merge. `None` when no
    conv layer reads the input.
    """
    reach = _conv_reach(model, arrays, convs)
    rank = _spatial(arrays[input_index])
    fitting = [(p, c) for p, c in convs if c.rank == rank and input_index in reach.get(p, ())]
    only = [p for p, _ in fitting if reach[p] == {input_index}]
    if only or fitting:
        return (only or [p for p, _ in fitting])[-1]
    return None


def _conv_reach(model, arrays, convs) -> dict[str, set[int]]:
    """For each conv layer that feeds the output, the inputs it reads. Cached per model.

    One one-image forward and backward pass finds the layers that feed the output (their output
    gets a gradient); for several inputs, one forward-mode pass per input finds which of them
    each layer reads.
    """
    key = ("reach", tuple(a.shape[1:] for a in arrays))
    entries = _CACHE.setdefault(model, {})
    if key in entries:
        return entries[key]
    xs = [tf.constant(a[:1]) for a in arrays]
    layers = [c for _, c in convs]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        with layer_lib.capture_outputs(layers) as captured:
            out = _first_output(model(_model_inputs(xs), training=False))
        total = tf.reduce_sum(tf.cast(out, tf.float32))
    called = [(p, c) for p, c in convs if id(c) in captured]
    grads = tape.gradient(total, [captured[id(c)] for _, c in called])
    feeding = [(p, c) for (p, c), g in zip(called, grads, strict=True) if g is not None]
    reach = {p: {0} for p, _ in feeding}
    if len(xs) > 1:
        reach = {p: set() for p, _ in feeding}
        for i, x in enumerate(xs):
            with tf.autodiff.ForwardAccumulator(x, tf.ones_like(x)) as accumulator:
                with layer_lib.capture_outputs(layers) as seen:
                    model(_model_inputs(xs), training=False)
            for p, c in feeding:
                if accumulator.jvp(seen[id(c)]) is not None:
                    reach[p].add(i)
    entries[key] = reach
    return reach


#: The attribution methods by name, as the `Attribution` callback's `methods` accepts them.
METHODS = types.MappingProxyType(
    {"gradcam": gradcam, "gradcam_plus_plus": gradcam_plus_plus, "smoothgrad": smoothgrad}
)
