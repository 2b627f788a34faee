"""The probe answers: a run's model snapshots, and what the model at a step makes of an image
the user sends (`/snapshots`, `/probe`).

The model runs in the TensorBoard process through `tb_cnnviz.probe`, on whichever Keras backend
is installed there (TensorFlow is not needed), loaded with Keras' `safe_mode`, cached under its
memory bound, one request at a time per model. Only the snapshot files inside the logdir
TensorBoard serves are opened. Keras is imported on the first `/probe` only, so the rest of the
plugin serves without it; without it `/probe` says so (501).

An uploaded image is checked before any model work: at most `MAX_UPLOAD_BYTES` (413 above),
decoded by Pillow with its decompression-bomb guard and at most `MAX_PIXELS` pixels, one frame,
grey, grey+alpha, palette, RGB or RGBA (400 otherwise, saying what is accepted). The feature
maps are answered as `/layer` answers a logged step, so the dashboard draws them with the same
grid: an index and PNG atlases, each tile stretched over its own value range, so the values are
recovered within 1/255 of that range. The atlases come inline (base64 in the JSON), since
nothing of the answer is kept on the server.

Instead of an upload, the image can be one the run already logged (`logged_images`): a probe
image kept beside its attribution maps, or a reference image. It is read through TensorBoard's
data provider (so only from the logdir served), cut from its atlas, brought back to its logged
values (within 1/255 of its range) and fed as those values.
"""

from __future__ import annotations

import base64
import io
import os
import warnings
from typing import Any

import numpy as np
from tensorboard import errors
from tensorboard.data import provider

from tb_cnnviz import metadata, tiles

__all__ = [
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "PROBE_TIMEOUT_SECONDS",
    "ModelUnavailableError",
    "PayloadTooLargeError",
    "ProbeUnavailableError",
    "decode_upload",
    "logged_image",
    "logged_images",
    "probe",
    "snapshots",
]

#: Largest image upload accepted, in bytes (a 413 above).
MAX_UPLOAD_BYTES = 16 * 2**20
#: Largest decoded image accepted, in pixels (a 400 above; Pillow's own guard is looser).
MAX_PIXELS = 40 * 2**20
#: Seconds a request waits while another one runs the same model (then a 503).
PROBE_TIMEOUT_SECONDS = 30.0
#: Logged images offered to the probe, at most, per run.
MAX_LOGGED_IMAGES = 64
#: Pillow modes accepted, and what each becomes before the probe matches channels.
_MODES = {"1": "L", "L": "L", "LA": "RGBA", "P": "RGBA", "PA": "RGBA", "RGB": "RGB", "RGBA": "RGBA"}
ACCEPTED = (
    "a still PNG, JPEG, BMP, GIF or WebP image in grey, grey+alpha, palette, RGB or RGBA, "
    f"at most {MAX_UPLOAD_BYTES // 2**20} MiB and {MAX_PIXELS // 2**20} megapixels"
)
_SNAPSHOT_HOWTO = (
    "CNNViz keeps snapshots by default (snapshots='first_and_latest'; 'all' keeps every epoch); "
    "or add tb_cnnviz.callbacks.Snapshots(log_dir) to fit()'s callbacks"
)


class PayloadTooLargeError(errors.PublicError):
    """An upload above `MAX_UPLOAD_BYTES` (413)."""

    http_code = 413


class ModelUnavailableError(errors.PublicError):
    """The snapshot's model cannot be rebuilt in this process (422): the message says why."""

    http_code = 422


class ProbeUnavailableError(errors.PublicError):
    """This TensorBoard process cannot run models: no Keras (501)."""

    http_code = 501


class _BusyError(errors.PublicError):
    http_code = 503


def snapshots(logdir: str | None, run: str) -> dict[str, Any]:
    """The run's model snapshots: its steps, and how an image is fed to the model.

    Never loads the model or imports Keras. A run without snapshots is not an error: `steps` is
    empty and `why` says what to log.

    Args:
        logdir: The logdir TensorBoard serves (`TBContext.logdir`).
        run: The run, as TensorBoard names it.

    Returns:
        `{"run", "steps", "input_shape", "value_range", "class_names", "backend",
        "keras_version", "why"}`; `why` is null when there are steps.

    Example:
        >>> import tempfile
        >>> answer = snapshots(tempfile.mkdtemp(), "run1")
        >>> answer["steps"], "has no model snapshots" in answer["why"]
        ([], True)
    """
    from tb_cnnviz import probe as probe_lib

    answer: dict[str, Any] = {"run": run, "steps": []}
    keys = ("input_shape", "value_range", "class_names", "backend", "keras_version")
    answer.update(dict.fromkeys(keys))
    try:
        index = probe_lib.snapshot_index(_local(logdir), run)
    except (ValueError, OSError) as e:
        return {**answer, "why": f"{e}".split(". CNNViz keeps")[0] + f". {_SNAPSHOT_HOWTO}."}
    answer.update({k: index[k] for k in keys}, steps=list(index["steps"]))
    answer["why"] = None if answer["steps"] else f"no step kept yet. {_SNAPSHOT_HOWTO}."
    return answer


def probe(
    logdir: str | None,
    run: str,
    body: bytes | np.ndarray,
    step: int | None = None,
    layer: str | None = None,
    target: int | None = None,
) -> dict[str, Any]:
    """Runs an uploaded image through the run's model at a step with a snapshot.

    Args:
        logdir: The logdir TensorBoard serves.
        run: The run.
        body: The encoded image (see `decode_upload`), or pixels in [0, 1] (`logged_image`).
        step: A step with a snapshot; None for the latest.
        layer: The layer whose feature maps to answer; None for the last conv layer.
        target: The class Grad-CAM explains; None for the predicted one.

    Returns:
        `{"run", "step", "steps", "layer", "input_shape", "value_range", "head",
        "predictions": [{"class", "name", "probability"}], "target",
        "heatmap": {"layer", "shape", "values"}, "image", "overlay", "fed", "index",
        "atlases"}`:
        `image` is the image as fed (a PNG data URL, [low, high] drawn as 0-255), `overlay` that
        image under the heatmap (red to yellow), `fed` a sentence saying how it was fed, `index`
        and `atlases`
        the feature maps as `/layer` gives a logged step (atlases as PNG data URLs), with each
        filter's `response` (mean activation) among `index.stats`.

    Raises:
        tensorboard.errors.NotFoundError: No snapshots, or none at `step` (the message lists
            the steps that have one and says what to log).
        tensorboard.errors.InvalidArgumentError: The image, the layer or the target.
        PayloadTooLargeError: The upload is too large.
        ModelUnavailableError: The model cannot be rebuilt here.
        ProbeUnavailableError: Keras is not importable in this process.
    """
    from tb_cnnviz import probe as probe_lib

    pixels = body if isinstance(body, np.ndarray) else decode_upload(body)
    known = snapshots(logdir, run)
    if not known["steps"]:
        raise errors.NotFoundError(known["why"])
    if step is not None and step not in known["steps"]:
        raise errors.NotFoundError(
            f"step {step} of run {run!r} has no snapshot; steps with one: "
            f"{metadata.names_text(known['steps'])}. Snapshots are kept at the first and the "
            "latest step by default: CNNViz(snapshots='all') keeps every epoch"
        )
    try:
        result = probe_lib.probe(
            _local(logdir), run, pixels, step, layer, target, timeout=PROBE_TIMEOUT_SECONDS
        )
    except ImportError as e:
        raise ProbeUnavailableError(
            f"this TensorBoard process cannot run models: {e}. Install Keras 3 and one of its "
            "backends (JAX, PyTorch or TensorFlow) where TensorBoard runs"
        ) from None
    except probe_lib.ModelLoadError as e:
        raise ModelUnavailableError(f"the model of run {run!r} cannot be rebuilt: {e}") from None
    except TimeoutError as e:
        raise _BusyError(f"{e}; try again") from None
    except ValueError as e:  # the layer, the target, or an image the model cannot take
        raise errors.InvalidArgumentError(str(e)) from None
    return _answer(result, known)


def logged_images(data, ctx, experiment_id: str, run: str) -> dict[str, Any]:
    """The images `run` logged that the probe can take instead of an upload, as thumbnails.

    The probe images kept beside the first attribution tag's maps (at its latest step), then
    the reference images; at most `MAX_LOGGED_IMAGES`. Each names what `logged_image` takes.

    Args:
        data: The plugin's `tb_cnnviz.plugin.data.Data` (reads through the data provider).
        ctx: The request's TensorBoard context.
        experiment_id: The experiment.
        run: The run.

    Returns:
        `{"run", "images": [{"tag", "step", "image", "label", "src"}]}`: `src` is the image as
        logged, a PNG data URL; `images` is empty when the run logged none.

    Example:
        >>> from tensorboard import context
        >>> from tb_cnnviz.plugin.data import Data
        >>> logged_images(Data.from_logdir("/none"), context.RequestContext(), "", "r")
        {'run': 'r', 'images': []}
    """
    listing = data.list(ctx, experiment_id, provider.RunTagFilter(runs=[run])).get(run) or {}
    sources = []
    for tag, series in sorted(listing.items()):
        parsed = data.parse_tag(experiment_id, run, tag, series)
        if parsed is None:
            continue
        if parsed.kind == "attribution" and not any(s[0] == "attribution" for s in sources):
            sources.append(("attribution", tag, "probe image"))
        elif tag == metadata.REFERENCES_TAG:
            sources.append(("references", tag, "reference image"))
    images = []
    for _, tag, label in sorted(sources):
        datum = data.series(ctx, experiment_id, run, tag).data[-1]
        try:
            pixels, _ = _logged_tiles(data, ctx, datum)
        except ValueError:
            continue  # unreadable here: /layer says why
        for i, tile in enumerate(pixels[: MAX_LOGGED_IMAGES - len(images)]):
            tile = np.round(tile).astype(np.uint8)
            images.append(
                {
                    "tag": tag,
                    "step": datum.step,
                    "image": i,
                    "label": f"{label} {i}",
                    "src": _data_url(
                        tiles.encode_png(tile[..., 0] if tile.shape[-1] == 1 else tile)
                    ),
                }
            )
    return {"run": run, "images": images}


def logged_image(
    data, ctx, experiment_id: str, logdir, run: str, tag: str, image: int, step=None
) -> np.ndarray:
    """One logged image (see `logged_images`) as pixels in [0, 1], to feed like an upload.

    Its logged values are mapped from the run's recorded input `value_range` onto [0, 1], so
    the probe (mapping [0, 1] back onto that range) feeds the model the logged values.

    Raises:
        tensorboard.errors.NotFoundError: No such run, tag, step or image.
        tensorboard.errors.InvalidArgumentError: The tag holds no images.
    """
    kinds = {"attribution", "references"}
    series = data.series(ctx, experiment_id, run, tag, step)
    parsed = data.parse_tag(
        experiment_id,
        run,
        tag,
        data.list(ctx, experiment_id, provider.RunTagFilter(runs=[run], tags=[tag]))[run][tag],
    )
    if parsed is None or parsed.kind not in kinds:
        raise errors.InvalidArgumentError(
            f"tag {tag!r} of run {run!r} holds no logged images; use an attribution tag "
            f"or {metadata.REFERENCES_TAG!r}"
        )
    datum = series.data[-1] if step is None else series.by_step.get(step)
    if datum is None:
        raise errors.NotFoundError(
            f"no step {step} in run {run!r}, tag {tag!r}; logged steps: "
            + metadata.names_text(series.by_step)
        )
    try:
        _, values = _logged_tiles(data, ctx, datum)
    except ValueError as e:
        raise errors.InvalidArgumentError(f"tag {tag!r} cannot be read here: {e}") from None
    if not 0 <= image < len(values):
        raise errors.NotFoundError(
            f"no image {image} in run {run!r}, tag {tag!r} at step {datum.step}; "
            f"it holds {len(values)}"
        )
    low, high = snapshots(logdir, run)["value_range"] or (0.0, 1.0)
    span = (high - low) or 1.0
    return np.clip((values[image] - low) / span, 0.0, 1.0).astype(np.float32)


def _logged_tiles(data, ctx, datum) -> tuple[np.ndarray, np.ndarray]:
    """The images of an attribution or references datum: `(pixels 0-255, logged values)`, each
    `[n, h, w, c]` (raises ValueError when the index cannot be read)."""
    index, warning = data.index(ctx, datum)
    if index is None:
        raise ValueError(warning or "no index")
    labels = index["slices"].get("labels") or ["image"]
    if "image" not in labels:
        raise ValueError("no image tiles")
    count, which = index["slices"]["count"], labels.index("image")
    atlases = [
        (data.blob(ctx, datum.values[a["blob"]].blob_key), a["cols"]) for a in index["atlases"]
    ]
    pixels = tiles.unpack_tiles(atlases, tuple(index["tile"]))
    chosen = np.arange(len(index["filters"])) * count + which
    ranges = np.asarray(index["ranges"], np.float64)[chosen]
    pixels = pixels[chosen]
    lo, hi = ranges[:, 0, None, None, None], ranges[:, 1, None, None, None]
    return pixels, lo + pixels / 255.0 * (hi - lo)


def decode_upload(body: bytes) -> np.ndarray:
    """Decodes an uploaded image into uint8 pixels `[h, w]` or `[h, w, 3 or 4]`, safely.

    Raises:
        PayloadTooLargeError: Above `MAX_UPLOAD_BYTES`.
        tensorboard.errors.InvalidArgumentError: Not an image, an animation, a decompression
            bomb, or a mode with channels the probe cannot take (the message says what is).

    Example:
        >>> decode_upload(tiles.encode_png(np.zeros((2, 3), np.uint8))).shape
        (2, 3)
        >>> decode_upload(b"GIF89a?")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tensorboard.errors.InvalidArgumentError: Invalid argument: the upload is not an image ...
    """
    from PIL import Image, UnidentifiedImageError

    if len(body) > MAX_UPLOAD_BYTES:
        raise PayloadTooLargeError(f"the image is larger than {MAX_UPLOAD_BYTES} bytes")
    if not body:
        raise errors.InvalidArgumentError(f"send the image as the request body: {ACCEPTED}")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it: refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise Image.DecompressionBombError("too many pixels")
                if getattr(image, "n_frames", 1) > 1:
                    raise errors.InvalidArgumentError(
                        f"animated images are not accepted; send {ACCEPTED}"
                    )
                if image.mode not in _MODES:
                    channels = len(image.getbands())
                    raise errors.InvalidArgumentError(
                        f"a {image.mode} image ({channels} channels) is not accepted; "
                        f"send {ACCEPTED}"
                    )
                return np.asarray(image.convert(_MODES[image.mode]))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise errors.InvalidArgumentError(
            f"the image would decode to too many pixels (a decompression bomb?); send {ACCEPTED}"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise errors.InvalidArgumentError(
            f"the upload is not an image Pillow can read ({type(e).__name__}); send {ACCEPTED}"
        ) from None


def _local(logdir: str | None) -> str:
    if not logdir or "://" in str(logdir):
        raise ValueError(
            f"run has no model snapshots: the probe reads snapshots from a local --logdir only "
            f"(this TensorBoard serves {logdir!r})"
        )
    return os.fspath(logdir)


def _answer(result, known: dict[str, Any]) -> dict[str, Any]:
    maps = result.feature_maps
    if maps.ndim == 4:  # 3-D maps: their middle depth, as the callbacks draw them
        maps = maps[maps.shape[0] // 2]
    if maps.ndim == 2:  # 1-D maps: one row
        maps = maps[None]
    filters = maps.shape[-1]
    atlases, ranges = tiles.pack_tiles(np.moveaxis(maps, -1, 0))
    stats = tiles.activation_stats(result.feature_maps[None])
    stats["response"] = tiles.round_floats(result.filter_strength)
    index = {
        "version": metadata.FORMAT_VERSION,
        "kind": "feature_maps",
        "layer": result.layer,
        "tile": [int(maps.shape[0]), int(maps.shape[1]), 1],
        "filters": list(range(filters)),
        "total_filters": filters,
        "slices": {"axis": "probe", "count": 1, "total": 1},
        "atlases": [{"blob": k + 1, **a.describe()} for k, a in enumerate(atlases)],
        "ranges": ranges.tolist(),
        "stats": stats,
        "layer_stats": {},
        "notes": [],
    }
    low, high = result.value_range
    span = (high - low) or 1.0
    seen = np.clip((result.image - low) / span * 255.0, 0, 255).round().astype(np.uint8)
    if seen.shape[-1] not in (1, 3):
        seen = seen.mean(-1, keepdims=True).astype(np.uint8)
    heat = result.heatmap
    # Drawn here, so the browser shows one picture: the image under a red (weak) to yellow
    # (strong) ramp, as opaque as the map is strong (`heatmap` holds the values themselves).
    v = np.clip(heat, 0, 1).reshape(heat.shape[0], -1)[..., None]
    under = np.broadcast_to(seen.reshape(*v.shape[:2], -1), (*v.shape[:2], 3)) / 255.0
    ramp = np.concatenate([np.ones_like(v), v, np.zeros_like(v)], -1)
    overlay = under * (1 - 0.7 * v) + ramp * 0.7 * v
    fed = "resized to {}, 0-255 mapped onto [{:.4g}, {:.4g}]".format(
        "×".join(map(str, result.image.shape[:-1])), low, high
    )
    return {
        "run": result.run,
        "step": result.step,
        "steps": result.steps,
        "layer": result.layer,
        "input_shape": known["input_shape"],
        "value_range": [low, high],
        "head": result.head,
        "predictions": [
            {"class": p.class_id, "name": p.name, "probability": round(p.probability, 6)}
            for p in result.predictions
        ],
        "target": result.target,
        "heatmap": {
            "layer": result.heatmap_layer,
            "shape": list(heat.shape),
            "values": np.round(heat.astype(np.float64), 5).ravel().tolist(),
        },
        "image": _data_url(tiles.encode_png(seen[..., 0] if seen.shape[-1] == 1 else seen)),
        "overlay": _data_url(tiles.encode_png(np.round(overlay * 255).astype(np.uint8))),
        "fed": fed,
        "index": index,
        "atlases": [_data_url(a.png) for a in atlases],
    }


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
