"""Transforms: random perturbations an image must survive, in `keras.ops` (and NumPy, planned).

Optimizing an image that still excites its filter after being padded, shifted, scaled and
rotated a little ("transformation robustness") removes the high-frequency patterns a network
reacts to only at one exact pixel alignment, and leaves the structure it really detects.

A transform is called as `transform(images, draws)`: `images` is `[n, h, w, c]` and `draws` is
`[n, transform.draws]` uniform numbers in `[0, 1)`, the transform's randomness for each image. The
renderer derives draws from `(seed, filter, step)`, so filter `k`'s image does not depend on the
other images in its batch. Called with images only, a transform draws its own random numbers.

`pad`, `jitter`, `random_scale` and `random_rotate` are geometric (`Affine`): `compose` multiplies
the matrices of consecutive ones and resamples the image once, bilinearly: on TensorFlow with its
native `ImageProjectiveTransformV3` kernel (`tb_cnnviz.backend.native_resampler`), elsewhere with
four gathers in `keras.ops` that compute the same values. Resampling once is both cheaper and
sharper than a chain of interpolations; pixels that come from outside the image take the pad's
fill value, or reflect the image. Image sizes must be known when a transform is built into a
compiled step (they are in the renderer).

Given draws as a NumPy array, an `Affine` computes its matrices on the host, in NumPy, and only
the resampling runs on the backend (`Affine.plan`, then `Affine.resample`). The renderer does this
for every step of a drawing at once, before its compiled step runs: the dozens of small matrix
operations then cost nothing to trace, which halves the first call of a renderer on a small CNN.
Given backend tensors (inside a compiled function, say), the same geometry runs in `keras.ops`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops

from tb_cnnviz import backend, checks

__all__ = [
    "Affine",
    "Transform",
    "center_crop",
    "compose",
    "jitter",
    "pad",
    "random_rotate",
    "random_scale",
    "standard",
]


class Transform:
    """A random image transform: `transform(images, draws=None) -> images`.

    Args:
        fn: `(images, draws) -> images`, with `draws` `[n, draws]` uniform in `[0, 1)`.
        draws: Random numbers used per image.
        description: What it is, in code form.

    Example:
        >>> flip = Transform(lambda images, draws: ops.flip(images, axis=2), description="flip")
        >>> ops.convert_to_numpy(flip(ops.reshape(ops.arange(4.0), (1, 1, 4, 1))))[0, 0, :, 0]
        array([3., 2., 1., 0.], dtype=float32)
    """

    def __init__(self, fn: Callable, draws: int = 0, description: str = "transform"):
        self.fn = fn
        self.draws = int(draws)
        self.description = description
        #: Whether `fn` takes draws as a NumPy array (ours do); a user's `fn` gets tensors.
        self.host_draws = False

    def __call__(self, images, draws=None):
        images = ops.convert_to_tensor(images)
        if draws is None:
            draws = keras.random.uniform((images.shape[0], self.draws))
        if self.host_draws and isinstance(draws, np.ndarray | list | tuple):
            return self.fn(images, np.asarray(draws, np.float32))  # planned on the host
        return self.fn(images, ops.cast(ops.convert_to_tensor(draws), "float32"))

    def __repr__(self) -> str:
        return self.description


class Affine(Transform):
    """A geometric transform: per image, a `3x3` matrix from output to input pixel coordinates.

    Args:
        geometry: `(draws, h, w) -> (matrices [n, 3, 3], out_h, out_w)` for input size `(h, w)`;
            a matrix maps an output pixel `(x, y, 1)` to the input position it samples. `draws`
            is a NumPy array where the matrices are planned on the host (the renderer plans
            them so), a backend tensor otherwise: `keras.ops` take both, and NumPy results
            are fine where `draws` is one.
        draws: Random numbers used per image.
        description: What it is, in code form.
        fill: The value of pixels sampled outside the input, in `[0, 1]` image units; `None`
            reflects the image at its border.

    Example:
        >>> shift = Affine(lambda d, h, w: (np.array([[[1.0, 0, 1], [0, 1, 0], [0, 0, 1]]]),
        ...                                 h, w - 1), description="shift")
        >>> ops.convert_to_numpy(shift(ops.reshape(ops.arange(4.0), (1, 1, 4, 1))))[0, 0, :, 0]
        array([1., 2., 3.], dtype=float32)
    """

    def __init__(self, geometry: Callable, draws: int = 0, description="affine", fill=None):
        self.geometry = geometry
        self.fill = fill
        super().__init__(self._apply, draws, description)
        self.host_draws = True

    def plan(self, draws, h: int, w: int) -> tuple[np.ndarray, tuple[int, int]]:
        """Computes on the host, in NumPy, what `resample` needs for images of size `(h, w)`.

        Args:
            draws: `[n, self.draws]` uniform numbers in `[0, 1)`, as a NumPy array.
            h: The input images' height.
            w: Their width.

        Returns:
            `(transforms, (out_h, out_w))`: `transforms` `[n, 8]` float32, each row a projective
            transform from output to input pixel coordinates (TensorFlow's layout).

        Example:
            >>> rows, size = jitter(2).plan(np.array([[0.0, 0.99]]), 8, 8)
            >>> rows.round(2).tolist(), size
            ([[1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0]], (6, 6))
        """
        draws = np.asarray(draws, np.float32)
        draws = draws.reshape(len(draws), self.draws)
        matrices, out_h, out_w = self.geometry(draws, int(h), int(w))
        matrices = backend.to_numpy(matrices).astype(np.float32)  # a user's geometry may use ops
        flat = (matrices / matrices[:, 2:, 2:]).reshape(-1, 9)[:, :8]
        return np.ascontiguousarray(flat), (int(out_h), int(out_w))

    def resample(self, images, transforms, size: tuple[int, int]):
        """Resamples `images` `[n, h, w, c]` at `transforms` `[n, 8]` to `size`, bilinearly.

        Pixels sampled outside the input take the fill value, or reflect the image.

        Example:
            >>> t = pad(1)
            >>> rows, size = t.plan(np.zeros((1, 0)), 2, 2)
            >>> ops.convert_to_numpy(t.resample(ops.ones((1, 2, 2, 1)), rows, size))[0, :, :, 0]
            array([[0.5, 0.5, 0.5, 0.5],
                   [0.5, 1. , 1. , 0.5],
                   [0.5, 1. , 1. , 0.5],
                   [0.5, 0.5, 0.5, 0.5]], dtype=float32)
        """
        transforms = ops.convert_to_tensor(transforms, "float32")
        native = backend.native_resampler()
        if native is not None:
            return native(images, transforms, size, self.fill)
        return _bilinear(images, transforms, size, self.fill)

    def _apply(self, images, draws):
        h, w = _spatial(images)
        if isinstance(draws, np.ndarray):
            flat, size = self.plan(draws, h, w)
            return self.resample(images, flat, size)
        matrices, out_h, out_w = self.geometry(draws, h, w)
        matrices = ops.cast(matrices, "float32")
        flat = ops.reshape(matrices / matrices[:, 2:, 2:], (-1, 9))[:, :8]
        return self.resample(images, flat, (int(out_h), int(out_w)))


def compose(transforms: Sequence[Transform | Callable]) -> Transform:
    """Chains transforms left to right; plain functions `images -> images` work too.

    Consecutive `Affine` transforms are fused into one resampling.

    Example:
        >>> t = compose([pad(1), jitter(2)])
        >>> t.draws, tuple(t(ops.zeros((2, 8, 8, 3))).shape)
        (2, (2, 8, 8, 3))
    """
    steps = [_as_transform(t) for t in transforms]
    fused: list[Transform] = []
    for t in steps:
        if fused and isinstance(t, Affine) and isinstance(fused[-1], Affine):
            fused[-1] = _fuse(fused[-1], t)
        else:
            fused.append(t)
    description = "compose([" + ", ".join(map(str, steps)) + "])"
    if len(fused) == 1 and isinstance(fused[0], Affine):
        return Affine(fused[0].geometry, fused[0].draws, description, fused[0].fill)

    def fn(images, draws):
        start = 0
        for t in fused:
            images = t(images, draws[:, start : start + t.draws])
            start += t.draws
        return images

    chain = Transform(fn, sum(t.draws for t in fused), description)
    chain.host_draws = True  # each part converts for itself
    return chain


def pad(width: int, *, value: float | None = 0.5) -> Affine:
    """Pads every side by `width` pixels, so the image's edges may move inward under jitter.

    Args:
        width: Pixels added on each side.
        value: The fill, in `[0, 1]` image units (0.5 is mid-grey); `None` reflects the image.

    Example:
        >>> tuple(pad(2)(ops.zeros((1, 4, 4, 1))).shape)
        (1, 8, 8, 1)
    """
    width = checks.integer("width", width, minimum=0)

    def geometry(draws, h, w):
        return _translation(draws, -width, -width), h + 2 * width, w + 2 * width

    description = f"pad({width})" if value == 0.5 else f"pad({width}, value={value!r})"
    return Affine(geometry, 0, description, None if value is None else float(value))


def jitter(pixels: int) -> Affine:
    """Crops each image at a random whole-pixel offset, `pixels` smaller in height and width.

    Its two draws pick the column offset and the row offset, each in `0..pixels`.

    Example:
        >>> tuple(jitter(3)(ops.zeros((2, 10, 12, 3))).shape)
        (2, 7, 9, 3)
    """
    pixels = checks.integer("pixels", pixels, minimum=0)

    def geometry(draws, h, w):
        xp = _ops_for(draws)
        offsets = xp.minimum(xp.floor(draws * (pixels + 1)), float(pixels))  # [n, 2]
        return _translation(draws, offsets[:, 0], offsets[:, 1]), h - pixels, w - pixels

    return Affine(geometry, 2, f"jitter({pixels})")


def random_scale(scales: Sequence[float]) -> Affine:
    """Zooms each image about its centre by a factor drawn from `scales`, keeping its size.

    Example:
        >>> tuple(random_scale([0.9, 1.0, 1.1])(ops.zeros((2, 8, 8, 3))).shape)
        (2, 8, 8, 3)
    """
    choices = _choices(scales, "scales")
    if min(choices) <= 0:
        raise ValueError(f"scales must be positive. Received: scales={list(scales)!r}")

    def geometry(draws, h, w):
        inverse = 1.0 / _pick(choices, draws[:, 0])
        zero = _ops_for(draws).zeros_like(inverse)
        return _about_centre(inverse, zero, zero, inverse, h, w), h, w

    return Affine(geometry, 1, f"random_scale({_short(choices)})")


def random_rotate(degrees: Sequence[float]) -> Affine:
    """Rotates each image about its centre by an angle (in degrees) drawn from `degrees`.

    Example:
        >>> tuple(random_rotate(range(-10, 11))(ops.zeros((2, 8, 8, 3))).shape)
        (2, 8, 8, 3)
    """
    choices = _choices(degrees, "degrees")

    def geometry(draws, h, w):
        xp = _ops_for(draws)
        angle = _pick(choices, draws[:, 0]) * (math.pi / 180.0)
        cos, sin = xp.cos(angle), xp.sin(angle)
        return _about_centre(cos, -sin, sin, cos, h, w), h, w

    return Affine(geometry, 1, f"random_rotate({_short(choices)})")


def center_crop(size) -> Affine:
    """Crops (or pads with mid-grey) each image about its centre to `size` (an int or `(h, w)`).

    Example:
        >>> tuple(center_crop((4, 6))(ops.zeros((1, 9, 9, 3))).shape)
        (1, 4, 6, 3)
    """
    out_h, out_w = (size, size) if isinstance(size, int | np.integer) else (int(s) for s in size)

    def geometry(draws, h, w):
        # Whole-pixel offsets keep the crop exact (no interpolation blur).
        dy = (h - out_h) // 2
        dx = (w - out_w) // 2
        return _translation(draws, dx, dy), out_h, out_w

    return Affine(geometry, 0, f"center_crop(({out_h}, {out_w}))", 0.5)


def standard(size) -> Transform:
    """The default robustness recipe, sized for images of `size` (an int or `(h, w)`).

    Pad, jitter, scale by up to 5%, rotate by up to 5 degrees, jitter again: the recipe Lucid
    made standard, with pixel amounts scaled to the image (a 224-pixel image gets Lucid's 12-pixel
    pad and 8-pixel jitter). The result is a little larger than `size`; the renderer crops it.

    Example:
        >>> standard(32)
        compose([pad(2), jitter(1), random_scale(0.95..1.05), random_rotate(-5..5), jitter(1)])
    """
    side = max(size) if isinstance(size, tuple | list) else int(size)
    big = max(1, round(side * 8 / 224))
    return compose(
        [
            pad(max(1, round(side * 12 / 224))),
            jitter(big),
            random_scale(np.linspace(0.95, 1.05, 11)),
            random_rotate(np.linspace(-5.0, 5.0, 11)),
            jitter(max(1, big // 2)),
        ]
    )


# -- helpers ---------------------------------------------------------------------------------
def _bilinear(images, transforms, size, fill):
    """Bilinear resampling `[n, h, w, c] -> [n, *size, c]` as TensorFlow's projective transform
    computes it: `transforms` `[n, 8]` map each output pixel `(x, y)` to the input position it
    samples; a neighbour outside the image counts as `fill` (None: positions reflect into the
    image first, as `(d c b a | a b c d | d c b a)`).

    Four gathers of whole pixels, their gradient four scatters: cheaper, forward and backward,
    than interpolating in three dimensions (`map_coordinates`).
    """
    n, h, w, c = images.shape
    out_h, out_w = size
    ys, xs = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    xs = ops.convert_to_tensor(xs.reshape(1, -1).astype(np.float32))
    ys = ops.convert_to_tensor(ys.reshape(1, -1).astype(np.float32))
    a = [transforms[:, i : i + 1] for i in range(8)]  # [n, 1] each
    projection = a[6] * xs + a[7] * ys + 1.0
    x = (a[0] * xs + a[1] * ys + a[2]) / projection  # [n, out_h * out_w]
    y = (a[3] * xs + a[4] * ys + a[5]) / projection
    if fill is None:
        x, y = _reflect(x, w), _reflect(y, h)
    x0, y0 = ops.floor(x), ops.floor(y)
    fx, fy = x - x0, y - y0
    table = ops.reshape(images, (n, h * w, c))
    out, outside = 0.0, 0.0
    corners = ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx))
    corners += ((1, 0, fy * (1 - fx)), (1, 1, fy * fx))
    for dy, dx, weight in corners:
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
        index = ops.cast(ops.clip(yy, 0, h - 1) * w + ops.clip(xx, 0, w - 1), "int32")
        pixels = ops.take_along_axis(table, index[..., None], axis=1)  # [n, out_h * out_w, c]
        out = out + ops.where(inside, weight, 0.0)[..., None] * pixels
        outside = outside + ops.where(inside, 0.0, weight)
    if fill is not None and fill != 0:
        out = out + fill * outside[..., None]
    return ops.reshape(out, (n, out_h, out_w, c))


def _reflect(coord, length: int):
    """Positions outside `[0, length - 1]` mirrored back into it, as TensorFlow's REFLECT mode."""
    if length <= 1:
        return ops.zeros_like(coord)
    period = 2.0 * length
    below = ops.where(coord < -period, period * ops.floor(-coord / period) + coord, coord)
    below = ops.where(below < -length, below + period, -below - 1)
    above = coord - period * ops.floor(coord / period)
    above = ops.where(above >= length, period - above - 1, above)
    mirrored = ops.where(coord < 0, below, ops.where(coord > length - 1, above, coord))
    return ops.clip(mirrored, 0, length - 1)


def _fuse(first: Affine, second: Affine) -> Affine:
    """One resampling doing `first` then `second`: input = M_first @ M_second @ output."""

    def geometry(draws, h, w):
        m1, h1, w1 = first.geometry(draws[:, : first.draws], h, w)
        m2, h2, w2 = second.geometry(draws[:, first.draws :], h1, w1)
        if isinstance(draws, np.ndarray):  # planned on the host: a user's geometry may use ops
            return np.matmul(backend.to_numpy(m1), backend.to_numpy(m2)), h2, w2
        return ops.matmul(m1, m2), h2, w2

    fill = first.fill if first.fill is not None else second.fill
    return Affine(geometry, first.draws + second.draws, f"{first}, {second}", fill)


def _translation(draws, dx, dy):
    """Matrices sampling the input at `output + (dx, dy)`."""
    xp = _ops_for(draws)
    n = draws.shape[0]
    dx = xp.broadcast_to(xp.cast(dx, "float32"), (n,))
    dy = xp.broadcast_to(xp.cast(dy, "float32"), (n,))
    one, zero = xp.ones((n,), "float32"), xp.zeros((n,), "float32")
    return xp.reshape(xp.stack([one, zero, dx, zero, one, dy, zero, zero, one], 1), (-1, 3, 3))


def _about_centre(a, b, c, d, h, w):
    """Matrices sampling the input at `centre + [[a, b], [c, d]] @ (output - centre)`."""
    cx = (w - 1) / 2
    cy = (h - 1) / 2
    tx = cx - a * cx - b * cy
    ty = cy - c * cx - d * cy
    xp = _ops_for(a)
    one, zero = xp.ones_like(a), xp.zeros_like(a)
    return xp.reshape(xp.stack([a, b, tx, c, d, ty, zero, zero, one], 1), (-1, 3, 3))


def _spatial(images) -> tuple[int, int]:
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise ValueError(
            "Transforms need image batches [n, h, w, c] of a known height and width. "
            f"Received: images of shape {shape}"
        )
    return int(shape[1]), int(shape[2])


def _pick(choices: tuple[float, ...], u):
    xp = _ops_for(u)
    table = np.asarray(choices, np.float32)
    index = xp.minimum(xp.cast(u * len(choices), "int32"), len(choices) - 1)
    return xp.take(table, index)


class _NumPyOps:
    """The few `keras.ops` the geometries use, in NumPy: matrices planned on the host."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def cast(x, dtype):
        return np.asarray(x).astype(dtype)


_NUMPY_OPS = _NumPyOps()


def _ops_for(x):
    """NumPy for host arrays (`Affine.plan`), `keras.ops` for backend tensors."""
    return _NUMPY_OPS if isinstance(x, np.ndarray) else ops


def _choices(values, name: str) -> tuple[float, ...]:
    try:
        choices = tuple(float(v) for v in values)
    except TypeError:
        choices = ()
    if not choices or not all(math.isfinite(v) for v in choices):
        raise ValueError(
            f"{name} must be a non-empty sequence of finite numbers. Received: {name}={values!r}"
        )
    return choices


def _short(choices) -> str:
    if len(choices) <= 3:
        return ", ".join(f"{c:g}" for c in choices)
    return f"{min(choices):g}..{max(choices):g}"


def _as_transform(t) -> Transform:
    if isinstance(t, Transform):
        return t
    if not callable(t):
        raise ValueError(f"A transform must be a Transform or a callable. Received: {t!r}")
    return Transform(lambda images, draws: t(images), 0, getattr(t, "__name__", "transform"))
