"""`CNNVizPlugin`: TensorBoard's plugin interface and the tab's routes, each one thin.

A route parses its request (`tb_cnnviz.plugin.wsgi`), calls one answer and responds: the
pictures (`pictures`), the plans (`plans`), the comparisons (`comparisons`), the model run on
an image (`probing`) or the dashboard's files (`static`). Every read of the logdir goes
through one `Data` (`data`), which owns the caches; the probe alone opens the run's snapshot
files, inside `--logdir`. Routes live under `/data/plugin/cnnviz/`; `tb_cnnviz/http_api.md`
documents each one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tensorboard import errors
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin

from tb_cnnviz import metadata
from tb_cnnviz.plugin import pictures, probing, static
from tb_cnnviz.plugin.comparisons import Comparisons
from tb_cnnviz.plugin.data import Data, read_downsample
from tb_cnnviz.plugin.plans import Plans
from tb_cnnviz.plugin.wsgi import (
    body,
    json_response,
    parse_runs,
    query,
    request_context,
    required,
    route,
    step_param,
)

__all__ = ["BLOB_MAX_AGE_SECONDS", "CNNVizPlugin"]

#: Browser cache lifetime of `/blob` responses. A blob key names the same bytes for the life of a
#: TensorBoard server, so the browser need not ask twice.
BLOB_MAX_AGE_SECONDS = 24 * 60 * 60


class CNNVizPlugin(base_plugin.TBPlugin):
    """Serves cnnviz pictures, statistics and the dashboard's files to the "CNN Viz" tab.

    The tab is enabled when the logdir holds cnnviz summaries (`is_active` is always False:
    activation comes from data). Each `*_impl` method is the plain-data answer of one route
    (`tb_cnnviz/http_api.md`), for tests, benchmarks and notebooks.

    Args:
        context: The `TBContext` TensorBoard passes to every plugin. Only `data_provider` and
            `sampling_hints` are used.

    Example:
        >>> plugin = CNNVizPlugin(base_plugin.TBContext(sampling_hints={"cnnviz": 0}))
        >>> plugin.frontend_metadata().tab_name
        'CNN Viz'
        >>> sorted(plugin.get_plugin_apps())[:3]
        ['/alignment', '/blob', '/examples']
    """

    plugin_name = metadata.PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext):
        self._logdir = getattr(context, "logdir", None)
        self._data = Data(context.data_provider, read_downsample(context.sampling_hints))
        self._plans = Plans(self._data)
        self._comparisons = Comparisons(self._data)

    def forget_similarity(self) -> None:
        """Forgets the answered similarity heatmaps; decoded arrays stay cached.

        The next `/similarity` request computes its heatmap again from cached Gram matrices,
        as after a new step: `benchmarks/similarity_route.py` measures that case.

        Example:
            >>> CNNVizPlugin(base_plugin.TBContext(logdir="logs")).forget_similarity()
        """
        self._comparisons.forget()

    # -- TensorBoard's plugin interface ------------------------------------------------------
    def get_plugin_apps(self) -> dict[str, Callable]:
        """Returns the WSGI apps of every route, keyed by route.

        Example:
            >>> "/tags" in CNNVizPlugin(base_plugin.TBContext()).get_plugin_apps()
            True
        """
        return {
            "/index.js": self._serve_index_js,
            "/static/*": self._serve_static,
            "/runs": self._serve_runs,
            "/tags": self._serve_tags,
            "/layer": self._serve_layer,
            "/blob": self._serve_blob,
            "/stats": self._serve_stats,
            "/plan": self._serve_plan,
            "/similarity": self._serve_similarity,
            "/alignment": self._serve_alignment,
            "/examples": self._serve_examples,
            "/snapshots": self._serve_snapshots,
            "/probe": self._serve_probe,
            "/probe_images": self._serve_probe_images,
        }

    def is_active(self) -> bool:
        """Returns False: the tab is enabled by cnnviz data in the logdir, not by this call.

        Example:
            >>> CNNVizPlugin(base_plugin.TBContext()).is_active()
            False
        """
        return False

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        """Returns how TensorBoard loads the tab: the ES module `/index.js`, titled "CNN Viz".

        Example:
            >>> CNNVizPlugin(base_plugin.TBContext()).frontend_metadata().es_module_path
            '/index.js'
        """
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="CNN Viz")

    # -- routes: parse the request, call an answer, respond ----------------------------------
    @route
    def _serve_index_js(self, request):
        body, content_type = static.read_file("index.js")
        return http_util.Respond(request, body, content_type)

    @route
    def _serve_static(self, request):
        for prefix in static.PREFIXES:
            if request.path.startswith(prefix):
                body, content_type = static.read_file(request.path[len(prefix) :])
                return http_util.Respond(request, body, content_type)
        raise errors.NotFoundError("no such file")

    @route
    def _serve_runs(self, request):
        query(request)  # still reject malformed query strings
        ctx, eid = request_context(request)
        return json_response(request, self.runs_impl(ctx, eid))

    @route
    def _serve_tags(self, request):
        params = query(request)
        ctx, eid = request_context(request)
        return json_response(request, self.tags_impl(ctx, eid, run=params.get("run")))

    @route
    def _serve_layer(self, request):
        params = query(request)
        run, tag, step = required(params, "run"), required(params, "tag"), step_param(params)
        ctx, eid = request_context(request)
        return json_response(request, self.layer_impl(ctx, eid, run, tag, step))

    @route
    def _serve_blob(self, request):
        key = required(query(request), "key")
        ctx, eid = request_context(request)
        body, content_type = self.blob_impl(ctx, eid, key)
        return http_util.Respond(request, body, content_type, expires=BLOB_MAX_AGE_SECONDS)

    @route
    def _serve_stats(self, request):
        params = query(request)
        run, tag = required(params, "run"), required(params, "tag")
        ctx, eid = request_context(request)
        return json_response(request, self.stats_impl(ctx, eid, run, tag))

    @route
    def _serve_plan(self, request):
        run = required(query(request), "run")
        ctx, eid = request_context(request)
        return json_response(request, self.plan_impl(ctx, eid, run))

    @route
    def _serve_similarity(self, request):
        params = query(request)
        mode, step = required(params, "mode"), step_param(params)
        runs = parse_runs(params["runs"]) if "runs" in params else None
        ctx, eid = request_context(request)
        body = self.similarity_impl(
            ctx, eid, mode, layer=params.get("layer"), run=params.get("run"), runs=runs, step=step
        )
        return json_response(request, body)

    @route
    def _serve_alignment(self, request):
        params = query(request)
        layer, run_a, run_b = (required(params, name) for name in ("layer", "a", "b"))
        step_a, step_b = step_param(params, "a_step"), step_param(params, "b_step")
        ctx, eid = request_context(request)
        body = self.alignment_impl(ctx, eid, layer, (run_a, step_a), (run_b, step_b))
        return json_response(request, body)

    @route
    def _serve_examples(self, request):
        params = query(request)
        run, layer, step = required(params, "run"), required(params, "layer"), step_param(params)
        ctx, eid = request_context(request)
        return json_response(request, self.examples_impl(ctx, eid, run, layer, step))

    @route
    def _serve_snapshots(self, request):
        run = required(query(request), "run")
        return json_response(request, self.snapshots_impl(run))

    @route
    def _serve_probe(self, request):
        params = query(request)
        run, step = required(params, "run"), step_param(params)
        target = step_param(params, "target")
        if "source_tag" in params:  # an image the run logged, read from this logdir's data
            ctx, eid = request_context(request)
            image = probing.logged_image(
                self._data,
                ctx,
                eid,
                self._logdir,
                params.get("source_run") or run,
                params["source_tag"],
                int(step_param(params, "source_image") or 0),
                step_param(params, "source_step"),
            )
        else:
            image = body(request, probing.MAX_UPLOAD_BYTES, probing.PayloadTooLargeError)
        answer = self.probe_impl(run, image, step, params.get("layer") or None, target)
        return json_response(request, answer)

    @route
    def _serve_probe_images(self, request):
        run = required(query(request), "run")
        ctx, eid = request_context(request)
        return json_response(request, probing.logged_images(self._data, ctx, eid, run))

    # -- the plain-data answers (see the modules named) -------------------------------------
    def static_impl(self, relative_path: str) -> tuple[bytes, str]:
        """`static.read_file`: a dashboard file's bytes and MIME type."""
        return static.read_file(relative_path)

    def runs_impl(self, ctx, experiment_id: str) -> list[str]:
        """`pictures.runs`: the runs that hold readable cnnviz data."""
        return pictures.runs(self._data, ctx, experiment_id)

    def tags_impl(self, ctx, experiment_id: str, run: str | None = None) -> dict[str, Any]:
        """`pictures.tags`: every listed tag of every run (or of one), with its steps."""
        return pictures.tags(self._data, ctx, experiment_id, run)

    def layer_impl(self, ctx, experiment_id, run, tag, step=None) -> dict[str, Any]:
        """`pictures.layer`: one layer's index and atlas URLs at one step."""
        return pictures.layer(self._data, ctx, experiment_id, run, tag, step)

    def stats_impl(self, ctx, experiment_id: str, run: str, tag: str) -> dict[str, Any]:
        """`pictures.stats`: every step's statistics of one (run, tag)."""
        return pictures.stats(self._data, ctx, experiment_id, run, tag)

    def blob_impl(self, ctx, experiment_id: str, key: str) -> tuple[bytes, str]:
        """`pictures.blob`: one blob's bytes and MIME type (the key names its experiment)."""
        del experiment_id
        return pictures.blob(self._data, ctx, key)

    def plan_impl(self, ctx, experiment_id: str, run: str) -> dict[str, Any]:
        """`plans.Plans.plan`: the run's plan records, merged by step."""
        return self._plans.plan(ctx, experiment_id, run)

    def similarity_impl(self, ctx, experiment_id: str, mode: str, **options) -> dict[str, Any]:
        """`comparisons.Comparisons.similarity`: a CKA heatmap."""
        return self._comparisons.similarity(ctx, experiment_id, mode, **options)

    def alignment_impl(self, ctx, experiment_id: str, layer: str, a, b) -> dict[str, Any]:
        """`comparisons.Comparisons.alignment`: run B's filters matched to run A's."""
        return self._comparisons.alignment(ctx, experiment_id, layer, a, b)

    def examples_impl(self, ctx, experiment_id, run, layer, step=None) -> dict[str, Any]:
        """`comparisons.Comparisons.examples`: each filter's dataset examples."""
        return self._comparisons.examples(ctx, experiment_id, run, layer, step)

    def snapshots_impl(self, run: str) -> dict[str, Any]:
        """`probing.snapshots`: the run's snapshot steps and how images are fed (no Keras)."""
        return probing.snapshots(self._logdir, run)

    def probe_impl(self, run, image: bytes, step=None, layer=None, target=None) -> dict[str, Any]:
        """`probing.probe`: the model at a step run on an uploaded (or logged) image."""
        return probing.probe(self._logdir, run, image, step, layer, target)
