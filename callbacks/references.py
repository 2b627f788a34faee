"""`References`: each conv layer's responses to fixed reference images, for comparing runs."""

from __future__ import annotations

import numpy as np

from tb_cnnviz import backend, checks, metadata, similarity, summary
from tb_cnnviz import budget as budget_lib
from tb_cnnviz import layers as layer_lib

from .base import VizCallback, check_probe_images

__all__ = ["References", "check_reference_images"]

#: Reference images per forward pass: bounds the memory of one batch of activations.
BATCH_SIZE = 64
#: Floating-point operations per second assumed for the Gram matrices before a first drawing
#: (float32 matrix products on these 2 CPU cores reach about 5e10; taken generously).
FLOPS = 1e10


def check_reference_images(reference_images, name: str = "reference_images"):
    """Validates reference images: at least 16, as `check_probe_images` wants probe images.

    Args:
        reference_images: Array-like `[n, *spatial, channels]` with `n >= 16`, or a list with
            one array per model input.
        name: The argument name, for the message.

    Returns:
        The images as float32: an array, or a list of arrays.

    Raises:
        ValueError: If they are not numeric images, not finite, or fewer than 16.

    Example:
        >>> check_reference_images(np.zeros((16, 8, 8, 3), np.uint8)).shape
        (16, 8, 8, 3)
    """
    images = check_probe_images(reference_images, name)
    first = images[0] if isinstance(images, list) else images
    similarity.check_reference_count(len(first), name)
    return images


class References(VizCallback):
    """Logs each conv layer's responses to fixed reference images, to compare runs over time.

    At each logged epoch one forward pass of the reference images (in batches of 64) gives,
    per conv layer: the centered Gram matrix of its activations (linear CKA with any other
    layer, step or run logged with the same images), each filter's pooled response (aligning
    filters across runs) and each filter's `top_k` reference images with where they excite it
    most (dataset examples). The reference images themselves are written once per run, with a
    content hash that every datum carries, so runs with different images are never compared.
    Read them with `tb_cnnviz.compare` (no TensorFlow needed). Every filter is kept: the data of
    a layer are about 132 KB plus 0.6 KB per filter at 256 images.

    Args:
        log_dir: The `log_dir` of `keras.callbacks.TensorBoard`; data go to its `train` run.
        reference_images: A fixed held-out batch `[n, *input_shape]` of at least 16 images
            (a few hundred is best: 256 keeps a step under half a second on the demo CNN on 2
            CPU cores), in the value range the model trains on; a list with one array per input
            for a model with several inputs. Give the same images to every run you compare.
        layers: Layer names or `outer/inner` paths; `None` means every conv layer.
        freq: Log every `freq` epochs; 0 turns it off.
        top_k: Dataset examples kept per filter.
        budget: The callback's own time as a fraction of training time, in (0, 1]: layers take
            turns over epochs to stay within it; `None` draws every layer at every logged epoch.

    Raises:
        ValueError: At construction, for reference images that are not numeric images, not
            finite, or fewer than 16; in `on_train_begin`, for images that do not fit the model.

    Example:
        >>> import numpy as np, keras, tempfile
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> model.compile("adam", "mse")
        >>> cb = References(tempfile.mkdtemp(), reference_images=np.random.rand(16, 8, 8, 3))
        >>> _ = model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 2)), epochs=1, verbose=0,
        ...               callbacks=[cb])
    """

    kind = metadata.RESPONSES_KIND
    reads_outputs = True

    def __init__(
        self,
        log_dir="logs",
        reference_images=None,
        *,
        layers=None,
        freq=1,
        top_k=similarity.DEFAULT_TOP_K,
        budget=budget_lib.DEFAULT_BUDGET,
    ):
        super().__init__(log_dir, layers=layers, freq=freq, budget=budget)
        if reference_images is None:
            raise ValueError(
                "References needs reference_images (at least 16). Received: reference_images=None"
            )
        self.reference_images = check_reference_images(reference_images)
        self.top_k = checks.integer("top_k", top_k, minimum=1)
        self.references_hash = similarity.reference_hash(self.reference_images)
        self._outputs: dict[int, object] = {}
        self._written_to: set[str] = set()  # runs holding these reference images already

    def _example(self):
        return self.reference_images

    def _validate(self, model):
        images = self.reference_images
        try:
            model(_batch(images, 0, 2), training=False)
        except Exception as e:
            shapes = [a.shape for a in images] if isinstance(images, list) else images.shape
            raise ValueError(
                f"reference_images do not fit the model {model.name!r}: {type(e).__name__}: "
                f"{e}. Received: reference_images with shape {shapes}"
            ) from e
        if self._time_budget.fraction is not None:
            self._model_timing(model, self.reference_images)

    def _prepare(self, step):
        # The compiled pass feature maps use (`tb_cnnviz.layers.probe_extractor`), batch by
        # batch; its outputs beyond the chosen layers' are for Grad-CAM.
        chosen = [layer for _, layer in self._selected]
        extract = layer_lib.probe_extractor(self.model, chosen)
        parts: list[list] = [[] for _ in chosen]
        for start in range(0, self._count(), BATCH_SIZE):
            outs = extract(_batch(self.reference_images, start, BATCH_SIZE))[: len(chosen)]
            for part, out in zip(parts, outs, strict=True):
                part.append(backend.to_numpy(out))
        self._outputs = {
            id(layer): np.concatenate(part) for layer, part in zip(chosen, parts, strict=True)
        }

    def _estimate(self, path, layer):
        n = self._count()
        timing = self._model_timing(self.model, self.reference_images)
        forward = timing.forward(n) / max(len(self._selected), 1)
        features, filters = _output_size(self.model, layer)
        gram = 2.0 * n * n * features / FLOPS
        size = 4 * n * (n + 1) // 2 + filters * (2 * n + 8 + 16 * self.top_k)
        return forward + gram, size

    def _count(self) -> int:
        return len(_as_list(self.reference_images)[0])

    def _draw(self, path, layer, step):
        out = self._outputs.pop(id(layer), None)
        if out is None:
            raise RuntimeError("the layer was not called by the model's forward pass")
        out = np.asarray(backend.to_numpy(out), dtype=np.float32)
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            out = np.moveaxis(out, 1, -1)
        images = None
        if self._run_dir not in self._written_to:  # once per run, with its first responses
            images = self.reference_images
            self._written_to.add(self._run_dir)
        references, top_k, count = self.references_hash, self.top_k, self._count()

        def write():  # in the background (tb_cnnviz.background)
            if images is not None:
                summary.reference_images(
                    images,
                    step=step,
                    description="The reference images every `responses` datum of this run is of.",
                )
            summary.responses(
                path,
                out,
                step=step,
                reference_images=references,
                top_k=top_k,
                description=f"Responses of `{path}` to {count} reference images: its "
                "centered Gram matrix (CKA), pooled filter responses (alignment), and each "
                "filter's top reference images. Read with `tb_cnnviz.compare`.",
            )

        return write


def _as_list(images) -> list[np.ndarray]:
    return images if isinstance(images, list) else [images]


def _batch(images, start: int, size: int):
    if isinstance(images, list):
        return [a[start : start + size] for a in images]
    return images[start : start + size]


def _output_size(model, layer) -> tuple[int, int]:
    """`(features, filters)` of one image's output of `layer`, from its output shape."""
    shape = layer_lib.output_shape(model, layer)
    if shape is None:  # a model that cannot tell
        return 0, 0
    dims = [d or 1 for d in shape]
    filters = dims[0] if getattr(layer, "data_format", "") == "channels_first" else dims[-1]
    return int(np.prod(dims)), int(filters)
