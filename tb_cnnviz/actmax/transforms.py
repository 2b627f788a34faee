"""Transforms: random perturbations an image must survive, written as TF ops for the compiled step.

Optimizing an image that still excites its filter after being padded, shifted, scaled and
rotated a little ("transformation robustness") removes the high-frequency patterns a network
reacts to only at one exact pixel alignment, and leaves the structure it really detects.

A transform is called as `transform(images, draws)`: `images` is `[n, h, w, c]` and `draws` is
`[n, transform.draws]` uniform numbers in `[0, 1)`, the transform's randomness for each image. The
renderer derives draws from `(seed, filter, step)`, so filter `k`'s image does not depend on the
other images in its batch. Called with images only, a transform draws its own random numbers.

`pad`, `jitter`, `random_scale` and `random_rotate` are geometric (`Affine`): `compose` multiplies
the matrices of consecutive ones and resamples the image once, with one bilinear
`ImageProjectiveTransformV3` op (a native kernel with a registered gradient). Resampling once is
both cheaper and sharper than a chain of interpolations; pixels that come from outside the image
take the pad's fill value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from tb_cnnviz import checks

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
        >>> flip = Transform(lambda images, draws: images[:, :, ::-1], description="flip")
        >>> flip(tf.reshape(tf.range(4.0), (1, 1, 4, 1)))[0, 0, :, 0].numpy().tolist()
        [3.0, 2.0, 1.0, 0.0]
    """

    def __init__(self, fn: Callable, draws: int = 0, description: str = "transform"):
        self.fn = fn
        self.draws = int(draws)
        self.description = description

    def __call__(self, images, draws=None):
        images = tf.convert_to_tensor(images)
        if draws is None:
            draws = tf.random.uniform([tf.shape(images)[0], self.draws])
        return self.fn(images, draws)

    def __repr__(self) -> str:
        return self.description


class Affine(Transform):
    """A geometric transform: per image, a `3x3` matrix from output to input pixel coordinates.

    Args:
        geometry: `(draws, h, w) -> (matrices [n, 3, 3], out_h, out_w)` for input size `(h, w)`;
            a matrix maps an output pixel `(x, y, 1)` to the input position it samples.
        draws: Random numbers used per image.
        description: What it is, in code form.
        fill: The value of pixels sampled outside the input, in `[0, 1]` image units; `None`
            reflects the image at its border.

    Example:
        >>> shift = Affine(lambda d, h, w: (tf.constant([[[1.0, 0, 1], [0, 1, 0], [0, 0, 1]]]),
        ...                                 h, w - 1), description="shift")
        >>> shift(tf.reshape(tf.range(4.0), (1, 1, 4, 1)))[0, 0, :, 0].numpy().tolist()
        [1.0, 2.0, 3.0]
    """

    def __init__(self, geometry: Callable, draws: int = 0, description="affine", fill=None):
        self.geometry = geometry
        self.fill = fill
        super().__init__(self._apply, draws, description)

    def _apply(self, images, draws):
        h, w = _spatial(images)
        matrices, out_h, out_w = self.geometry(draws, h, w)
        flat = tf.reshape(matrices / matrices[:, 2:, 2:], [-1, 9])[:, :8]
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=tf.cast(flat, tf.float32),
            output_shape=tf.stack([out_h, out_w]),
            fill_value=tf.constant(0.0 if self.fill is None else self.fill, tf.float32),
            interpolation="BILINEAR",
            fill_mode="REFLECT" if self.fill is None else "CONSTANT",
        )


def compose(transforms: Sequence[Transform | Callable]) -> Transform:
    """Chains transforms left to right; plain functions `images -> images` work too.

    Consecutive `Affine` transforms are fused into one resampling.

    Example:
        >>> t = compose([pad(1), jitter(2)])
        >>> t.draws, t(tf.zeros((2, 8, 8, 3))).shape
        (2, TensorShape([2, 8, 8, 3]))
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

    return Transform(fn, sum(t.draws for t in fused), description)


def pad(width: int, *, value: float | None = 0.5) -> Affine:
    """Pads every side by `width` pixels, so the image's edges may move inward under jitter.

    Args:
        width: Pixels added on each side.
        value: The fill, in `[0, 1]` image units (0.5 is mid-grey); `None` reflects the image.

    Example:
        >>> pad(2)(tf.zeros((1, 4, 4, 1))).shape
        TensorShape([1, 8, 8, 1])
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
        >>> jitter(3)(tf.zeros((2, 10, 12, 3))).shape
        TensorShape([2, 7, 9, 3])
    """
    pixels = checks.integer("pixels", pixels, minimum=0)

    def geometry(draws, h, w):
        offsets = tf.minimum(tf.floor(draws * (pixels + 1)), float(pixels))  # [n, 2]
        return _translation(draws, offsets[:, 0], offsets[:, 1]), h - pixels, w - pixels

    return Affine(geometry, 2, f"jitter({pixels})")


def random_scale(scales: Sequence[float]) -> Affine:
    """Zooms each image about its centre by a factor drawn from `scales`, keeping its size.

    Example:
        >>> random_scale([0.9, 1.0, 1.1])(tf.zeros((2, 8, 8, 3))).shape
        TensorShape([2, 8, 8, 3])
    """
    choices = _choices(scales, "scales")
    if min(choices) <= 0:
        raise ValueError(f"scales must be positive. Received: scales={list(scales)!r}")

    def geometry(draws, h, w):
        inverse = 1.0 / _pick(choices, draws[:, 0])
        zero = tf.zeros_like(inverse)
        return _about_centre(inverse, zero, zero, inverse, h, w), h, w

    return Affine(geometry, 1, f"random_scale({_short(choices)})")


def random_rotate(degrees: Sequence[float]) -> Affine:
    """Rotates each image about its centre by an angle (in degrees) drawn from `degrees`.

    Example:
        >>> random_rotate(range(-10, 11))(tf.zeros((2, 8, 8, 3))).shape
        TensorShape([2, 8, 8, 3])
    """
    choices = _choices(degrees, "degrees")

    def geometry(draws, h, w):
        angle = _pick(choices, draws[:, 0]) * (math.pi / 180.0)
        cos, sin = tf.cos(angle), tf.sin(angle)
        return _about_centre(cos, -sin, sin, cos, h, w), h, w

    return Affine(geometry, 1, f"random_rotate({_short(choices)})")


def center_crop(size) -> Affine:
    """Crops (or pads with mid-grey) each image about its centre to `size` (an int or `(h, w)`).

    Example:
        >>> center_crop((4, 6))(tf.zeros((1, 9, 9, 3))).shape
        TensorShape([1, 4, 6, 3])
    """
    out_h, out_w = (size, size) if isinstance(size, int | np.integer) else (int(s) for s in size)

    def geometry(draws, h, w):
        # Whole-pixel offsets keep the crop exact (no interpolation blur).
        dy = (tf.cast(h, tf.float32) - out_h) // 2
        dx = (tf.cast(w, tf.float32) - out_w) // 2
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
def _fuse(first: Affine, second: Affine) -> Affine:
    """One resampling doing `first` then `second`: input = M_first @ M_second @ output."""

    def geometry(draws, h, w):
        m1, h1, w1 = first.geometry(draws[:, : first.draws], h, w)
        m2, h2, w2 = second.geometry(draws[:, first.draws :], h1, w1)
        return tf.matmul(m1, m2), h2, w2

    fill = first.fill if first.fill is not None else second.fill
    return Affine(geometry, first.draws + second.draws, f"{first}, {second}", fill)


def _translation(draws, dx, dy):
    """Matrices sampling the input at `output + (dx, dy)`."""
    n = tf.shape(draws)[0]
    dx = tf.broadcast_to(tf.cast(dx, tf.float32), [n])
    dy = tf.broadcast_to(tf.cast(dy, tf.float32), [n])
    one, zero = tf.ones([n]), tf.zeros([n])
    return tf.reshape(tf.stack([one, zero, dx, zero, one, dy, zero, zero, one], 1), [-1, 3, 3])


def _about_centre(a, b, c, d, h, w):
    """Matrices sampling the input at `centre + [[a, b], [c, d]] @ (output - centre)`."""
    cx = (tf.cast(w, tf.float32) - 1) / 2
    cy = (tf.cast(h, tf.float32) - 1) / 2
    tx = cx - a * cx - b * cy
    ty = cy - c * cx - d * cy
    one, zero = tf.ones_like(a), tf.zeros_like(a)
    return tf.reshape(tf.stack([a, b, tx, c, d, ty, zero, zero, one], 1), [-1, 3, 3])


def _spatial(images):
    dynamic = tf.shape(images)
    return tuple(images.shape[i] if images.shape[i] is not None else dynamic[i] for i in (1, 2))


def _pick(choices: tuple[float, ...], u):
    table = tf.constant(choices, tf.float32)
    index = tf.minimum(tf.cast(u * len(choices), tf.int32), len(choices) - 1)
    return tf.gather(table, index)


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
