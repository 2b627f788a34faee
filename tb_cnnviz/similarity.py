"""Layer similarity, filter alignment and dataset examples: the math, in NumPy, for both sides.

The writing side (`tb_cnnviz.summary.responses`) reduces a layer's activations over the run's
reference images to a few small arrays with `layer_responses` (on the Keras backend when given
backend tensors, so a GPU does the heavy part); the serving side (`tb_cnnviz.compare`, and the
TensorBoard plugin) compares them with the functions below. Nothing here imports TensorFlow or
Keras; SciPy is imported only by `match`.

* **Linear CKA** (Kornblith et al., 2019, "Similarity of Neural Network Representations
  Revisited"): for activations `X` `[n, p]` and `Y` `[n, q]` of the same `n` images, with `K` and
  `L` the Gram matrices of their column-centered features,
  `CKA = <K, L>_F / (||K||_F ||L||_F)`. It is invariant to orthogonal transformations and
  isotropic scaling of either side, and 1 for a layer with itself. Each datum stores the upper
  triangle of its `K` (row-major, float32) and `||K||_F`, so any two (run, layer, step) with the
  same reference images compare without the activations.
* **Alignment**: each filter's *pooled response* (its spatial mean over each reference image) is
  stored standardized over the images (z-scores, float16), so the Pearson correlation of two
  filters is the mean of their z-scores' product; `match` finds the one-to-one matching of two
  layers' filters that maximizes the summed correlation (SciPy's `linear_sum_assignment`).
* **Dataset examples**: per filter, the `k` reference images whose largest activation (over the
  layer's positions) is highest, best first, ties to the lower image index, with the position of
  that maximum (its first occurrence in row-major order) and its value.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_TOP_K",
    "MIN_REFERENCES",
    "correlations",
    "cka",
    "check_reference_count",
    "cka_matrix",
    "decode_array",
    "encode_array",
    "layer_responses",
    "match",
    "pack_triangle",
    "reference_hash",
    "standardize",
    "top_examples",
    "triangle_norm",
    "unpack_triangle",
]

#: The fewest reference images accepted: CKA and correlations over fewer say little.
MIN_REFERENCES = 16
#: Reference images kept per filter as its dataset examples, by default.
DEFAULT_TOP_K = 8

#: Array dtypes a responses datum may hold (little-endian, as stored).
_DTYPES = {"<f2", "<f4", "<f8", "<i4"}


def reference_hash(images) -> str:
    """The content hash that identifies a set of reference images: 16 hex digits of SHA-256.

    It covers the images' shape and their values as float32, so the same images give the same
    hash on every backend and machine, whatever dtype they were given in.

    Args:
        images: An array `[n, ...]`, or a list of arrays (one per model input).

    Returns:
        The hash, a string of 16 hexadecimal digits.

    Example:
        >>> images = np.zeros((16, 4, 4, 3))
        >>> reference_hash(images) == reference_hash(images.astype("uint8"))
        True
        >>> len(reference_hash(np.ones((16, 4, 4, 3))))
        16
    """
    arrays = images if isinstance(images, list | tuple) else [images]
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(np.asarray(array, dtype="<f4"))
        digest.update(repr(tuple(array.shape)).encode("ascii"))
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def check_reference_count(n: int, name: str = "reference_images") -> None:
    """Raises a ValueError unless `n` reference images are enough (at least 16).

    Example:
        >>> check_reference_count(8)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: reference_images must hold at least 16 images: ... Received: 8 images
    """
    if n < MIN_REFERENCES:
        raise ValueError(
            f"{name} must hold at least {MIN_REFERENCES} images: CKA and filter correlations "
            f"over fewer say little. Received: {n} images"
        )


class _NumpyOps:
    """The few `keras.ops` functions `layer_responses` needs, in NumPy."""

    reshape = staticmethod(np.reshape)
    mean = staticmethod(np.mean)
    matmul = staticmethod(np.matmul)
    transpose = staticmethod(np.transpose)
    max = staticmethod(np.max)
    take = staticmethod(np.take)

    @staticmethod
    def cast(x, dtype):
        return np.asarray(x, dtype=dtype)

    @staticmethod
    def convert_to_numpy(x):
        return np.asarray(x)


def layer_responses(activations, *, top_k: int = DEFAULT_TOP_K, ops=None) -> dict[str, Any]:
    """Reduces a layer's activations over the reference images to what a responses datum needs.

    Args:
        activations: The layer's output for the `n` reference images, channels last:
            `[n, filters]`, `[n, length, filters]`, `[n, h, w, filters]` or
            `[n, d, h, w, filters]`.
        top_k: Dataset examples per filter (at most `n`).
        ops: Where to compute: `keras.ops` (the backend's tensors and devices; only small
            arrays come back) or None (NumPy).

    Returns:
        NumPy arrays: `gram` `[n, n]` float32 (the centered Gram matrix of the flattened
        activations), `pooled` `[n, filters]` float32 (each filter's spatial mean per image),
        the dataset examples `example_index`, `example_position` and `example_activation` (as
        `top_examples` gives them), and `grid` (the spatial shape, a tuple).

    Example:
        >>> out = layer_responses(np.random.rand(16, 5, 5, 4), top_k=3)
        >>> out["gram"].shape, out["pooled"].shape, out["example_index"].shape, out["grid"]
        ((16, 16), (16, 4), (4, 3), (5, 5))
    """
    ops = _NumpyOps if ops is None else ops
    shape = tuple(int(d) for d in activations.shape)
    n, grid, filters = shape[0], shape[1:-1], shape[-1]
    positions = math.prod(grid)
    x = ops.cast(activations, "float32")
    flat = ops.reshape(x, (n, positions * filters))
    centered = flat - ops.mean(flat, axis=0, keepdims=True)
    gram = ops.matmul(centered, ops.transpose(centered))
    per_position = ops.reshape(x, (n, positions, filters))
    peak = np.asarray(ops.convert_to_numpy(ops.max(per_position, axis=1)), np.float32)

    def gather(images):  # only the images some filter keeps leave the device
        return np.asarray(ops.convert_to_numpy(ops.take(per_position, images, axis=0)))

    index, position, activation = _examples(peak, gather, grid, top_k)
    return {
        "gram": np.asarray(ops.convert_to_numpy(gram), np.float32),
        "pooled": np.asarray(ops.convert_to_numpy(ops.mean(per_position, axis=1)), np.float32),
        "example_index": index,
        "example_position": position,
        "example_activation": activation,
        "grid": grid,
    }


# -- CKA ---------------------------------------------------------------------------------------
def pack_triangle(matrix) -> np.ndarray:
    """The upper triangle (diagonal included) of a symmetric `[n, n]` matrix, row-major, float32.

    Example:
        >>> pack_triangle(np.array([[1.0, 2.0], [2.0, 3.0]])).tolist()
        [1.0, 2.0, 3.0]
    """
    matrix = np.asarray(matrix, np.float64)
    n = matrix.shape[0]
    rows, cols = np.triu_indices(n)
    return ((matrix[rows, cols] + matrix[cols, rows]) / 2).astype(np.float32)


def unpack_triangle(triangle) -> np.ndarray:
    """The symmetric `[n, n]` matrix (float64) of a packed upper triangle (`pack_triangle`).

    Example:
        >>> unpack_triangle(np.array([1.0, 2.0, 3.0])).tolist()
        [[1.0, 2.0], [2.0, 3.0]]
    """
    triangle = np.asarray(triangle, np.float64)
    n = _side(len(triangle))
    matrix = np.zeros((n, n))
    rows, cols = np.triu_indices(n)
    matrix[rows, cols] = triangle
    matrix[cols, rows] = triangle
    return matrix


def triangle_norm(triangle) -> float:
    """The Frobenius norm of the symmetric matrix whose packed upper triangle is `triangle`.

    Example:
        >>> triangle_norm(pack_triangle(np.array([[3.0, 0.0], [0.0, 4.0]])))
        5.0
    """
    t = np.asarray(triangle, np.float64)
    return float(math.sqrt(np.sum(_weights(len(t)) * t * t)))


def cka(triangle_a, triangle_b, norm_a: float | None = None, norm_b: float | None = None) -> float:
    """Linear CKA of two layers from their stored centered Gram matrices (packed triangles).

    Args:
        triangle_a: The packed upper triangle of one layer's centered Gram matrix.
        triangle_b: The same for the other layer, over the same reference images.
        norm_a: `triangle_norm(triangle_a)` when already known (stored beside it).
        norm_b: `triangle_norm(triangle_b)` when already known.

    Returns:
        CKA in [0, 1]; NaN when either layer is constant over the images (a zero Gram matrix).

    Raises:
        ValueError: If the triangles are of different sizes (different numbers of images).

    Example:
        >>> x = np.random.default_rng(0).normal(size=(16, 8))
        >>> gram = lambda a: (a - a.mean(0)) @ (a - a.mean(0)).T
        >>> round(cka(pack_triangle(gram(x)), pack_triangle(gram(3 * x))), 6)
        1.0
    """
    a, b = np.asarray(triangle_a, np.float64), np.asarray(triangle_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(
            "CKA compares Gram matrices over the same reference images. Received: triangles of "
            f"{_side(len(a))} and {_side(len(b))} images"
        )
    norm_a = triangle_norm(a) if norm_a is None else float(norm_a)
    norm_b = triangle_norm(b) if norm_b is None else float(norm_b)
    if norm_a == 0 or norm_b == 0:
        return math.nan
    return float(np.sum(_weights(len(a)) * a * b) / (norm_a * norm_b))


def cka_matrix(triangles, references=None) -> np.ndarray:
    """CKA of every pair among `m` layers (or steps, or runs) at once: an `[m, m]` matrix.

    One matrix product, so a heatmap of many steps costs about as much as reading them.

    Args:
        triangles: `[m, n(n+1)/2]` packed centered Gram matrices over the same images, or,
            with `references`, a list of packed triangles over any images.
        references: One key per triangle naming its reference images (a responses datum's
            `"references"` hash, or `(hash, count)`), or None when all share the same images.
            A pair with different keys is NaN, never a number: CKA compares responses to the
            same images. Triangles of one key are compared in one product.

    Returns:
        A float64 `[m, m]` matrix with ones on the diagonal (NaN rows for constant layers, NaN
        cells between different reference images).

    Example:
        >>> x = np.random.default_rng(0).normal(size=(16, 8))
        >>> gram = lambda a: pack_triangle((a - a.mean(0)) @ (a - a.mean(0)).T)
        >>> float(cka_matrix([gram(x), gram(x ** 2)]).round(6)[0, 0])
        1.0
        >>> cka_matrix([gram(x), gram(2 * x), gram(x)], references=["a", "a", "b"]).round(6)
        array([[ 1.,  1., nan],
               [ 1.,  1., nan],
               [nan, nan,  1.]])
    """
    if references is None:
        return _cka_products(np.asarray(triangles, np.float64))
    if len(references) != len(triangles):
        raise ValueError(
            f"references must name one key per triangle. Received: {len(references)} keys "
            f"for {len(triangles)} triangles"
        )
    out = np.full((len(triangles), len(triangles)), np.nan)
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(references):
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        block = _cka_products(np.asarray([triangles[i] for i in members], np.float64))
        out[np.ix_(members, members)] = block
    return out


def _cka_products(t: np.ndarray) -> np.ndarray:
    scaled = t * np.sqrt(_weights(t.shape[1]))
    inner = scaled @ scaled.T
    norms = np.sqrt(np.diag(inner))
    with np.errstate(invalid="ignore", divide="ignore"):
        return inner / np.outer(norms, norms)


def _side(size: int) -> int:
    """`n` such that an `[n, n]` upper triangle holds `size` values."""
    n = int((math.isqrt(8 * size + 1) - 1) // 2)
    if n * (n + 1) // 2 != size:
        raise ValueError(f"{size} values are not the upper triangle of a square matrix")
    return n


@functools.lru_cache(maxsize=8)
def _weights(size: int) -> np.ndarray:
    """1 for the diagonal entries of a packed upper triangle, 2 for the others (counted twice)."""
    n = _side(size)
    weights = np.full(size, 2.0)
    rows = np.arange(n)
    weights[rows * n - rows * (rows - 1) // 2] = 1.0
    weights.flags.writeable = False
    return weights


# -- alignment ---------------------------------------------------------------------------------
def standardize(pooled) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splits pooled responses `[n, filters]` into z-scores (float16), means and deviations.

    A filter that is constant over the images (dead) gets z-scores of 0.

    Returns:
        `(z, mean, std)`: `z` float16 `[n, filters]`, `mean` and `std` float32 `[filters]`, so
        `pooled ≈ z * std + mean`.

    Example:
        >>> z, mean, std = standardize(np.array([[1.0, 5.0], [3.0, 5.0]]))
        >>> z.tolist(), mean.tolist(), std.tolist()
        ([[-1.0, 0.0], [1.0, 0.0]], [2.0, 5.0], [1.0, 0.0])
    """
    pooled = np.asarray(pooled, np.float64)
    mean, std = pooled.mean(axis=0), pooled.std(axis=0)
    z = np.divide(pooled - mean, std, out=np.zeros_like(pooled), where=std > 0)
    return z.astype(np.float16), mean.astype(np.float32), std.astype(np.float32)


def correlations(z_a, z_b) -> np.ndarray:
    """Pearson correlations `[filters_a, filters_b]` between two layers' filters, from z-scores.

    Dead filters correlate 0 with everything.

    Example:
        >>> z, _, _ = standardize(np.random.default_rng(0).normal(size=(32, 3)))
        >>> np.round(np.diag(correlations(z, z)), 3).tolist()
        [1.0, 1.0, 1.0]
    """
    a, b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            "correlations need responses to the same reference images. Received: "
            f"{a.shape[0]} and {b.shape[0]} images"
        )
    return a.T @ b / a.shape[0]


def match(corr) -> tuple[list[int], list[float]]:
    """The one-to-one matching of filters that maximizes the summed correlation.

    Args:
        corr: Correlations `[filters_a, filters_b]` (`correlations`).

    Returns:
        `(matches, scores)`: `matches[i]` is the filter of B matched to filter `i` of A (-1 when
        B has fewer filters and `i` is left unmatched), `scores[i]` its correlation (NaN when
        unmatched).

    Example:
        >>> match(np.array([[0.1, 0.9], [0.8, 0.2]]))
        ([1, 0], [0.9, 0.8])
    """
    from scipy.optimize import linear_sum_assignment

    corr = np.asarray(corr, np.float64)
    rows, cols = linear_sum_assignment(corr, maximize=True)
    matches = [-1] * corr.shape[0]
    scores = [math.nan] * corr.shape[0]
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        matches[r], scores[r] = c, float(corr[r, c])
    return matches, scores


# -- dataset examples --------------------------------------------------------------------------
def top_examples(activations, k: int = DEFAULT_TOP_K):
    """Each filter's `k` reference images with the highest peak activation, best first.

    A filter's peak on an image is its largest activation over the layer's positions; equal
    peaks go to the lower image index, and the position is the maximum's first occurrence in
    row-major order. `layer_responses` computes the same, on the backend.

    Args:
        activations: `[n, *grid, filters]` a layer's activations over the reference images.
        k: Images per filter (at most `n`).

    Returns:
        `(index, position, activation)`: int32 `[filters, k]` image indices, int32
        `[filters, k, len(grid)]` positions in the grid, float32 `[filters, k]` activations.

    Example:
        >>> acts = np.zeros((3, 2, 3, 1)); acts[1, 1, 2, 0] = acts[2, 0, 2, 0] = 3.0
        >>> index, position, activation = top_examples(acts, k=2)
        >>> index.tolist(), position.tolist(), activation.tolist()
        ([[1, 2]], [[[1, 2], [0, 2]]], [[3.0, 3.0]])
    """
    acts = np.asarray(activations, np.float32)
    per_position = acts.reshape(len(acts), -1, acts.shape[-1])
    return _examples(
        per_position.max(axis=1), lambda images: per_position[images], acts.shape[1:-1], k
    )


def _examples(peak: np.ndarray, gather, grid, k: int):
    """`top_examples` from peaks `[n, filters]` and `gather(images)` (`[m, positions, filters]`)."""
    k = min(int(k), peak.shape[0])
    order = np.argsort(-peak, axis=0, kind="stable")[:k]  # [k, filters]
    images = np.unique(order)
    values = gather(images)[np.searchsorted(images, order), :, np.arange(peak.shape[1])]
    flat = values.argmax(axis=-1).T  # [filters, k]
    position = (
        np.stack(np.unravel_index(flat, tuple(grid)), axis=-1) if grid else flat[..., None][..., :0]
    )
    return (
        order.T.astype(np.int32),
        np.asarray(position, np.int32).reshape(*flat.shape, len(grid)),
        np.take_along_axis(peak, order, axis=0).T.astype(np.float32),
    )


# -- the array blobs of a responses datum -----------------------------------------------------
def encode_array(array: np.ndarray, blob: int) -> tuple[dict[str, Any], bytes]:
    """One array as a blob: its raw little-endian bytes, and the spec the index stores for it.

    Example:
        >>> spec, data = encode_array(np.arange(3, dtype=np.float32), blob=1)
        >>> spec, decode_array(data, spec).tolist()
        ({'blob': 1, 'dtype': '<f4', 'shape': [3]}, [0.0, 1.0, 2.0])
    """
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("<")
    if dtype.str not in _DTYPES:
        raise ValueError(f"arrays are stored as one of {sorted(_DTYPES)}. Received: {dtype.str}")
    spec = {"blob": int(blob), "dtype": dtype.str, "shape": [int(d) for d in array.shape]}
    return spec, np.ascontiguousarray(array, dtype=dtype).tobytes()


def decode_array(data: bytes, spec: dict[str, Any]) -> np.ndarray:
    """The array a blob holds, as its spec (from the index) describes it: `encode_array`'s inverse.

    Raises:
        ValueError: If the spec is malformed or the blob's size does not match it.

    Example:
        >>> decode_array(b"\\x00\\x00\\x80\\x3f", {"blob": 1, "dtype": "<f4", "shape": [1]})
        array([1.], dtype=float32)
    """
    dtype, shape = spec.get("dtype"), spec.get("shape")
    if dtype not in _DTYPES or not (
        isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
    ):
        raise ValueError(f"an array spec needs a dtype in {sorted(_DTYPES)} and a shape: {spec!r}")
    dt = np.dtype(dtype)
    if len(data) != dt.itemsize * math.prod(shape):
        raise ValueError(
            f"the blob holds {len(data)} bytes, not the {dt.itemsize * math.prod(shape)} of a "
            f"{dtype} array of shape {shape}"
        )
    return np.frombuffer(data, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
