"""Rendering: every selected filter of a layer optimized as one batch in one compiled step.

`Renderer` holds the compiled optimization for one model and objective and can be called again
and again (a training callback calls it every epoch without retracing); `render` is the one-call
form. The step is written once, in `keras.ops`; `tb_cnnviz.backend.compile_loop` compiles all
`steps` of gradient ascent the way each backend runs them fastest: one compiled step
(`tf.function`, `jax.jit`) called `steps` times, since TensorFlow and XLA on CPU run
convolutions inside a compiled loop several times slower than at its top level; on PyTorch
eagerly.
Differentiating also goes through `tb_cnnviz.backend`, the one place that knows the backends
apart.

Per call:

1. The selected filters are split into chunks that fit `memory_budget` (equal sizes; the last is
   padded with a repeat so one trace serves every chunk).
2. Each image starts from noise drawn from `(seed, filter)`, or from a previous result's state
   (`init=`): a warm start carries the variables and the optimizer's moments, so refining last
   epoch's image takes a few steps instead of a cold start's many.
3. Each step: parameterization -> images in `[0, 1]` -> random transforms (their random numbers
   hashed from `(seed, filter, step)`, and for the standard geometric ones their matrices too,
   made on the host for all steps before the first: see `_Slot.inputs`) -> crop to the render
   size -> resize to the model's input size if it differs -> the model's value range ->
   forward -> objective per image -> gradient -> an Adam step, per image (see below).
4. The activation each image reached is measured on the untransformed final image.

The step is Adam with one second moment per image and colour channel (the mean square of the
gradient over all of that channel's variables) instead of one per variable. Per-variable
normalization would give every Fourier coefficient the same step size and so undo most of the
`1/f` scaling and much of the colour decorrelation: images stay noisier and climb more slowly.
Normalized per channel, the step follows the gradient's own spectrum, and each decorrelated
colour axis still moves at its own pace (`benchmarks/actmax.py` measures both).

Every image depends only on its own filter, the seed and the steps taken, so filter `k`'s image
is the same whichever filters share its batch (up to floating-point reordering inside batched
convolutions). The random numbers of the transforms are hashed from `(seed, filter, step)` in
32-bit integer arithmetic, in NumPy: the same on every backend.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from tb_cnnviz import backend, checks
from tb_cnnviz.actmax import forward as forward_lib
from tb_cnnviz.actmax import objectives as obj_lib
from tb_cnnviz.actmax import param as param_lib
from tb_cnnviz.actmax import transforms as transform_lib
from tb_cnnviz.actmax.forward import ModelReader, image_input_shape

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_STEPS",
    "FULL_FIELD",
    "MIN_CANVAS",
    "ActmaxImages",
    "Renderer",
    "WarmStart",
    "centre_objective",
    "default_objective",
    "render",
]

#: Default bytes one chunk of images may use in the forward and backward pass.
DEFAULT_MEMORY_BUDGET = 1 << 30
#: Default optimization steps of a cold start.
DEFAULT_STEPS = 128
#: Default step size of the renderer's optimizer.
DEFAULT_LEARNING_RATE = 0.6
#: Weight of the total-variation penalty in `default_objective`.
DEFAULT_TOTAL_VARIATION = 0.3
#: Size used when the model's input has free spatial dimensions and no size is given.
_FREE_SIZE = forward_lib.FREE_SIZE
#: The smallest canvas `size="receptive_field"` renders on, in pixels: the transforms (pad,
#: jitter, rotate) need room, and a 3x3 first layer is best seen on a patch around its field.
MIN_CANVAS = 24
#: A layer whose receptive field covers this fraction of the input's area is rendered on the
#: whole input (its centre position sees nearly everything anyway).
FULL_FIELD = 0.5

_BETA1, _BETA2, _EPSILON = 0.9, 0.999, 1e-8


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """What a later call needs to continue optimizing images: pass the result as `init=`.

    Attributes:
        kind: The parameterization (`"fourier"` or `"pixel"`).
        value_shape: One image's variable shape.
        filters: The filter of each row.
        values: Variable values `[n, *value_shape]`.
        m: Adam's first moments, like `values`.
        v: Adam's second moments, one per image and colour channel: `values`' shape with every
            axis but the channel's reduced to 1.
        steps: Steps each image has taken, `[n]`.
    """

    kind: str
    value_shape: tuple[int, ...]
    filters: tuple[int, ...]
    values: np.ndarray
    m: np.ndarray
    v: np.ndarray
    steps: np.ndarray

    def rows(self) -> dict[int, int]:
        """Filter -> row."""
        return {f: i for i, f in enumerate(self.filters)}


class ActmaxImages(np.ndarray):
    """The rendered images `[n, h, w, c]`, in the model's input value range, with what they reached.

    A NumPy array: index it, save it, plot it. The extra attributes live on the array `render`
    returns; arrays derived from it (slices, arithmetic) are plain data and carry `None`.

    Attributes:
        activations: float32 `[n]`: the objective each image reached (for the default objective,
            its filter's mean activation), measured without transforms.
        filters: The filter of each image.
        layer: The layer rendered, or `None` for a custom objective without one.
        state: A `WarmStart` to continue from: `render(..., init=previous)`.
    """

    activations: np.ndarray | None
    filters: list[int] | None
    layer: str | None
    state: WarmStart | None

    def __array_finalize__(self, obj):
        self.activations = self.filters = self.layer = self.state = None


def centre_objective(layer: str) -> obj_lib.Objective:
    """`default_objective` for a canvas sized to the layer's receptive field: each image's own
    filter at the layer's centre position (`neuron`), plus `wake_up` and a little total
    variation, as in `default_objective`.

    Example:
        >>> str(centre_objective("conv1"))
        "neuron('conv1') + wake_up('conv1') - 0.3 * total_variation()"
    """
    return (
        obj_lib.neuron(layer)
        + obj_lib.wake_up(layer)
        - DEFAULT_TOTAL_VARIATION * obj_lib.total_variation()
    )


def default_objective(layer: str) -> obj_lib.Objective:
    """The objective `render` maximizes for `layer`: each image's own filter's mean activation,
    plus `wake_up` so a filter the starting image leaves silent still gets a gradient, minus a
    little total variation (`DEFAULT_TOTAL_VARIATION`) against speckle.

    The penalty's weight is in the layer's activation units, so it smooths layers with small
    activations (a first layer, a barely trained network) more than layers with large ones;
    pass your own `objective=` to tune it.

    Example:
        >>> str(default_objective("conv4"))
        "channel('conv4') + wake_up('conv4') - 0.3 * total_variation()"
    """
    return (
        obj_lib.channel(layer)
        + obj_lib.wake_up(layer)
        - DEFAULT_TOTAL_VARIATION * obj_lib.total_variation()
    )


class Renderer:
    """Compiled activation maximization for one model and objective, reusable across calls.

    Args:
        model: A built Keras model with one image input `[n, h, w, c]` (channels last).
        layer: The conv layer whose filters to render (name or `outer/inner` path).
        objective: What to maximize, per image (see `tb_cnnviz.actmax.objectives`). Defaults to
            `default_objective(layer)`. An objective without an index reads each image's filter.
        param: `"fourier"` (default: `1/f` spectrum, decorrelated colours) or `"pixel"`.
        transforms: `"standard"` (default: pad, jitter, scale, rotate, jitter, sized to the
            image), `None` for none, a `Transform`, or a list of them.
        value_range: `(low, high)` of the model's input pixels, e.g. `(0, 1)`, `(-1, 1)` or
            `(0, 255)`. Returned images are in this range.
        size: `(h, w)` (or one int) to render at; defaults to the model's input size. A size
            other than a fixed input size is resized to it before the forward pass.
            `"receptive_field"`: a canvas the size of the layer's receptive field
            (`tb_cnnviz.actmax.receptive_field`; at least `MIN_CANVAS`, at most the input
            size), on which the model runs as it is, up to the layer, and the default objective
            reads the layer's centre position (`centre_objective`), as Lucid and OpenAI
            Microscope render early layers: a layer that sees 40 pixels of a 224-pixel input
            costs about 30x fewer pixels per step. A layer that sees most of the input
            (`FULL_FIELD`) is rendered at the input size as usual.
        learning_rate: The step size (of Adam normalized per image and colour channel).
        decorrelate: Decorrelate colours (3-channel inputs): `True` with ImageNet's colour
            statistics, `False`, or a `3x3` matrix from `color_correlation(images)` for models
            trained on other colours.
        batch_size: Images optimized together; defaults to what fits `memory_budget`.
        memory_budget: Bytes a chunk may use in the forward and backward pass.

    Raises:
        ValueError: For an unknown layer, a non-conv layer where a channel objective needs one,
            a model without one image input, or a bad argument value.

    Example:
        >>> model = keras.Sequential([keras.Input((16, 16, 3)),
        ...                           keras.layers.Conv2D(4, 3, activation="relu", name="c")])
        >>> renderer = Renderer(model, "c")
        >>> images = renderer(steps=4)
        >>> images.shape, images.activations.shape
        ((4, 16, 16, 3), (4,))
        >>> refined = renderer(steps=2, init=images)  # continues where `images` stopped
    """

    def __init__(
        self,
        model: keras.Model,
        layer: str | None = None,
        *,
        objective=None,
        param: str = "fourier",
        transforms="standard",
        value_range=(0.0, 1.0),
        size=None,
        learning_rate: float = DEFAULT_LEARNING_RATE,
        decorrelate=True,
        batch_size: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ):
        if layer is not None and not isinstance(layer, str):
            raise ValueError(f"layer must be a layer name (str) or None. Received: layer={layer!r}")
        if layer is None and objective is None:
            raise ValueError("Give a layer to render or an objective. Received: layer=None")
        self.model = model
        self.layer = layer
        h, w, self.channels = image_input_shape(model)
        self.model_size = (h, w) if h is not None and w is not None else None
        #: The layer's receptive field where the canvas is sized to it, else None.
        self.receptive_field = None
        if isinstance(size, str) and size == "receptive_field":
            if layer is None:
                raise ValueError(
                    "size='receptive_field' needs a layer (the field is the layer's). "
                    "Received: layer=None"
                )
            size = self._field_canvas(model, layer)
        centre = self.receptive_field is not None
        self.objective = (
            (centre_objective(layer) if centre else default_objective(layer))
            if objective is None
            else obj_lib.as_objective(objective)
        )
        # What to report per image: the filter's activation for the default objective.
        measure = obj_lib.neuron(layer) if centre else obj_lib.channel(layer)
        self.measure = measure if objective is None else self.objective
        if param not in ("fourier", "pixel"):
            raise ValueError(f"param must be 'fourier' or 'pixel'. Received: param={param!r}")
        self.param = param
        self.value_range = checks.value_range("value_range", value_range)
        self.learning_rate = checks.number("learning_rate", learning_rate, above=0)
        self.decorrelate = param_lib.mixing_matrix(decorrelate)
        if batch_size is not None:
            batch_size = checks.integer("batch_size", batch_size, minimum=1)
        self.batch_size = batch_size
        self.memory_budget = checks.integer("memory_budget", memory_budget, minimum=1)

        argument = "layer" if objective is None else "objective"
        needs = (self.objective + self.measure).needs
        self._reader = ModelReader(model, needs, argument)
        self._reader.any_size = centre  # the canvas runs through the model as it is
        if size is None:
            size = self.model_size or (_FREE_SIZE, _FREE_SIZE)
        self.size = checks.image_size("size", size)
        #: The image size the model runs on: the canvas where it is sized to the layer, else
        #: the model's own input size (a render size other than that is resized to it).
        self.run_size = self.size if centre else (self.model_size or self.size)
        self.transforms = _transforms(transforms, self.size)
        self._units = self._count_units()
        self._slots: dict[int, _Slot] = {}

    @property
    def tracing_count(self) -> int:
        """How many times this renderer's compiled functions were traced (for tests and tuning).

        Each chunk size traces its two functions once; later calls, epochs and `fit()`s reuse
        them.
        """
        return sum(
            backend.tracing_count(f)
            for slot in self._slots.values()
            for f in (slot.run, slot.evaluate)
        )

    @property
    def units(self) -> int | None:
        """How many filters (or classes) the per-image targets can index; `None` if unused."""
        return self._units

    def __call__(self, filters=None, *, steps: int = DEFAULT_STEPS, seed: int = 0, init=None):
        """Optimizes one image per filter and returns them.

        Args:
            filters: Filter indices (or classes, for `class_logit()`); `None` means all units of
                the layer (one image when the objective has no per-image target).
            steps: Optimization steps, at least 1.
            seed: The seed; image `k` depends only on `(seed, filters[k], steps, init)`.
            init: A previous result (or its `.state`) to continue from; filters it lacks
                start from noise.

        Returns:
            `ActmaxImages` `[n, h, w, c]` in `value_range`, with `.activations` and `.state`.

        Raises:
            ValueError: For a filter out of range, `steps < 1`, a bad seed, or an `init` from
                another parameterization or size.
        """
        ids = self._filters(filters)
        steps = checks.integer("steps", steps, minimum=1)
        seed = checks.integer("seed", seed)
        warm = self._warm_state(init)

        batch = self._batch(len(ids))
        n_chunks = math.ceil(len(ids) / batch)
        batch = math.ceil(len(ids) / n_chunks)  # equal chunks: one trace serves them all
        slot = self._slot(batch)
        images, scores, rows = [], [], []
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            padded = chunk + [chunk[-1]] * (batch - len(chunk))
            start_state = slot.load(padded, seed, warm)
            inputs = slot.inputs(steps, seed, padded, start_state[3])
            state = tuple(ops.convert_to_tensor(part) for part in start_state)
            targets = ops.convert_to_tensor(np.asarray(padded, np.int32))
            with self._reader.active():
                state = slot.run(steps, state, targets, inputs=inputs)
                score, pictures = slot.evaluate(state[0], targets)
            keep = len(chunk)
            images.append(backend.to_numpy(pictures)[:keep])
            scores.append(backend.to_numpy(score)[:keep])
            rows.append(tuple(backend.to_numpy(part)[:keep] for part in state))

        lo, hi = self.value_range
        result = (lo + (hi - lo) * np.concatenate(images)).astype(np.float32).view(ActmaxImages)
        result.activations = np.concatenate(scores).astype(np.float32)
        result.filters = list(ids)
        result.layer = self.layer
        result.state = WarmStart(
            kind=self.param,
            value_shape=slot.param.value_shape,
            filters=tuple(ids),
            values=np.concatenate([r[0] for r in rows]),
            m=np.concatenate([r[1] for r in rows]),
            v=np.concatenate([r[2] for r in rows]),
            steps=np.concatenate([r[3] for r in rows]),
        )
        return result

    # -- internals ---------------------------------------------------------------------------
    def _field_canvas(self, model, layer: str) -> tuple[int, int]:
        """The canvas for `size="receptive_field"`; sets `receptive_field` where it is used."""
        full = self.model_size or (forward_lib.FREE_SIZE, forward_lib.FREE_SIZE)
        field = forward_lib.receptive_field(model, layer)
        canvas = tuple(min(f, max(r, MIN_CANVAS)) for f, r in zip(full, field, strict=True))
        if canvas[0] * canvas[1] >= FULL_FIELD * full[0] * full[1]:
            return full  # it sees (most of) the image: render the whole input, as usual
        self.receptive_field = field
        return canvas

    def _count_units(self) -> int | None:
        if not self.objective.targets:
            return None
        units = {name: self._reader.channels(name) for name in self.objective.targets}
        if None in units.values():  # not known without a pass: run one image of zeros
            h, w = self.run_size
            with self._reader.active():
                outs, _ = self._reader(ops.zeros((1, h, w, self.channels)))
            units = {name: int(outs[name].shape[-1]) for name in self.objective.targets}
        if obj_lib.LOGITS in units:  # a binary head's one unit holds two classes
            units[obj_lib.LOGITS] = self._reader.head.targets
        return min(units.values())

    def _filters(self, filters) -> list[int]:
        if filters is None:
            return list(range(self._units or 1))
        if isinstance(filters, numbers.Integral) and not isinstance(filters, bool):
            filters = [filters]
        try:
            ids = [int(f) for f in filters if not isinstance(f, bool) and _is_int(f)]
            valid = len(ids) == len(list(filters))
        except TypeError:
            valid = False
        if not valid or not ids:
            raise ValueError(
                "filters must be a non-empty list of filter indices or None. "
                f"Received: filters={filters!r}"
            )
        limit = self._units
        bad = [f for f in ids if f < 0 or (limit is not None and f >= limit)]
        if bad:
            where = f"{self.layer!r} has {limit} filters" if self.layer else f"{limit} units"
            raise ValueError(
                f"filters: index {bad[0]} is out of range; {where} (valid: 0..{(limit or 1) - 1}). "
                f"Received: filters={ids if len(ids) <= 20 else ids[:20] + ['...']}"
            )
        return ids

    def _warm_state(self, init) -> WarmStart | None:
        if init is None:
            return None
        state = init.state if isinstance(init, ActmaxImages) else init
        if not isinstance(state, WarmStart):
            raise ValueError(
                "init must be a previous result of this renderer (or its .state). "
                f"Received: init of type {type(init).__name__}"
            )
        expected = self._value_shape()
        if state.kind != self.param or tuple(state.value_shape) != expected:
            raise ValueError(
                f"init was rendered with param={state.kind!r} and variable shape "
                f"{tuple(state.value_shape)}; this renderer uses param={self.param!r} and "
                f"{expected}. Render both at the same size and parameterization. "
                f"Received: init with param={state.kind!r}"
            )
        return state

    def _value_shape(self) -> tuple[int, ...]:
        kind = param_lib.FourierParam if self.param == "fourier" else param_lib.PixelParam
        return kind.shape_for(self.size, self.channels)

    def _batch(self, n: int) -> int:
        if self.batch_size is not None:
            return min(n, self.batch_size)
        per_image = self._reader.bytes_per_image(self.run_size)
        return max(1, min(n, self.memory_budget // max(per_image, 1)))

    def _slot(self, batch: int) -> _Slot:
        if batch not in self._slots:
            self._slots[batch] = _Slot(self, batch)
        return self._slots[batch]

    def _prepare(self, images01):
        """Crops transformed images to the render size, fits them to the model, maps the range."""
        x = images01
        if tuple(x.shape[1:3]) != self.size:  # the transforms end at the size; a custom one may not
            x = transform_lib.center_crop(self.size)(x, np.zeros((x.shape[0], 0)))  # pads mid-grey
        if self.run_size != self.size:
            x = ops.image.resize(
                x,
                self.run_size,
                interpolation="bilinear",
                antialias=True,
                data_format="channels_last",
            )
        lo, hi = self.value_range
        return lo + (hi - lo) * x


class _Slot:
    """Compiled functions for one chunk size, and the optimization state's shapes.

    The state `(values, m, v, t)` (variable values, Adam's moments, steps taken per image) is
    passed in and returned, never held in backend variables: the same functions compile on
    TensorFlow (`tf.function`) and JAX (`jax.jit`, which needs pure functions).
    """

    def __init__(self, renderer: Renderer, batch: int):
        self.renderer = renderer
        self.batch = batch
        make = param_lib.fourier if renderer.param == "fourier" else param_lib.pixel
        self.param = make(
            batch,
            renderer.size,
            renderer.channels,
            decorrelate=False if renderer.decorrelate is None else renderer.decorrelate,
        )
        # Every axis of one image's variable but its colour channel's: the second moment is
        # shared along these.
        channel = self.param.channel_axis
        self.spread = tuple(a + 1 for a in range(len(self.param.value_shape)) if a != channel)
        self.moment_shape = tuple(
            1 if a + 1 in self.spread else d for a, d in enumerate(self.param.value_shape)
        )
        # The functions read the model's weights at call time (backend.compile), so a model
        # that trains between calls needs no retrace.
        weights = renderer.model.variables
        self.run = backend.compile_loop(self._step, weights)  # run(steps, state, targets, inputs=)
        self.evaluate = backend.compile(self._evaluate, weights)
        self._gradient = backend.value_and_grad(self._score)
        transforms = renderer.transforms
        if isinstance(transforms, transform_lib.Affine):  # its output size, for `resample`
            self.transformed_size = transforms.plan(
                np.zeros((1, transforms.draws)), *renderer.size
            )[1]

    def load(self, filters: Sequence[int], seed: int, warm: WarmStart | None) -> tuple:
        """The starting state `(values, m, v, t)` of `filters`, NumPy: warm rows, or noise."""
        rows = warm.rows() if warm is not None else {}
        cold = [f for f in filters if f not in rows]
        noise = dict(zip(cold, self.param.noise([(seed, f) for f in cold]), strict=True))
        shape = self.param.value_shape
        values, m, v, t = [], [], [], []
        for f in filters:
            if f in rows:
                r = rows[f]
                values.append(warm.values[r])
                m.append(warm.m[r])
                v.append(warm.v[r])
                t.append(warm.steps[r])
            else:
                values.append(noise[f])
                m.append(np.zeros(shape, np.float32))
                v.append(np.zeros(self.moment_shape, np.float32))
                t.append(0.0)
        parts = (np.stack(values), np.stack(m), np.stack(v), np.asarray(t))
        return tuple(p.astype(np.float32) for p in parts)

    def inputs(self, steps: int, seed: int, filters: Sequence[int], taken: np.ndarray):
        """What each of `steps` steps needs of its transforms, made on the host before the first.

        Image `k`'s random numbers at a step hash `(seed, filters[k], steps it has taken)`, so
        they do not depend on its batch (`taken` counts per image: a warm start resumes its
        count). For the standard transforms, one fused `Affine`, this is their matrices,
        `[steps, n, 8]` (`Affine.plan`): traced into the step, the few dozen small matrix
        operations took as long to trace as the layer's forward and backward pass. For any
        other transform, the random numbers themselves, `[steps, n, draws]`. One tensor, which
        `compile_loop` slices per step: the same shapes whatever `steps`, so nothing retraces.
        None without transforms.
        """
        transforms = self.renderer.transforms
        if transforms is None:
            return None
        taken = np.asarray(taken).astype(np.uint32)
        counts = taken[None, :] + np.arange(steps, dtype=np.uint32)[:, None]  # [steps, n]
        draws = _uniform(seed, np.asarray(filters, np.uint32), counts, transforms.draws)
        if isinstance(transforms, transform_lib.Affine):
            h, w = self.renderer.size
            flat, _ = transforms.plan(draws.reshape(steps * self.batch, transforms.draws), h, w)
            draws = flat.reshape(steps, self.batch, -1)
        return ops.convert_to_tensor(draws)

    def _score(self, values, targets, *inputs):
        """The objective summed over the chunk, at the images' own transforms of this step."""
        r = self.renderer
        images = self.param.images(values)
        x = images
        if r.transforms is not None:
            (given,) = inputs
            if isinstance(r.transforms, transform_lib.Affine):
                x = r.transforms.resample(x, given, self.transformed_size)
            else:
                x = r.transforms(x, given)
        outputs, pre = r._reader(r._prepare(x))
        acts = obj_lib.Activations(outputs, images, targets, pre, r._reader.head)
        return ops.sum(r.objective(acts)), None

    def _step(self, state, targets, *inputs):
        """One step of gradient ascent of the chunk: Adam, with a step count per image (warm and
        cold images can share a chunk) and a second moment per image and colour channel (see
        the module docstring)."""
        values, m, v, t = state
        _, grad = self._gradient(values, targets, *inputs)
        t = t + 1.0
        tt = ops.reshape(t, (-1,) + (1,) * len(self.param.value_shape))
        square = ops.mean(ops.square(grad), axis=self.spread, keepdims=True)
        m = _BETA1 * m + (1 - _BETA1) * grad
        v = _BETA2 * v + (1 - _BETA2) * square
        m_hat = m / (1 - ops.power(_BETA1, tt))
        v_hat = v / (1 - ops.power(_BETA2, tt))
        values = values + self.renderer.learning_rate * m_hat / (ops.sqrt(v_hat) + _EPSILON)
        return values, m, v, t

    def _evaluate(self, values, targets):
        r = self.renderer
        images = self.param.images(values)
        outputs, pre = r._reader(r._prepare(images))
        acts = obj_lib.Activations(outputs, images, targets, pre, r._reader.head)
        return r.measure(acts), images


def render(
    model: keras.Model,
    layer: str | None = None,
    filters=None,
    *,
    steps: int = DEFAULT_STEPS,
    size=None,
    seed: int = 0,
    init=None,
    **options,
) -> ActmaxImages:
    """Renders, for each filter of a conv layer, the image that excites it most.

    All selected filters are optimized together in one compiled step (in chunks that fit
    `memory_budget`), with a Fourier parameterization, decorrelated colours and random
    transforms by default. To render repeatedly (every epoch, say), keep a `Renderer`: it
    compiles once.

    Args:
        model: A built Keras model with one image input.
        layer: The conv layer (name or `outer/inner` path).
        filters: Filter indices; `None` means all.
        steps: Optimization steps (at least 1).
        size: `(h, w)` or one int; defaults to the model's input size.
        seed: Image `k` depends only on `(seed, filters[k], steps, init)`.
        init: A previous result to continue from (warm start).
        **options: Further `Renderer` arguments: `objective`, `param`, `transforms`,
            `value_range`, `learning_rate`, `decorrelate`, `batch_size`, `memory_budget`.

    Returns:
        `ActmaxImages` `[n, h, w, c]` in the model's input value range; `.activations` holds the
        activation each image reached and `.state` what a warm start needs.

    Raises:
        ValueError: For an unknown layer, a filter out of range, `steps < 1`, a non-conv layer
            where a channel objective needs one, or another bad argument.

    Example:
        >>> model = keras.Sequential([keras.Input((12, 16, 1)),
        ...                           keras.layers.Conv2D(3, 3, activation="relu", name="c")])
        >>> images = render(model, "c", filters=[0, 2], steps=8)
        >>> images.shape, images.filters
        ((2, 12, 16, 1), [0, 2])
    """
    renderer = Renderer(model, layer, size=size, **options)
    return renderer(filters, steps=steps, seed=seed, init=init)


# -- helpers ---------------------------------------------------------------------------------
def _mix(x: np.ndarray) -> np.ndarray:
    """A 32-bit multiply-xorshift hash of uint32s: every input bit affects every output bit."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x21F0AAAD)  # uint32 arrays wrap modulo 2**32
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x735A2D97)
    return x ^ (x >> np.uint32(15))


def _uniform(seed: int, keys: np.ndarray, steps: np.ndarray, count: int) -> np.ndarray:
    """`[..., n, count]` numbers in `[0, 1)` that depend only on `(seed, keys[i], steps[.., i], j)`.

    Stateless and keyed per image, so an image's transforms do not depend on its batch.

    Example:
        >>> u = _uniform(0, np.array([3, 4], np.uint32), np.array([[0, 0], [1, 1]], np.uint32), 2)
        >>> u.shape, bool((u >= 0).all() and (u < 1).all()), bool(u[0, 0, 0] != u[1, 0, 0])
        ((2, 2, 2), True, True)
    """
    shape = np.broadcast_shapes(np.shape(keys), np.shape(steps))
    h = _mix(np.full(shape, (int(seed) + 0x9E3779B9) & 0xFFFFFFFF, np.uint32))
    h = _mix(h ^ np.asarray(keys, np.uint32))
    h = _mix(h ^ np.asarray(steps, np.uint32))[..., None]
    h = _mix(h ^ np.arange(count, dtype=np.uint32))
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _transforms(transforms, size):
    if transforms is None:
        return None
    if isinstance(transforms, str):
        if transforms != "standard":
            raise ValueError(
                "transforms must be 'standard', None, a Transform or a list of them. "
                f"Received: transforms={transforms!r}"
            )
        transforms = transform_lib.standard(size)
    elif isinstance(transforms, list | tuple):
        transforms = transform_lib.compose(transforms)
    # Cropping back to the render size inside the same composition fuses it into one resampling.
    return transform_lib.compose([transforms, transform_lib.center_crop(size)])


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral | np.integer)
