"""The demo dataset: ten classes of coloured shapes at 32x32, generated on the spot, no download.

Each image is one shape (its class) in a random colour, at a random position and size, on a
random background colour with noise, so a small CNN must learn edges, corners and textures rather
than a colour lookup. Generation is deterministic for a given seed and takes well under a second
for thousands of images.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLASS_NAMES", "make_shapes"]

#: The ten classes, in label order.
CLASS_NAMES = (
    "disc",
    "square",
    "triangle",
    "ring",
    "cross",
    "horizontal stripes",
    "vertical stripes",
    "checkerboard",
    "diagonal stripes",
    "diamond",
)


def make_shapes(n: int, *, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generates `n` labelled shape images.

    Args:
        n: Number of images.
        size: Side of the square images, in pixels.
        seed: Random seed; the same seed gives the same images.

    Returns:
        `(images, labels)`: float32 `[n, size, size, 3]` in [0, 1] and int64 `[n]` in 0..9.

    Example:
        >>> images, labels = make_shapes(4, seed=1)
        >>> images.shape, images.dtype, labels.shape
        ((4, 32, 32, 3), dtype('float32'), (4,))
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASS_NAMES), n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy = rng.uniform(0.35, 0.65, (n, 1, 1))
    cx = rng.uniform(0.35, 0.65, (n, 1, 1))
    r = rng.uniform(0.18, 0.3, (n, 1, 1))
    period = rng.uniform(0.12, 0.2, (n, 1, 1))
    dy, dx = yy[None] - cy, xx[None] - cx
    inside = np.abs(dy) < r  # the shape's bounding region, used by the textures
    inside &= np.abs(dx) < r
    masks = np.stack(
        [
            dy**2 + dx**2 < r**2,
            inside,
            (dy > -r) & (dy < r) & (np.abs(dx) < (dy + r) / 2),
            np.abs(np.sqrt(dy**2 + dx**2) - r * 0.8) < r * 0.22,
            inside & ((np.abs(dy) < r * 0.3) | (np.abs(dx) < r * 0.3)),
            inside & ((yy[None] / period).astype(int) % 2 == 0),
            inside & ((xx[None] / period).astype(int) % 2 == 0),
            inside & (((yy[None] / period).astype(int) + (xx[None] / period).astype(int)) % 2 == 0),
            inside & ((((yy[None] + xx[None]) / period).astype(int)) % 2 == 0),
            np.abs(dy) + np.abs(dx) < r * 1.2,
        ],
        axis=1,
    )[np.arange(n), labels]
    background = rng.uniform(0.0, 1.0, (n, 1, 1, 3))
    foreground = rng.uniform(0.0, 1.0, (n, 1, 1, 3))
    # Keep the shape visible: push the foreground away from the background colour.
    foreground = np.where(
        np.abs(foreground - background).sum(-1, keepdims=True) < 0.6, 1.0 - background, foreground
    )
    images = np.where(masks[..., None], foreground, background)
    images = images + rng.normal(0.0, 0.05, images.shape)
    return np.clip(images, 0.0, 1.0).astype(np.float32), labels.astype(np.int64)
