"""Reading CNN Viz pictures back from a logdir, without TensorFlow.

`Logdir` loads event files through TensorBoard's own `EventMultiplexer` and
`MultiplexerDataProvider`, the same reading code the CNN Viz tab uses, keeping every logged step.
It serves `tb_cnnviz.plot` and `tb-cnnviz export`, and anyone who wants the numbers in a
notebook. The format it reads is described in the `tb_cnnviz.summary` module docstring; data
written by a newer tb-cnnviz is skipped with one warning. Pictures come back as `LayerPictures`
(`Logdir.read`); the data kinds that hold numbers (`metadata.DATA_KINDS`: reference images and
layer responses, which `tb_cnnviz.compare` reads) as `Record`s (`Logdir.read_record`).

A request for something the logdir does not hold raises `NotFoundError`, whose message lists
what it does hold, so a typo is fixed at a glance.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from tb_cnnviz import metadata, tiles

__all__ = [
    "LayerPictures",
    "Logdir",
    "NotFoundError",
    "Record",
    "names_text",
    "natural_key",
    "thinned_spans",
]

_MAX_STEPS_LISTED = 20  # steps quoted in a message before they are cut short


class NotFoundError(LookupError):
    """A logdir, run, layer, kind or step that is not there; the message lists what is."""


@dataclasses.dataclass(frozen=True)
class LayerPictures:
    """One layer's pictures of one kind at one step, with the values they stand for.

    Attributes:
        run: The run, as TensorBoard names it (for example `"lr_1e-3/train"`).
        layer: The layer (or, for `attribution`, the method).
        kind: One of `tb_cnnviz.KINDS`.
        step: The step.
        wall_time: When the step was written, in seconds since the epoch.
        tiles: The pictures in their original units, float64
            `[filters, slices, height, width, channels]` (channels 1 or 3), up to 8-bit
            quantization: `tiles[i, s]` is slice `s` of filter `filters[i]`.
        index: The step's index blob as stored (geometry, `stats`, `layer_stats`, `notes`).
        static: Static facts of the series from the plugin metadata (for example
            `class_names` of an attribution series).
    """

    run: str
    layer: str
    kind: str
    step: int
    wall_time: float
    tiles: np.ndarray
    index: dict[str, Any]
    static: dict[str, Any]

    @property
    def filters(self) -> list[int]:
        """The ids of the filters drawn (probe image ids for `attribution`), in order."""
        return list(self.index["filters"])

    @property
    def slice_axis(self) -> str:
        """What the slices of a filter are: `"input_channel"`, `"rgb"`, `"probe"` or `"image"`."""
        return str(self.index["slices"]["axis"])

    @property
    def slice_labels(self) -> list[str] | None:
        """Names of the slices when the index gives them (`attribution`: image, predicted, …)."""
        labels = self.index["slices"].get("labels")
        return None if labels is None else [str(label) for label in labels]


@dataclasses.dataclass(frozen=True)
class Record:
    """One datum of a data kind (`metadata.DATA_KINDS`) at one step: its index, blobs on demand.

    Attributes:
        run: The run, as TensorBoard names it.
        layer: The layer (`"reference_images"` for the reference images).
        kind: One of `tb_cnnviz.metadata.DATA_KINDS`.
        step: The step.
        wall_time: When the step was written, in seconds since the epoch.
        index: The step's index blob as stored (see the `tb_cnnviz.summary` docstring).
        static: Static facts of the series from the plugin metadata.
        blob: `blob(i)` reads the datum's blob `i` (0 is the index), once.
        blob_count: How many blobs the datum holds.
    """

    run: str
    layer: str
    kind: str
    step: int
    wall_time: float
    index: dict[str, Any]
    static: dict[str, Any]
    blob: Callable[[int], bytes] = dataclasses.field(repr=False, compare=False)
    blob_count: int = 0


class Logdir:
    """A logdir's CNN Viz pictures, as TensorBoard reads them, every step kept.

    Event files are read once, when the `Logdir` is made; make a new one to see later steps.

    Args:
        path: The log directory (the one given to `tensorboard --logdir`).

    Raises:
        NotFoundError: If `path` is not a directory.

    Example:
        >>> import tempfile, numpy as np, tensorflow as tf
        >>> from tb_cnnviz import summary
        >>> path = tempfile.mkdtemp()
        >>> with tf.summary.create_file_writer(path + "/run1").as_default():
        ...     for step in range(3):
        ...         _ = summary.filter_weights("conv1", np.random.rand(3, 3, 3, 8), step=step)
        >>> logs = Logdir(path)
        >>> logs.runs(), logs.layers("run1"), logs.steps("run1", "conv1", "weights")
        (['run1'], {'conv1': ['weights']}, [0, 1, 2])
        >>> logs.read("run1", "conv1", "weights").tiles.shape
        (8, 1, 3, 3, 3)
    """

    def __init__(self, path: str | os.PathLike):
        from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer

        self.path = os.fspath(path)
        if not _isdir(self.path):
            raise NotFoundError(f"logdir {self.path!r} is not a directory")
        # A reservoir of 0 keeps every step of the cnnviz series (TensorBoard keeps 10 otherwise).
        self._mux = plugin_event_multiplexer.EventMultiplexer(
            tensor_size_guidance={metadata.PLUGIN_NAME: 0}
        )
        self._mux.AddRunsFromDirectory(self.path)
        self._mux.Reload()
        self._provider = data_provider.MultiplexerDataProvider(self._mux, self.path)
        self._series = self._list_series()

    def runs(self) -> list[str]:
        """Returns the runs that hold CNN Viz pictures, naturally sorted.

        Example:
            >>> import tempfile
            >>> Logdir(tempfile.mkdtemp()).runs()
            []
        """
        return sorted(self._series, key=natural_key)

    def layers(self, run: str) -> dict[str, list[str]]:
        """Returns `{layer: [kinds]}` for one run, layers naturally sorted, kinds in `KINDS` order.

        The class example shows it, with `runs`, `steps` and `read`.

        Args:
            run: The run; `"<name>"` also finds `"<name>/train"`, where the callbacks write.

        Raises:
            NotFoundError: If the run has no CNN Viz pictures.
        """
        layers = self._kinds_by_layer(run)
        pictures = {
            name: [k for k in kinds if k in metadata.KINDS] for name, kinds in layers.items()
        }
        return {name: kinds for name, kinds in pictures.items() if kinds}

    def steps(self, run: str, layer: str, kind: str) -> list[int]:
        """Returns every logged step of one layer's pictures of one kind, ascending.

        Raises:
            NotFoundError: If the run, layer or kind is not there.
        """
        return [datum.step for datum in self._data(run, layer, kind)]

    def thinned(self, run: str) -> dict[int, str]:
        """Returns `{step: why}` for the steps of a run that training logged but a long run's
        thinning left without pictures (`tb_cnnviz.thinning`), as its plan records say.

        A step some callback drew is not thinned. Logs without plan records give `{}`.

        Example:
            >>> import tempfile, numpy as np
            >>> from tb_cnnviz import summary
            >>> path = tempfile.mkdtemp()
            >>> with summary.create_file_writer(path + "/run1").as_default():
            ...     for step in (0, 2):
            ...         _ = summary.filter_weights("conv1", np.ones((3, 3, 1, 2)), step=step)
            ...         _ = summary.write_plan("cnnviz", step, drawn=["conv1/weights"])
            ...     _ = summary.write_plan("cnnviz", 1, thinned="thinned: every 2nd step is drawn")
            >>> Logdir(path).thinned("run1")
            {1: 'thinned: every 2nd step is drawn'}
        """
        from tensorboard.data import provider

        run = self.resolve_run(run)
        tags = self._plan_tags.get(run, [])
        if not tags:
            return {}
        found = self._provider.read_blob_sequences(
            self._ctx(),
            experiment_id="",
            plugin_name=metadata.PLUGIN_NAME,
            downsample=metadata.ALL_POINTS,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=tags),
        )
        why: dict[int, str] = {}
        drawn: set[int] = set()
        for data in found.get(run, {}).values():
            for datum in data:
                if not datum.values:
                    continue
                blob = self._provider.read_blob(self._ctx(), blob_key=datum.values[0].blob_key)
                try:
                    record = metadata.decode_index(bytes(blob))
                except (TypeError, ValueError):
                    continue  # a malformed record: the tab skips it too
                if not isinstance(record, dict):
                    continue
                if record.get("drawn"):
                    drawn.add(datum.step)
                elif isinstance(record.get("thinned"), str):
                    why[datum.step] = record["thinned"]
        return {step: why[step] for step in sorted(why) if step not in drawn}

    def read(self, run: str, layer: str, kind: str, step: int | None = None) -> LayerPictures:
        """Reads one layer's pictures of one kind at one step.

        Args:
            run: The run; `"<name>"` also finds `"<name>/train"`.
            layer: The layer name (nested layers as `outer/inner`; for `attribution`, the method).
            kind: One of `tb_cnnviz.KINDS`.
            step: The step; `None` means the latest.

        Returns:
            A `LayerPictures`.

        Raises:
            NotFoundError: If the run, layer, kind or step is not there, or the step was written
                by a newer tb-cnnviz.
        """
        if kind not in metadata.KINDS:
            raise NotFoundError(f"no kind {kind!r}; kinds: {names_text(metadata.KINDS)}")
        run = self.resolve_run(run)
        datum = self._datum(run, layer, kind, step)
        blobs = [
            bytes(self._provider.read_blob(self._ctx(), blob_key=ref.blob_key))
            for ref in datum.values
        ]
        where = f"step {datum.step} of {layer!r} {kind} in run {run!r}"
        if not blobs:
            raise NotFoundError(f"{where} holds no blobs (a truncated or partial write)")
        try:
            index = metadata.decode_index(blobs[0])
            if index is not None:
                metadata.check_index(index, len(blobs))
        except (TypeError, ValueError) as e:
            raise NotFoundError(f"{where} has a malformed {e}") from None
        if index is None:
            raise NotFoundError(f"{where} was written by a newer tb-cnnviz; upgrade to read it")
        h, w, c = index["tile"]
        count = int(index["slices"]["count"])
        n = len(index["filters"])
        atlases = [(blobs[a["blob"]], int(a["cols"])) for a in index["atlases"]]
        values = tiles.unpack_tiles(atlases, (h, w, c), index["ranges"])[: n * count]
        return LayerPictures(
            run=run,
            layer=layer,
            kind=kind,
            step=int(datum.step),
            wall_time=float(datum.wall_time),
            tiles=values.reshape(n, count, h, w, c),
            index=index,
            static=dict(self._series[run][(layer, kind)][1].extra),
        )

    def data_layers(self, run: str, kind: str) -> list[str]:
        """Returns the layers of a run that hold data of `kind`, naturally sorted.

        Args:
            run: The run; `"<name>"` also finds `"<name>/train"`.
            kind: One of `tb_cnnviz.metadata.DATA_KINDS`.

        Raises:
            NotFoundError: If the run is not there.

        Example:
            >>> import tempfile, numpy as np
            >>> from tb_cnnviz import summary
            >>> path, acts = tempfile.mkdtemp(), np.random.rand(16, 6, 6, 4)
            >>> with summary.create_file_writer(path + "/run1").as_default(step=0) as writer:
            ...     _ = summary.responses("conv10", acts, reference_images="0" * 16)
            ...     _ = summary.responses("conv2", acts, reference_images="0" * 16)
            >>> writer.close()
            >>> Logdir(path).data_layers("run1", "responses")
            ['conv2', 'conv10']
        """
        return [name for name, kinds in self._kinds_by_layer(run).items() if kind in kinds]

    def read_record(self, run: str, layer: str, kind: str, step: int | None = None) -> Record:
        """Reads one datum of a data kind: a run's reference images or a layer's responses.

        Args:
            run: The run; `"<name>"` also finds `"<name>/train"`.
            layer: The layer name (`"reference_images"` for the reference images).
            kind: One of `tb_cnnviz.metadata.DATA_KINDS`.
            step: The step; `None` means the latest.

        Returns:
            A `Record`, whose blobs are read when asked for.

        Raises:
            NotFoundError: If the run, layer, kind or step is not there, or the step was written
                by a newer tb-cnnviz.

        Example:
            >>> import tempfile, numpy as np
            >>> from tb_cnnviz import summary
            >>> path = tempfile.mkdtemp()
            >>> refs, acts = np.random.rand(16, 8, 8, 3), np.random.rand(16, 6, 6, 4)
            >>> with summary.create_file_writer(path + "/run1").as_default(step=0) as writer:
            ...     _ = summary.responses("conv1", acts, reference_images=refs)
            >>> writer.close()
            >>> record = Logdir(path).read_record("run1", "conv1", "responses")
            >>> record.step, record.index["filters"], record.blob_count
            (0, 4, 8)
        """
        if kind not in metadata.DATA_KINDS:
            raise NotFoundError(
                f"no data kind {kind!r}; data kinds: {names_text(metadata.DATA_KINDS)}"
            )
        run = self.resolve_run(run)
        datum = self._datum(run, layer, kind, step)
        where = f"step {datum.step} of {layer!r} {kind} in run {run!r}"
        if not datum.values:
            raise NotFoundError(f"{where} holds no blobs (a truncated or partial write)")

        @functools.cache
        def blob(i: int) -> bytes:
            return bytes(self._provider.read_blob(self._ctx(), blob_key=datum.values[i].blob_key))

        try:
            index = metadata.decode_index(blob(0))
        except (TypeError, ValueError) as e:
            raise NotFoundError(f"{where} has a malformed {e}") from None
        if index is None:
            raise NotFoundError(f"{where} was written by a newer tb-cnnviz; upgrade to read it")
        return Record(
            run=run,
            layer=layer,
            kind=kind,
            step=int(datum.step),
            wall_time=float(datum.wall_time),
            index=index,
            static=dict(self._series[run][(layer, kind)][1].extra),
            blob=blob,
            blob_count=len(datum.values),
        )

    def resolve_run(self, run: str) -> str:
        """Returns the run's name as TensorBoard knows it.

        The callbacks write into `<log_dir>/train`, so `"lr_1e-3"` finds `"lr_1e-3/train"`
        when only the latter exists.

        Raises:
            NotFoundError: If no such run holds CNN Viz pictures; the message lists those that do.

        Example:
            >>> import tempfile
            >>> Logdir(tempfile.mkdtemp()).resolve_run("run1")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            tb_cnnviz.reader.NotFoundError: no CNN Viz pictures in logdir '...' (no event files)...
        """
        if run in self._series:
            return run
        inner = f"{run.rstrip('/')}/train"
        if inner in self._series:
            return inner
        if not self._series:
            raise self.no_data()
        raise NotFoundError(
            f"no run {run!r} with CNN Viz pictures in {self.path!r}; runs: "
            + names_text(self.runs())
        )

    def no_data(self) -> NotFoundError:
        """The error for a logdir without CNN Viz pictures, saying what it holds instead.

        Example:
            >>> import tempfile
            >>> "no event files" in str(Logdir(tempfile.mkdtemp()).no_data())
            True
        """
        others = self._mux.Runs()
        found = f"{len(others)} run(s) without any" if others else "no event files"
        return NotFoundError(
            f"no CNN Viz pictures in logdir {self.path!r} ({found}); log some with "
            "tb_cnnviz.callbacks.CNNViz or `tb-cnnviz replay`"
        )

    # Internals.

    def _ctx(self):
        from tensorboard import context

        return context.RequestContext()

    def _list_series(self) -> dict[str, dict[tuple[str, str], tuple[str, Any]]]:
        listed = self._provider.list_blob_sequences(
            self._ctx(), experiment_id="", plugin_name=metadata.PLUGIN_NAME
        )
        series: dict[str, dict[tuple[str, str], tuple[str, Any]]] = {}
        self._plan_tags: dict[str, list[str]] = {}
        for run, tags in listed.items():
            for tag, info in tags.items():
                try:
                    parsed = metadata.parse_plugin_metadata(bytes(info.plugin_content or b""))
                except (TypeError, ValueError):
                    continue  # not ours, or damaged: TensorBoard's tab skips it too
                # None: a newer format, already warned about. A plan record holds no pictures.
                if parsed is not None and parsed.kind == metadata.PLAN_KIND:
                    self._plan_tags.setdefault(run, []).append(tag)
                elif parsed is not None:
                    series.setdefault(run, {})[(parsed.layer, parsed.kind)] = (tag, parsed)
        return series

    def _kinds_by_layer(self, run: str) -> dict[str, list[str]]:
        """`{layer: [kinds]}` of every series of a run, pictures and data kinds alike."""
        order = (*metadata.KINDS, *metadata.DATA_KINDS)
        out: dict[str, list[str]] = {}
        for layer, kind in sorted(
            self._series[self.resolve_run(run)], key=lambda lk: natural_key(lk[0])
        ):
            out.setdefault(layer, []).append(kind)
        return {layer: sorted(kinds, key=order.index) for layer, kinds in out.items()}

    def _datum(self, run: str, layer: str, kind: str, step: int | None):
        data = self._data(run, layer, kind)
        if step is None:
            return data[-1]
        matches = [d for d in data if d.step == step]
        if not matches:
            raise NotFoundError(
                f"no step {step} of {layer!r} {kind} in run {run!r}; its steps: "
                + _steps_text([d.step for d in data])
            )
        return matches[0]

    def _data(self, run: str, layer: str, kind: str):
        from tensorboard.data import provider

        run = self.resolve_run(run)
        series = self._series[run]
        if kind not in metadata.KINDS and kind not in metadata.DATA_KINDS:
            kinds = (*metadata.KINDS, *metadata.DATA_KINDS)
            raise NotFoundError(f"no kind {kind!r}; kinds: {names_text(kinds)}")
        if (layer, kind) not in series:
            layers = self._kinds_by_layer(run)
            what = f"{kind} pictures" if kind in metadata.KINDS else f"{kind} data"
            if layer in layers:
                raise NotFoundError(
                    f"layer {layer!r} of run {run!r} has no {what}; it has: "
                    + ", ".join(layers[layer])
                )
            with_kind = [name for name, kinds in layers.items() if kind in kinds]
            raise NotFoundError(
                f"no layer {layer!r} with {what} in run {run!r}; layers: "
                + names_text(with_kind or layers)
            )
        tag = series[(layer, kind)][0]
        found = self._provider.read_blob_sequences(
            self._ctx(),
            experiment_id="",
            plugin_name=metadata.PLUGIN_NAME,
            downsample=metadata.ALL_POINTS,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        )
        data = sorted(found.get(run, {}).get(tag, []), key=lambda d: d.step)
        if not data:
            raise NotFoundError(f"{layer!r} {kind} in run {run!r} holds no steps")
        return data


#: Orders names with numbers in them by value (`tb_cnnviz.metadata.natural_key`).
natural_key = metadata.natural_key
#: Lists names for a message (`tb_cnnviz.metadata.names_text`).
names_text = metadata.names_text


def _isdir(path: str) -> bool:
    """Whether `path` is a folder, through the filesystem TensorBoard's readers use (remote
    URLs included: `s3://` through TensorBoard's own layer, which needs no TensorFlow)."""
    if "://" not in path:
        return os.path.isdir(path)
    from tensorboard.compat import tf

    try:
        return tf.io.gfile.isdir(path)
    except Exception as e:
        raise NotFoundError(
            f"logdir {path!r} cannot be read: {type(e).__name__}: {e}. TensorBoard's readers "
            "use TensorFlow's file system where TensorFlow is installed, which has no s3:// "
            "(since TensorFlow 2.6): read a bucket where TensorFlow is not installed, or "
            "install tensorflow-io."
        ) from e


def thinned_spans(thinned: dict[int, str]) -> list[tuple[int, int, int, str]]:
    """`(first, last, count, why)` spans of thinned steps (`Logdir.thinned`): steps in order with
    one reason make one span, whatever drawn steps lie between them.

    Example:
        >>> thinned_spans({5: "every 2nd", 7: "every 2nd", 9: "every 4th"})
        [(5, 7, 2, 'every 2nd'), (9, 9, 1, 'every 4th')]
    """
    spans: list[tuple[int, int, int, str]] = []
    for step in sorted(thinned):
        why = thinned[step]
        if spans and spans[-1][3] == why:
            first, _, count, _ = spans[-1]
            spans[-1] = (first, step, count + 1, why)
        else:
            spans.append((step, step, 1, why))
    return spans


def _steps_text(steps: list[int]) -> str:
    if len(steps) > _MAX_STEPS_LISTED:
        return ", ".join(map(str, steps[:10])) + f", …, {steps[-1]} ({len(steps)} steps)"
    return ", ".join(map(str, steps))
