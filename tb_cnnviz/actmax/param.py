"""Parameterizations: how a batch of images is held as trainable variables.

A parameterization owns the variables and maps them to images in `[0, 1]`: `param()` returns
`[n, h, w, c]`. Gradient ascent moves the variables, so the parameterization decides which images
are easy to reach. Two are offered:

* `fourier` (the default): each image is a spectrum whose frequencies are scaled by
  `1/f**decay_power`, so coarse structure moves as fast as fine detail and the optimizer does not
  fill the image with high-frequency noise; colours are decorrelated (see below).
* `pixel`: one variable per pixel, the plain baseline.

Colour decorrelation: the three channels the optimizer moves are not R, G and B but the
principal colour axes of natural images (luminance first), scaled by their spread, so a step
changes colours the way natural images vary. The matrix is built here from the published RGB
principal components of ImageNet (Krizhevsky et al., 2012, section 4.1). A final sigmoid keeps
every pixel in `[0, 1]`.

Every image draws its starting noise from its own seed, so image `k` starts the same whichever
other images share its batch.

Written in `keras.ops`: the same images on every Keras backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from tb_cnnviz import checks

__all__ = [
    "DEFAULT_DECAY_POWER",
    "FourierParam",
    "ImageParam",
    "PixelParam",
    "color_correlation",
    "fourier",
    "mixing_matrix",
    "pixel",
]

#: The default `decay_power` of `fourier`. A steeper `1/f` (1.0 is common for 224-pixel images)
#: holds back the fine detail deeper filters respond to at the 32 to 64 pixels of a training-time
#: render; `benchmarks/actmax.py` measures the trade-off (activation reached and high-frequency
#: energy against a plain pixel-space batch).
DEFAULT_DECAY_POWER = 0.5

# Eigenvalues and eigenvectors (columns) of the RGB covariance of ImageNet pixels in [0, 1].
_RGB_EIGENVALUES = np.array([0.2175, 0.0188, 0.0045])
_RGB_EIGENVECTORS = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
)


def color_correlation(images=None) -> np.ndarray:
    """The `3x3` matrix from decorrelated colour axes to RGB, columns scaled to a largest norm of 1.

    It is a square root of an RGB covariance: white noise in the decorrelated axes becomes noise
    with those colour statistics, and a unit step along the first axis changes the image the way
    its colours vary most. Without `images`, the statistics are ImageNet's, right for models
    trained on photographs; a model trained on other colours (saturated shapes, medical scans)
    is better served by the statistics of its own data.

    Args:
        images: Optional sample images `[..., 3]` of the training data, in any value range.

    Returns:
        A float32 `[3, 3]` matrix; pass it as `decorrelate=`.

    Raises:
        ValueError: If `images` do not end in 3 channels or have no variance.

    Example:
        >>> m = color_correlation()
        >>> m.shape, round(float(np.linalg.norm(m, axis=0).max()), 6)
        ((3, 3), 1.0)
        >>> color_correlation(np.random.rand(4, 8, 8, 3)).shape
        (3, 3)
    """
    if images is None:
        values, vectors = _RGB_EIGENVALUES, _RGB_EIGENVECTORS
    else:
        pixels = np.asarray(images, np.float64)
        if pixels.ndim < 2 or pixels.shape[-1] != 3:
            raise ValueError(
                f"images must end in 3 colour channels. Received: images.shape={pixels.shape}"
            )
        values, vectors = np.linalg.eigh(np.cov(pixels.reshape(-1, 3), rowvar=False))
        values = np.clip(values, 0.0, None)
        if not values.max() > 0:
            raise ValueError("images have no colour variance to decorrelate.")
    root = vectors * np.sqrt(values)[None, :]
    return (root / np.linalg.norm(root, axis=0).max()).astype(np.float32)


class ImageParam:
    """A batch of `n` images held as one trainable variable; `param()` returns `[n, h, w, c]` in
    `[0, 1]`.

    Subclasses define the variable's per-image shape (`value_shape`) and `_decode`.

    Args:
        batch: Images in the batch.
        size: `(height, width)`.
        channels: Colour channels (1 gray, 3 RGB, or any other count).
        decorrelate: Decorrelate colours (3 channels only): `True` with ImageNet's statistics,
            or a `3x3` matrix from `color_correlation(images)`.
        std: Standard deviation of the starting noise.
        seeds: One seed per image (default `range(batch)`).

    Attributes:
        variable: The `keras.Variable` holding the batch, `[batch, *value_shape]`.
        variables: The trainable variables (one).
        kind: The name of the parameterization.
    """

    kind = ""

    def __init__(self, batch, size, channels=3, *, decorrelate=True, std=0.01, seeds=None):
        self.batch = checks.integer("batch", batch, minimum=1)
        self.size = checks.image_size("size", size)
        self.channels = checks.integer("channels", channels, minimum=1)
        mix = mixing_matrix(decorrelate) if self.channels == 3 else None
        self.decorrelate = mix is not None
        self.std = float(std)
        self._mix = None if mix is None else np.ascontiguousarray(mix.T)
        seeds = range(self.batch) if seeds is None else seeds
        self.variable = keras.Variable(self.noise(seeds), name=f"{self.kind}_images")
        self.variables = [self.variable]

    @property
    def value_shape(self) -> tuple[int, ...]:
        """The shape of one image's slice of the variable."""
        return self.shape_for(self.size, self.channels)

    #: The axis of `value_shape` that holds the colour channel (the decorrelated axes when
    #: colours are decorrelated). The renderer normalizes its steps per image and per channel.
    channel_axis = 0

    @classmethod
    def shape_for(cls, size: tuple[int, int], channels: int) -> tuple[int, ...]:
        """The shape of one image's slice of the variable, for images of `size` and `channels`."""
        raise NotImplementedError

    def noise(self, seeds: Sequence) -> np.ndarray:
        """Starting values `[len(seeds), *value_shape]`, image `i` drawn from `seeds[i]` alone.

        A seed is an int or a tuple of ints (for example `(seed, filter)`).
        """
        values = np.empty((len(seeds), *self.value_shape), np.float32)
        for i, seed in enumerate(seeds):
            rng = np.random.default_rng(_entropy(seed))
            values[i] = rng.normal(0.0, self.std, self.value_shape)
        return values

    def __call__(self):
        """Returns the images `[n, h, w, c]` in `[0, 1]`."""
        return self.images(self.variable)

    def images(self, values):
        """Maps variable values `[n, *value_shape]` (any `n`) to images in `[0, 1]`.

        A pure function of `values`: differentiate it, or call it inside a compiled function,
        on any backend.

        Example:
            >>> param = pixel(2, 4, channels=1)
            >>> tuple(param.images(ops.zeros((3, 4, 4, 1))).shape)
            (3, 4, 4, 1)
        """
        logits = self._decode(ops.convert_to_tensor(values, "float32"))  # [n, h, w, c]
        if self._mix is not None:
            logits = ops.einsum("nhwc,cd->nhwd", logits, self._mix)
        return ops.sigmoid(logits)

    def _decode(self, values):
        raise NotImplementedError

    def __repr__(self) -> str:
        h, w = self.size
        return (
            f"{self.kind}(batch={self.batch}, size=({h}, {w}), channels={self.channels}, "
            f"decorrelate={self.decorrelate})"
        )


class PixelParam(ImageParam):
    """Images held pixel by pixel (before the colour mixing and the sigmoid). See `pixel`."""

    kind = "pixel"
    channel_axis = 2

    @classmethod
    def shape_for(cls, size, channels):
        return (*size, channels)

    def _decode(self, values):
        return values


class FourierParam(ImageParam):
    """Images held as `1/f`-scaled spectra (before the colour mixing and the sigmoid). See
    `fourier`.

    Args:
        decay_power: How fast the scale falls with frequency: `1/f**decay_power`. Larger values
            give smoother images; `DEFAULT_DECAY_POWER` by default.
        **kwargs: As for `ImageParam`.
    """

    kind = "fourier"

    def __init__(self, batch, size, channels=3, *, decay_power=None, **kwargs):
        decay_power = DEFAULT_DECAY_POWER if decay_power is None else decay_power
        self.decay_power = float(decay_power)
        h, w = checks.image_size("size", size)
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.rfftfreq(w)[None, :]
        freq = np.sqrt(fx**2 + fy**2)
        # The lowest frequency is floored at one cycle per image so the mean colour does not
        # get an infinite step size.
        scale = 1.0 / np.maximum(freq, 1.0 / max(h, w)) ** self.decay_power
        # Normalized so unit white noise in the spectrum becomes unit-variance pixels: the step
        # size of the optimizer then means the same at every image size.
        scale *= h * w / (2.0 * np.sqrt(np.sum(scale**2)))
        self._scale = np.concatenate([scale, scale]).astype(np.float32)  # real, imaginary
        rows, cols = _inverse_dft(h, w)
        self._rows = rows.astype(np.float32)
        self._cols = cols.reshape(2, w // 2 + 1, w).astype(np.float32)  # re/im, k, w
        super().__init__(batch, (h, w), channels, **kwargs)

    @classmethod
    def shape_for(cls, size, channels):
        h, w = size
        return (channels, 2 * h, w // 2 + 1)  # real parts in rows :h, imaginary in h:

    def _decode(self, values):
        # The inverse real 2-D DFT as two small matrix products: for the image sizes of
        # activation maximization this is several times faster on CPU than an FFT
        # (tf.signal.irfft2d, keras.ops.irfft), forward and backward, on every backend, and it
        # is exact. The real and imaginary halves are split by a reshape, not by slicing:
        # slices' gradients (TensorFlow's StridedSliceGrad) are slow on CPU.
        h, w = self.size
        y = ops.einsum("ij,ncjk->ncik", self._rows, ops.multiply(values, self._scale))
        y = ops.reshape(y, (-1, self.channels, 2, h, w // 2 + 1))  # [n, c, re/im, h, w//2+1]
        return ops.einsum("ncrik,rkw->niwc", y, self._cols)


def _inverse_dft(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Real matrices `(rows [2h, 2h], cols [2(w//2+1), w])` of the inverse real 2-D DFT.

    With the spectrum's real and imaginary parts stacked as `Z = [Re; Im]` (`[2h, w//2+1]`),
    `Y = rows @ Z` is the complex inverse DFT along the height (stacked the same way) and
    `[Re Y, Im Y] @ cols` the real inverse DFT along the width, as `numpy.fft.irfft2` computes
    for a Hermitian spectrum.
    """
    k = np.arange(h)
    angle = 2 * np.pi * np.outer(k, k) / h
    cos, sin = np.cos(angle), np.sin(angle)
    rows = np.block([[cos, -sin], [sin, cos]])
    half = w // 2 + 1
    k2, n2 = np.arange(half)[:, None], np.arange(w)[None, :]
    weight = np.full((half, 1), 2.0)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0  # the Nyquist column has no mirror image
    angle = 2 * np.pi * k2 * n2 / w
    cols = np.concatenate([weight * np.cos(angle), -weight * np.sin(angle)]) / (h * w)
    return rows, cols


def fourier(batch, size, channels=3, *, decorrelate=True, decay_power=None, std=0.01, seeds=None):
    """Images held as `1/f**decay_power`-scaled Fourier spectra with decorrelated colours: the
    default.

    Args:
        batch: Images in the batch.
        size: `(height, width)` or one int for square images.
        channels: Colour channels (1 gray, 3 RGB).
        decorrelate: Decorrelate colours (3 channels only): `True` for ImageNet's statistics, or
            a `3x3` matrix from `color_correlation(images)`.
        decay_power: The spectrum falls as `1/f**decay_power`; larger means smoother. Defaults to
            `DEFAULT_DECAY_POWER`.
        std: Standard deviation of the starting noise.
        seeds: One seed per image (int or tuple of ints); default `range(batch)`.

    Returns:
        A `FourierParam`: `param()` gives `[batch, h, w, channels]` in `[0, 1]`;
        `param.variables` are what to optimize.

    Example:
        >>> param = fourier(2, (8, 12))
        >>> images = ops.convert_to_numpy(param())
        >>> images.shape, bool(((images > 0) & (images < 1)).all())
        ((2, 8, 12, 3), True)
    """
    return FourierParam(
        batch,
        size,
        channels,
        decay_power=decay_power,
        decorrelate=decorrelate,
        std=std,
        seeds=seeds,
    )


def pixel(batch, size, channels=3, *, decorrelate=True, std=0.01, seeds=None):
    """Images held pixel by pixel, squashed into `[0, 1]` by a sigmoid.

    Args:
        batch: Images in the batch.
        size: `(height, width)` or one int for square images.
        channels: Colour channels (1 gray, 3 RGB).
        decorrelate: Decorrelate colours (3 channels only): `True` for ImageNet's statistics, or
            a `3x3` matrix from `color_correlation(images)`.
        std: Standard deviation of the starting noise.
        seeds: One seed per image (int or tuple of ints); default `range(batch)`.

    Returns:
        A `PixelParam`.

    Example:
        >>> tuple(pixel(1, 4, channels=1)().shape)
        (1, 4, 4, 1)
    """
    return PixelParam(batch, size, channels, decorrelate=decorrelate, std=std, seeds=seeds)


def mixing_matrix(decorrelate) -> np.ndarray | None:
    """The colour decorrelation matrix `decorrelate` asks for, checked; None for none.

    Args:
        decorrelate: `True` (ImageNet's colour statistics), `False` or None (no decorrelation),
            or a `3x3` matrix from `color_correlation(images)`.

    Raises:
        ValueError: For anything else.

    Example:
        >>> mixing_matrix(True).shape, mixing_matrix(False)
        ((3, 3), None)
    """
    if decorrelate is None or decorrelate is False:
        return None
    if decorrelate is True:
        return color_correlation()
    matrix = np.asarray(decorrelate, np.float32)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise ValueError(
            "decorrelate must be True, False or a 3x3 matrix from color_correlation(images). "
            f"Received: decorrelate with shape {matrix.shape}"
        )
    return matrix


def _entropy(seed) -> list[int]:
    parts = seed if isinstance(seed, tuple | list) else (seed,)
    return [int(p) & 0xFFFFFFFF for p in parts]
