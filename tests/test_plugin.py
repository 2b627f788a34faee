"""Tests for `tb_cnnviz.plugin`, against real logdirs, real data providers and the real WSGI app.

Logdirs are written with `tb_cnnviz.summary` under `tf.summary.create_file_writer`, loaded through
TensorBoard's own `EventMultiplexer` + `MultiplexerDataProvider` (and, where noted, the Rust data
server and TensorBoard's own flag parsing), and served by `application.TensorBoardWSGI`.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import pathlib
import subprocess
import sys
import textwrap
import time
import urllib.parse

import hypothesis
import numpy as np
import pytest
import tensorflow as tf
import werkzeug.test
from hypothesis import strategies as st
from tensorboard import context, program
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_ingester, data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer as multiplexer
from tensorboard.compat.proto import summary_pb2
from tensorboard.data import server_ingester
from tensorboard.plugins import base_plugin
from tensorboard.plugins.core import core_plugin
from werkzeug.wrappers import Response

from tb_cnnviz import frontend, metadata, plugin, summary, tiles
from tb_cnnviz.plugin import static
from tb_cnnviz.plugin.data import LRUCache

PREFIX = "/data/plugin/cnnviz/"
STEPS = 15  # more than TensorBoard's default of 10 kept steps per tag
RUNS = ("alpha", "nested/beta <b>&amp;")  # a nested run whose name holds HTML
ODD_RUN = "odd"
FRONTEND = pathlib.Path(frontend.__file__).parent
# The routes' own source: what a traversal must never serve.
PLUGIN_SOURCE = (pathlib.Path(plugin.__file__).parent / "app.py").read_bytes()


def served(path: pathlib.Path) -> bytes:
    """A frontend file as `tb_cnnviz.plugin.static` serves it: without whole-line comments."""
    language = "css" if path.suffix == ".css" else "js"
    return static.strip_comments(path.read_text(encoding="utf-8"), language).encode("utf-8")


def kernel_at(run_index: int, step: int) -> np.ndarray:
    """The conv kernel written for a run at a step: [3, 3, in=2, filters=4]."""
    return np.random.default_rng([run_index, step]).normal(size=(3, 3, 2, 4)).astype(np.float32)


def write_run(logdir: pathlib.Path, run: str, run_index: int, steps: int = STEPS) -> None:
    """Writes weights and feature maps of one conv layer at every step, as a user's loop would."""
    writer = tf.summary.create_file_writer(str(logdir / run))
    with writer.as_default():
        previous = None
        for step in range(steps):
            kernel = kernel_at(run_index, step)
            summary.filter_weights(
                "conv2d", kernel, step=step, previous=previous, description="first *conv*"
            )
            acts = np.maximum(np.random.default_rng(step).normal(size=(2, 6, 6, 4)), 0)
            acts[..., 3] = 0.0  # a dead filter
            summary.feature_maps("conv2d", acts, step=step)
            previous = kernel
    writer.close()


def write_blobs(tag: str, blobs: list[bytes], step: int, content: bytes) -> None:
    """Writes one raw cnnviz datum with hand-made plugin content, for data no writer would make."""
    md = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=content
        ),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )
    tf.summary.write(
        tag,
        tf.constant(blobs, dtype=tf.string, shape=[len(blobs)]),
        step=step,
        metadata=md.SerializeToString(),
    )


def write_odd_run(logdir: pathlib.Path) -> None:
    """Writes the data a reader must survive: newer versions, malformed content, empty datums."""
    v1 = json.dumps({"version": 1, "kind": "weights", "layer": "x"}).encode()
    newer = json.dumps({"version": metadata.FORMAT_VERSION + 1, "kind": "weights", "layer": "x"})
    png = tiles.encode_png(np.zeros((2, 2), np.uint8))
    drawable = {
        "tile": [2, 2, 1],
        "filters": [0],
        "slices": {"axis": "input_channel", "count": 1, "total": 1},
        "atlases": [{"blob": 1, "cols": 1, "rows": 1, "count": 1}],
        "ranges": [[0.0, 1.0]],
    }
    good_index = metadata.encode_index(drawable)
    writer = tf.summary.create_file_writer(str(logdir / ODD_RUN))
    with writer.as_default():
        write_blobs("good/weights", [good_index, png], 0, v1)
        write_blobs("newer_tag/weights", [good_index, png], 0, newer.encode())
        write_blobs("malformed_tag/weights", [good_index, png], 0, b"not json")
        write_blobs("empty/weights", [], 0, v1)
        write_blobs("newer_index/weights", [b'{"version": 99}', png], 0, v1)
        write_blobs("garbage_index/weights", [b"\x00\x01garbage", png], 0, v1)
        write_blobs("lost_atlas/weights", [good_index], 0, v1)  # index names a missing blob
        nan_index = json.dumps({**drawable, "version": 1, "ranges": [[float("nan"), float("inf")]]})
        write_blobs("nan_index/weights", [nan_index.encode(), png], 0, v1)
        no_tile = metadata.encode_index({**drawable, "tile": [2, 2]})
        write_blobs("no_tile/weights", [no_tile, png], 0, v1)
    writer.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> pathlib.Path:
    """A logdir with two well-formed runs of 15 steps and one run of odd data."""
    path = tmp_path_factory.mktemp("logdir")
    for i, run in enumerate(RUNS):
        write_run(path, run, i)
    write_odd_run(path)
    return path


def make_provider(path) -> data_provider.MultiplexerDataProvider:
    """Loads a logdir through TensorBoard's Python multiplexer and data provider."""
    mux = multiplexer.EventMultiplexer()  # keeps 500 tensors per tag, more than we write
    mux.AddRunsFromDirectory(str(path))
    mux.Reload()
    return data_provider.MultiplexerDataProvider(mux, str(path))


def make_client(provider, sampling_hints=None) -> werkzeug.test.Client:
    """A client of TensorBoard's WSGI app serving a fresh CNNVizPlugin over `provider`."""
    ctx = base_plugin.TBContext(
        logdir="unused", data_provider=provider, sampling_hints=sampling_hints
    )
    app = application.TensorBoardWSGI([plugin.CNNVizPlugin(ctx)], data_provider=provider)
    return werkzeug.test.Client(app, Response)


@pytest.fixture(scope="module")
def provider(logdir):
    """The module's logdir behind TensorBoard's Python data provider."""
    return make_provider(logdir)


@pytest.fixture(scope="module")
def client(provider) -> werkzeug.test.Client:
    """The app as `tensorboard` serves it after `CNNVizLoader.fix_flags` ran (hint cnnviz=0)."""
    return make_client(provider, {"cnnviz": 0})


def get_json(client, route, expect=200, **params):
    """GETs a plugin route, checks its status and JSON type, and returns the parsed body."""
    response = client.get(PREFIX + route, query_string=params)
    assert response.status_code == expect, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def layer_url(run, tag, step=None):
    """The absolute URL of /layer for a run, tag and optional step."""
    params = {"run": run, "tag": tag, **({} if step is None else {"step": step})}
    return PREFIX + "layer?" + urllib.parse.urlencode(params)


# Listing and the dashboard's files.


def test_plugins_listing_enables_the_tab_with_an_es_module(client):
    """With cnnviz data in the logdir the tab is enabled and loads /index.js in an iframe."""
    listing = client.get("/data/plugins_listing").get_json()
    assert listing["cnnviz"]["enabled"] is True
    assert listing["cnnviz"]["tab_name"] == "CNN Viz"
    assert listing["cnnviz"]["loading_mechanism"] == {
        "type": "IFRAME",
        "module_path": "/data/plugin/cnnviz/index.js",
    }


def test_plugins_listing_disabled_on_an_empty_logdir(tmp_path):
    """Without cnnviz data the tab is not enabled (is_active is False)."""
    listing = make_client(make_provider(tmp_path)).get("/data/plugins_listing").get_json()
    assert listing["cnnviz"]["enabled"] is False


def test_index_js_is_served_as_javascript(client):
    """/index.js is the frontend's index.js, comments aside, with a JS MIME type (nosniff)."""
    response = client.get(PREFIX + "index.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.get_data() == served(FRONTEND / "index.js")
    assert client.get(PREFIX + "index.js/").status_code == 200  # TensorBoard strips the slash


@pytest.mark.parametrize(
    "name, mimetype",
    [(path.name, "text/javascript") for path in sorted(FRONTEND.glob("*.js"))]
    + [("style.css", "text/css")],
)
def test_static_files_have_explicit_mime_types(client, name, mimetype):
    """Every frontend module and the stylesheet come back under static/, typed, comments aside."""
    response = client.get(PREFIX + "static/" + name)
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.get_data() == served(FRONTEND / name)
    assert len(response.get_data()) < (FRONTEND / name).stat().st_size


@pytest.mark.parametrize(
    "path",
    [
        "static/__init__.py",
        "static/../plugin.py",
        "static/%2e%2e/plugin.py",
        "static/%2E%2E/%2E%2E/tb_cnnviz/plugin.py",
        "static/..%2fplugin.py",
        "static/..%2Fmetadata.py",
        "static/..%5cplugin.py",
        "static/..\\plugin.py",
        "static//etc/passwd",
        "static/%2fetc%2fpasswd",
        "static/" + str(pathlib.Path(plugin.__file__)),
        "static/./index.js/../../plugin.py",
        "static/.hidden.js",
        "static/index.js%00.py",
        "static/index.py",
        "static/",
        "static",
        "static/nonexistent.js",
        "static/" + "a" * 5000 + ".js",
    ],
)
def test_static_traversal_is_refused_with_json_404(client, path):
    """Traversal, absolute paths, hidden files and non-web files never serve: 404 JSON."""
    response = client.get(PREFIX + path)
    assert response.status_code in (400, 404)
    assert PLUGIN_SOURCE not in response.get_data()
    if path not in ("static", "static/"):  # those two never reach us: TensorBoard 404s them
        assert "error" in response.get_json()


def test_static_refuses_symlinks_out_of_the_frontend_folder(tmp_path, monkeypatch, provider):
    """A symlink inside the frontend folder that points outside it is not followed."""
    outside = tmp_path / "secret.js"
    outside.write_text("secret")
    folder = tmp_path / "frontend"
    folder.mkdir()
    (folder / "leak.js").symlink_to(outside)
    (folder / "ok.js").write_text("ok")
    monkeypatch.setattr(plugin.static, "frontend_dir", lambda: folder.resolve())
    client = make_client(provider)
    assert client.get(PREFIX + "static/leak.js").status_code == 404
    assert client.get(PREFIX + "static/ok.js").get_data() == b"ok"


# Data routes.


def test_runs_lists_runs_with_cnnviz_data_sorted(client):
    """/runs is the sorted list of runs holding readable cnnviz tags."""
    assert get_json(client, "runs") == sorted([*RUNS, ODD_RUN])


def test_tags_lists_every_logged_step(client):
    """/tags gives kind, layer, description and all 15 steps, ascending, for every tag."""
    tags = get_json(client, "tags")
    assert set(tags) == {*RUNS, ODD_RUN}
    for run in RUNS:
        assert tags[run] == {
            "conv2d/weights": {
                "kind": "weights",
                "layer": "conv2d",
                "steps": list(range(STEPS)),
                "description": "first *conv*",
            },
            "conv2d/feature_maps": {
                "kind": "feature_maps",
                "layer": "conv2d",
                "steps": list(range(STEPS)),
                "description": "",
            },
        }


def test_tags_for_one_run(client):
    """/tags?run= gives only that run; an unknown run is a 404 listing the runs."""
    assert list(get_json(client, "tags", run=RUNS[1])) == [RUNS[1]]
    error = get_json(client, "tags", expect=404, run="nope")["error"]
    assert "'nope'" in error and "'alpha'" in error


def test_tags_skip_newer_and_malformed_metadata(client):
    """Tags written by a newer format or with malformed metadata are left out of /tags."""
    odd = get_json(client, "tags", run=ODD_RUN)[ODD_RUN]
    assert "newer_tag/weights" not in odd
    assert "malformed_tag/weights" not in odd
    assert {"good/weights", "empty/weights", "newer_index/weights"} <= set(odd)


def test_newer_metadata_warns_once_across_requests(provider, monkeypatch, caplog):
    """Reading a newer-version tag many times logs one warning, not one per request."""
    monkeypatch.setattr(metadata, "_warned_versions", set())
    client = make_client(provider)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            get_json(client, "tags")
            get_json(client, "runs")
    assert len([r for r in caplog.records if r.name == metadata.__name__]) == 1  # the newer tag
    malformed = [r for r in caplog.records if "malformed_tag" in r.getMessage()]
    assert len(malformed) == 1


def test_layer_atlases_decode_to_the_written_kernel(client):
    """/layer's index and atlases give back every kernel slice within 1/255 of its range."""
    for run_index, run in enumerate(RUNS):
        for step in (0, 7, STEPS - 1):
            body = client.get(layer_url(run, "conv2d/weights", step)).get_json()
            assert (body["run"], body["tag"], body["step"]) == (run, "conv2d/weights", step)
            assert isinstance(body["wall_time"], float)
            index = body["index"]
            assert "warning" not in body
            assert index["tile"] == [3, 3, 1]
            assert index["filters"] == [0, 1, 2, 3]
            assert len(body["atlases"]) == len(index["atlases"])
            pngs = []
            for url, atlas in zip(body["atlases"], index["atlases"], strict=True):
                assert url.startswith("blob?key=")
                response = client.get(PREFIX + url)
                assert response.mimetype == "image/png"
                pngs.append((response.get_data(), atlas["cols"]))
            ranges = np.array(index["ranges"])
            got = tiles.unpack_tiles(pngs, tuple(index["tile"]), ranges)[..., 0]
            # Tile i * slices + s is input channel s of filter i.
            want = kernel_at(run_index, step).transpose(3, 2, 0, 1).reshape(-1, 3, 3)
            span = (ranges[:, 1] - ranges[:, 0])[:, None, None]
            assert np.all(np.abs(got - want) <= span / 255 + 1e-6)
            # A filter's slices share the filter's range (format version 3's runs).
            per_filter = ranges.reshape(len(index["filters"]), -1, 2)
            assert (per_filter == per_filter[:, :1]).all()
            by_filter = want.reshape(len(index["filters"]), -1)
            np.testing.assert_allclose(per_filter[:, 0, 0], by_filter.min(axis=1), rtol=1e-6)
            np.testing.assert_allclose(per_filter[:, 0, 1], by_filter.max(axis=1), rtol=1e-6)


def test_layer_defaults_to_the_latest_step(client):
    """/layer without step= answers the latest logged step."""
    body = client.get(layer_url(RUNS[0], "conv2d/feature_maps")).get_json()
    assert body["step"] == STEPS - 1
    assert body["index"]["slices"]["axis"] == "probe"
    assert body["index"]["layer_stats"]["dead_fraction"] == 0.25


def test_stats_gives_every_step_without_ranges_or_atlases(client):
    """/stats lists every step's filters and statistics, and leaves out ranges and atlases."""
    body = get_json(client, "stats", run=RUNS[0], tag="conv2d/weights")
    assert body["steps"] == list(range(STEPS))
    assert [entry["step"] for entry in body["series"]] == list(range(STEPS))
    assert body["skipped"] == []
    first, second = body["series"][:2]
    assert {"step", "wall_time", "filters", "stats", "layer_stats", "total_filters"} <= set(first)
    assert not {"ranges", "atlases"} & set(first)
    assert first["stats"]["relative_change"] == [None] * 4
    assert first["layer_stats"] == {}
    assert second["layer_stats"]["update_ratio"] > 0
    want = np.linalg.norm(kernel_at(0, 1).reshape(-1, 4), axis=0)
    np.testing.assert_allclose(second["stats"]["l2_norm"], want, rtol=1e-6)


def test_blob_is_cached_long_and_typed_by_content(client, provider):
    """/blob serves PNG atlases as image/png and the index as JSON, both cached for a day."""
    body = client.get(layer_url(RUNS[0], "conv2d/weights", 3)).get_json()
    atlas = client.get(PREFIX + body["atlases"][0])
    assert atlas.status_code == 200
    assert atlas.mimetype == "image/png"
    assert atlas.get_data().startswith(b"\x89PNG")
    assert atlas.headers["Cache-Control"] == f"private, max-age={plugin.BLOB_MAX_AGE_SECONDS}"
    assert plugin.BLOB_MAX_AGE_SECONDS >= 86400
    # The index is blob 0 of the datum; take its opaque key from the provider itself.
    sequences = provider.read_blob_sequences(
        context.RequestContext(), experiment_id="", plugin_name="cnnviz", downsample=100
    )
    datum = next(d for d in sequences[RUNS[0]]["conv2d/weights"] if d.step == 3)
    index = client.get(PREFIX + "blob", query_string={"key": datum.values[0].blob_key})
    assert index.mimetype == "application/json"
    assert index.headers["Cache-Control"] == atlas.headers["Cache-Control"]
    # As written: its ranges packed, which /layer serves unpacked.
    assert json.loads(index.get_data())["ranges"]["count"] == len(body["index"]["ranges"])
    assert metadata.decode_index(index.get_data()) == body["index"]


@pytest.mark.parametrize("key", ["", "nope", "!!!", "a" * 3000, "WyJ4Il0", "%00", "é"])
def test_unknown_blob_key_is_json_404(client, key):
    """A key the provider does not know is a 404 JSON error, whatever the provider raised."""
    response = client.get(PREFIX + "blob", query_string={"key": key})
    assert response.status_code == 404
    assert "error" in response.get_json()


def test_experiment_prefix_is_served(client):
    """Requests under /experiment/<id>/ (as the iframe sends them there) are served."""
    response = client.get("/experiment/abc/data/plugin/cnnviz/tags")
    assert response.status_code == 200
    assert set(response.get_json()) == {*RUNS, ODD_RUN}
    body = client.get("/experiment/abc" + layer_url(RUNS[0], "conv2d/weights", 2)).get_json()
    assert client.get("/experiment/abc" + PREFIX + body["atlases"][0]).status_code == 200


@pytest.mark.parametrize(
    "params, says",
    [
        ({"run": "ghost", "tag": "conv2d/weights"}, ["'ghost'", "'alpha'", "'odd'"]),
        ({"run": "alpha", "tag": "conv9/weights"}, ["'conv9/weights'", "'conv2d/feature_maps'"]),
        ({"run": "alpha", "tag": "conv2d/weights", "step": "99"}, ["99", "0, 1, 2", "14"]),
    ],
)
def test_unknown_run_tag_or_step_is_404_listing_what_exists(client, params, says):
    """/layer and /stats answer an unknown run, tag or step with 404 naming what exists."""
    for route in ("layer", "stats"):
        if route == "stats" and "step" in params:
            continue
        error = get_json(client, route, expect=404, **params)["error"]
        for text in says:
            assert text in error


def test_not_found_message_is_truncated(tmp_path):
    """A 404 listing many steps names the first ones and says how many more there are."""
    writer = tf.summary.create_file_writer(str(tmp_path / "many"))
    with writer.as_default():
        for step in range(30):
            write_blobs(
                "a/weights",
                [metadata.encode_index({"atlases": []})],
                step,
                json.dumps({"version": 1, "kind": "weights", "layer": "a"}).encode(),
            )
    writer.close()
    client = make_client(make_provider(tmp_path))
    error = get_json(client, "layer", expect=404, run="many", tag="a/weights", step="500")["error"]
    assert "and 10 more" in error
    assert "29" not in error


@pytest.mark.parametrize(
    "step",
    [
        "abc",
        "-1",
        "1.5",
        "1e3",
        "",
        " 1",
        "0x10",
        "+1",
        "٣",
        "99999999999999999999",
        "9223372036854775808",
    ],
)
def test_bad_step_is_400(client, step):
    """A step that is not an integer in 0..2**63-1 is a 400 JSON error."""
    error = get_json(client, "layer", expect=400, run="alpha", tag="conv2d/weights", step=step)
    assert "step" in error["error"]


def test_huge_valid_step_is_404_not_400(client):
    """The largest int64 step is well-formed but not logged: 404."""
    get_json(client, "layer", expect=404, run="alpha", tag="conv2d/weights", step=str(2**63 - 1))


@pytest.mark.parametrize(
    "route, query",
    [
        ("layer", "run=alpha&run=alpha&tag=conv2d/weights"),
        ("layer", "tag=conv2d/weights"),
        ("layer", "run=alpha"),
        ("layer", "run=%ff&tag=x"),
        ("layer", "run=%c3%28&tag=x"),
        ("stats", "run=alpha"),
        ("stats", "run=a&tag=b&tag=c"),
        ("tags", "run=%80"),
        ("tags", "run=a&run=b"),
        ("blob", ""),
        ("blob", "key=a&key=b"),
        ("runs", "x=" + "a" * 70000),
        ("runs", "&".join(f"p{i}=1" for i in range(40))),
    ],
)
def test_malformed_query_strings_are_400(client, route, query):
    """Repeated, missing, non-UTF-8 or oversized parameters are a 400 JSON error."""
    response = client.get(PREFIX + route, query_string=query)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "error" in response.get_json()


def test_raw_non_ascii_query_bytes_are_handled(client, provider):
    """Unescaped UTF-8 in the raw query string works; invalid raw bytes are a 400."""
    environ = werkzeug.test.EnvironBuilder(path=PREFIX + "tags").get_environ()
    environ["QUERY_STRING"] = "run=caf\xc3\xa9"  # PEP 3333: raw bytes as latin-1 code points
    response = Response.from_app(client.application, environ)
    assert response.status_code == 404
    assert "café" in response.get_json()["error"]
    environ["QUERY_STRING"] = "run=\xff"
    assert Response.from_app(client.application, environ).status_code == 400


def test_html_in_run_names_is_escaped_json(client):
    """Run names holding HTML are returned as data with <, > and & escaped in the JSON text."""
    response = client.get(PREFIX + "tags")
    text = response.get_data(as_text=True)
    assert "<b>" not in text and "&amp;" not in text
    assert "\\u003cb\\u003e" in text
    assert RUNS[1] in response.get_json()
    body = client.get(layer_url(RUNS[1], "conv2d/weights", 0)).get_json()
    assert body["run"] == RUNS[1]


def test_odd_data_is_served_gracefully(client):
    """Steps that cannot be drawn give 200 with index null and a warning, never an error."""
    for tag, says in [
        ("empty/weights", "no blobs"),
        ("newer_index/weights", "newer"),
        ("garbage_index/weights", "malformed"),
        ("lost_atlas/weights", "atlas 0 names blob 1, but the step holds blobs 1..0 only"),
        ("no_tile/weights", "malformed index: tile must be [height, width, channels]"),
    ]:
        body = get_json(client, "layer", run=ODD_RUN, tag=tag)
        assert body["index"] is None and body["atlases"] == []
        assert says in body["warning"]
        stats = get_json(client, "stats", run=ODD_RUN, tag=tag)
        assert stats == {"steps": [0], "series": [], "skipped": [0]}
    good = get_json(client, "layer", run=ODD_RUN, tag="good/weights")
    assert len(good["atlases"]) == 1 and "warning" not in good
    nan = get_json(client, "layer", run=ODD_RUN, tag="nan_index/weights")
    assert nan["index"]["ranges"] == [["NaN", "Infinity"]]  # TensorBoard's JSON spelling


# Plans: what the callbacks drew at each step, what they left out, and why.

PLAN_RUN, PLAN_ONLY_RUN, NO_PLAN_RUN = "planned", "plans_only", "before_plans"
PLAN_CONTENT = json.dumps({"version": 1, "kind": "plan", "layer": "broken"}).encode()


def write_plan_runs(logdir: pathlib.Path) -> None:
    """Writes a run planned by two owners (with broken plan blobs), a plan-only and a plan-less run.

    In `planned`, `conv2d/weights` is drawn at steps 0-3 and `conv2d/feature_maps` at 0 and 2
    (skipped at 1 and 3); `conv4/actmax` is skipped at 0 and 2 and never drawn. The second owner
    `maps` draws `conv2d/feature_maps` at step 3, where `cnnviz` skipped it, and gives no costs
    (as records written before costs were). `cnnviz` gives each drawn tag's cost: 0.25 s and
    1000 bytes times (step + 1), and where it drew feature maps their pass: 0.1 s times (step + 1).
    """
    writer = tf.summary.create_file_writer(str(logdir / PLAN_RUN))
    with writer.as_default():
        for step in range(4):
            summary.filter_weights("conv2d", kernel_at(0, step), step=step)
            acts = np.ones((1, 4, 4, 4), np.float32)
            if step in (0, 2, 3):
                summary.feature_maps("conv2d", acts, step=step)
            skipped = {"conv2d/feature_maps": f"budget at step {step}"} if step % 2 else {}
            if step in (0, 2):
                skipped["conv4/actmax"] = f"too slow at step {step}"
            drawn = ["conv2d/weights"] + ([] if step % 2 else ["conv2d/feature_maps"])
            summary.write_plan(
                "cnnviz",
                step,
                drawn=drawn,
                skipped=skipped,
                costs={
                    t: {"seconds": 0.25 * (step + 1), "bytes": 1000 * (step + 1)} for t in drawn
                },
                passes={} if step % 2 else {"feature_maps": 0.1 * (step + 1)},
                budget=0.05,
                train_seconds=10.0 * (step + 1),
                own_seconds=0.5 * (step + 1),
            )
        summary.write_plan("maps", 3, drawn=["conv2d/feature_maps"], own_seconds=0.25)
        write_blobs("broken/plan", [b"not json"], 0, PLAN_CONTENT)
        write_blobs(
            "broken/plan", [b'{"version": 1, "kind": "plan", "drawn": "x"}'], 1, PLAN_CONTENT
        )
        write_blobs("broken/plan", [b'{"version": 99, "kind": "plan"}'], 2, PLAN_CONTENT)
        bad_costs = b'{"version": 1, "kind": "plan", "costs": {"c/weights": {"seconds": "x"}}}'
        write_blobs("broken/plan", [bad_costs], 3, PLAN_CONTENT)
        write_blobs("broken/plan", [], 3, PLAN_CONTENT)
    writer.close()
    writer = tf.summary.create_file_writer(str(logdir / PLAN_ONLY_RUN))
    with writer.as_default():
        summary.write_plan("cnnviz", 0, skipped={"conv2d/weights": "nothing fits"}, budget=None)
    writer.close()
    write_run(logdir, NO_PLAN_RUN, 0, steps=2)


@pytest.fixture(scope="module")
def plan_provider(tmp_path_factory):
    """A logdir written by `write_plan_runs` behind TensorBoard's Python data provider."""
    path = tmp_path_factory.mktemp("plans")
    write_plan_runs(path)
    return make_provider(path)


@pytest.fixture(scope="module")
def plan_client(plan_provider) -> werkzeug.test.Client:
    """The app over the plan logdir."""
    return make_client(plan_provider, {"cnnviz": 0})


def test_plan_merges_owners_and_steps(plan_client):
    """/plan merges every owner's records by step, ascending; drawn wins over skipped; a step's
    shared passes are given where its records give any."""
    body = get_json(plan_client, "plan", run=PLAN_RUN)
    assert body["run"] == PLAN_RUN
    assert body["steps"] == [
        {
            "step": 0,
            "drawn": ["conv2d/weights", "conv2d/feature_maps"],
            "skipped": {"conv4/actmax": "too slow at step 0"},
            "costs": {
                "conv2d/feature_maps": {"seconds": 0.25, "bytes": 1000},
                "conv2d/weights": {"seconds": 0.25, "bytes": 1000},
            },
            "passes": {"feature_maps": {"seconds": 0.1}},
        },
        {
            "step": 1,
            "drawn": ["conv2d/weights"],
            "skipped": {"conv2d/feature_maps": "budget at step 1"},
            "costs": {"conv2d/weights": {"seconds": 0.5, "bytes": 2000}},
        },
        {
            "step": 2,
            "drawn": ["conv2d/weights", "conv2d/feature_maps"],
            "skipped": {"conv4/actmax": "too slow at step 2"},
            "costs": {
                "conv2d/feature_maps": {"seconds": 0.75, "bytes": 3000},
                "conv2d/weights": {"seconds": 0.75, "bytes": 3000},
            },
            "passes": {"feature_maps": {"seconds": 0.3}},
        },
        {
            "step": 3,
            "drawn": ["conv2d/weights", "conv2d/feature_maps"],
            "skipped": {},
            "costs": {"conv2d/weights": {"seconds": 1.0, "bytes": 4000}},
        },
    ]


def test_plan_costs_give_each_tags_latest_with_its_step(plan_client):
    """The top-level costs hold each drawn tag's latest measured cost and the step it is of."""
    body = get_json(plan_client, "plan", run=PLAN_RUN)
    assert body["costs"] == {
        "conv2d/feature_maps": {"seconds": 0.75, "bytes": 3000, "step": 2},
        "conv2d/weights": {"seconds": 1.0, "bytes": 4000, "step": 3},
    }


def test_plan_left_out_and_latest_numbers(plan_client):
    """left_out holds tags never drawn with their latest reason; numbers come from the latest."""
    body = get_json(plan_client, "plan", run=PLAN_RUN)
    assert body["left_out"] == {"conv4/actmax": "too slow at step 2"}
    assert body["budget"] == 0.05
    assert body["train_seconds"] == 40.0
    assert body["own_seconds"] == 2.0 + 0.25  # each owner's latest, added up


def test_plan_tags_are_not_picture_tags(plan_client):
    """/tags never lists plan tags; /runs still lists a run that holds only plan records."""
    tags = get_json(plan_client, "tags")
    assert set(tags) == {PLAN_RUN, NO_PLAN_RUN}
    assert set(tags[PLAN_RUN]) == {"conv2d/weights", "conv2d/feature_maps"}
    assert get_json(plan_client, "runs") == sorted([PLAN_RUN, PLAN_ONLY_RUN, NO_PLAN_RUN])
    assert get_json(plan_client, "tags", run=PLAN_ONLY_RUN) == {}


def test_plan_of_a_run_with_only_plans(plan_client):
    """A run without pictures still answers its plan: everything it skipped is left out."""
    body = get_json(plan_client, "plan", run=PLAN_ONLY_RUN)
    assert body["left_out"] == {"conv2d/weights": "nothing fits"}
    assert body["budget"] is None and body["own_seconds"] is None


def test_plan_of_a_run_without_plans_is_empty(plan_client):
    """A run logged before plans existed answers 200 with no steps, nothing left out, nulls."""
    assert get_json(plan_client, "plan", run=NO_PLAN_RUN) == {
        "run": NO_PLAN_RUN,
        "budget": None,
        "steps": [],
        "costs": {},
        "left_out": {},
        "train_seconds": None,
        "own_seconds": None,
    }


def test_plan_unknown_run_is_404_and_missing_run_is_400(plan_client):
    """/plan of an unknown run is a JSON 404 listing the runs; without run= it is a 400."""
    error = get_json(plan_client, "plan", expect=404, run="ghost")["error"]
    assert "'ghost'" in error and f"'{PLAN_RUN}'" in error
    assert "run" in get_json(plan_client, "plan", expect=400)["error"]


def test_plan_skips_malformed_and_newer_records(plan_provider, monkeypatch, caplog):
    """Broken plan blobs (not JSON, wrong types, newer, empty) are skipped with one warning each."""
    monkeypatch.setattr(metadata, "_warned_versions", set())
    client = make_client(plan_provider, {"cnnviz": 0})
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            body = get_json(client, "plan", run=PLAN_RUN)
    assert [s["step"] for s in body["steps"]] == [0, 1, 2, 3]
    assert body["left_out"] == {"conv4/actmax": "too slow at step 2"}
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "plan records" in m]) == 1  # malformed, once per run
    assert len([m for m in messages if "format version 99" in m]) == 1


@pytest.mark.parametrize(
    "passes", [[0.1], {"feature_maps": 0.1}, {"feature_maps": {"seconds": "x"}}]
)
def test_plan_records_with_malformed_passes_are_refused_saying_so(passes):
    """A plan record whose passes are not {kind: {seconds}} is malformed, and says which part."""
    from tb_cnnviz.plugin.plans import check_plan

    with pytest.raises(ValueError, match="'passes' must map kinds to"):
        check_plan({"kind": "plan", "passes": passes})


def test_plan_passes_add_up_across_owners_and_take_each_owners_latest():
    """Two owners' passes at one step add up, as their own seconds do; an owner that wrote the
    step twice (a resumed run) counts with its latest record only."""
    from types import SimpleNamespace

    from tb_cnnviz.plugin.plans import merge_plans

    def record(tag, wall, seconds):
        datum = SimpleNamespace(step=2, wall_time=wall)
        plan = {"drawn": [], "skipped": {}, "passes": {"feature_maps": {"seconds": seconds}}}
        return tag, datum, plan

    records = [record("a/plan", 1.0, 0.5), record("a/plan", 2.0, 0.25), record("b/plan", 1.5, 0.1)]
    [step] = merge_plans(records, set())["steps"]
    assert step["passes"] == {"feature_maps": {"seconds": 0.35}}


def test_plan_records_are_decoded_once(plan_provider, monkeypatch):
    """A second /plan decodes no plan blob again: records are cached like index blobs."""
    client = make_client(plan_provider, {"cnnviz": 0})
    calls = []
    real = metadata.decode_index
    monkeypatch.setattr(metadata, "decode_index", lambda b: calls.append(1) or real(b))
    first = get_json(client, "plan", run=PLAN_RUN)
    count = len(calls)
    assert count >= 5 and get_json(client, "plan", run=PLAN_RUN) == first
    assert len(calls) == count


# Sampling: every logged step, whatever TensorBoard's hint.


@pytest.mark.parametrize("hints", [{"cnnviz": 0}, {}, None, {"images": 3}])
def test_sampling_hint_zero_or_absent_returns_every_step(provider, hints):
    """A hint of 0 ("keep all", TensorBoard #5550) or no hint reads every stored step."""
    client = make_client(provider, hints)
    tags = get_json(client, "tags", run="alpha")["alpha"]
    assert tags["conv2d/weights"]["steps"] == list(range(STEPS))
    assert get_json(client, "layer", run="alpha", tag="conv2d/weights", step="0")["step"] == 0


def test_explicit_positive_hint_is_honoured(provider):
    """--samples_per_plugin=cnnviz=5 reads 5 steps, always including the latest."""
    steps = get_json(make_client(provider, {"cnnviz": 5}), "tags")["alpha"]["conv2d/weights"]
    assert len(steps["steps"]) == 5 and steps["steps"][-1] == STEPS - 1


@pytest.mark.parametrize(
    "hints, want",
    [
        ({"cnnviz": 0}, 10**6),
        ({}, 10**6),
        (None, 10**6),
        ({"cnnviz": 7}, 7),
        ({"cnnviz": -3}, 10**6),
        ({"cnnviz": "7"}, 10**6),
        ({"cnnviz": True}, 10**6),
    ],
)
def test_read_downsample_never_returns_zero(hints, want):
    """read_downsample maps 0, nothing and nonsense to 'every point' and keeps positive ints."""
    assert plugin.read_downsample(hints) == want


# TensorBoard's own flags and loaders, end to end.


def tensorboard_flags(*argv):
    """Flags exactly as the `tensorboard` command parses them, with our loader's fix_flags run."""
    tb = program.TensorBoard(plugins=[core_plugin.CorePluginLoader(), plugin.CNNVizLoader()])
    tb.configure(argv=["", *argv])
    return tb.flags


@pytest.mark.parametrize(
    "argv, want",
    [
        ([], {"cnnviz": 0}),
        (["--samples_per_plugin=images=3"], {"images": 3, "cnnviz": 0}),
        (["--samples_per_plugin=cnnviz=25"], {"cnnviz": 25}),
        (["--samples_per_plugin", "images=1,cnnviz=0"], {"images": 1, "cnnviz": 0}),
    ],
)
def test_fix_flags_defaults_to_every_step_and_keeps_user_values(tmp_path, argv, want):
    """On TensorBoard's parsed flags, cnnviz defaults to 0 (all) and a user's value is kept."""
    assert tensorboard_flags("--logdir", str(tmp_path), *argv).samples_per_plugin == want


def test_fix_flags_accepts_a_string_from_configure_kwargs(tmp_path):
    """configure(samples_per_plugin="...") passes a raw string; it becomes the dict TB expects."""
    tb = program.TensorBoard(plugins=[core_plugin.CorePluginLoader(), plugin.CNNVizLoader()])
    tb.configure(argv=["", "--logdir", str(tmp_path)], samples_per_plugin="images=2")
    assert tb.flags.samples_per_plugin == {"images": 2, "cnnviz": 0}
    with pytest.raises(base_plugin.FlagsError, match="name=count"):
        tb.configure(argv=["", "--logdir", str(tmp_path)], samples_per_plugin="images")


def test_entry_point_registers_the_loader():
    """TensorBoard's plugin discovery finds CNNVizLoader through the tensorboard_plugins group."""
    from importlib import metadata as importlib_metadata

    points = importlib_metadata.entry_points(group="tensorboard_plugins")
    assert any(p.value == "tb_cnnviz.plugin:CNNVizLoader" for p in points)


@pytest.mark.parametrize(
    "samples, want_steps", [([], STEPS), (["--samples_per_plugin=cnnviz=5"], 5)]
)
def test_python_loader_end_to_end_keeps_every_step(logdir, samples, want_steps):
    """With --load_fast=false, TensorBoard's own ingester plus fix_flags keeps all 15 steps."""
    flags = tensorboard_flags(
        "--logdir",
        str(logdir),
        "--load_fast=false",
        "--reload_task=blocking",
        "--reload_interval=0",
        *samples,
    )
    ingester = data_ingester.LocalDataIngester(flags)
    ingester.start()
    app = application.TensorBoardWSGIApp(
        flags,
        [plugin.CNNVizLoader()],
        ingester.data_provider,
        None,
        ingester.deprecated_multiplexer,
    )
    client = werkzeug.test.Client(app, Response)
    steps = get_json(client, "tags", run="alpha")["alpha"]["conv2d/weights"]["steps"]
    assert len(steps) == want_steps and steps[-1] == STEPS - 1


def test_rust_data_server_end_to_end(logdir):
    """With --load_fast=true, the Rust data server keeps and serves all 15 steps and their blobs."""
    try:
        binary = server_ingester.get_server_binary()
    except server_ingester.NoDataServerError as e:
        pytest.skip(f"no Rust data server on this platform: {e}")
    flags = tensorboard_flags("--logdir", str(logdir), "--load_fast=true")
    ingester = server_ingester.SubprocessServerDataIngester(
        server_binary=binary,
        logdir=str(logdir),
        reload_interval=0,  # load once
        channel_creds_type=flags.grpc_creds_type,
        samples_per_plugin=flags.samples_per_plugin,
    )
    ingester.start()
    try:
        app = application.TensorBoardWSGIApp(flags, [plugin.CNNVizLoader()], ingester.data_provider)
        client = werkzeug.test.Client(app, Response)
        deadline = time.monotonic() + 30
        while True:  # the server loads in the background
            tags = client.get(PREFIX + "tags").get_json()
            done = all(
                len(tags.get(run, {}).get(tag, {}).get("steps", [])) == STEPS
                for run in RUNS
                for tag in ("conv2d/weights", "conv2d/feature_maps")
            )
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert tags[RUNS[1]]["conv2d/weights"]["steps"] == list(range(STEPS))
        assert "newer_tag/weights" not in tags[ODD_RUN]
        body = get_json(client, "layer", run=RUNS[1], tag="conv2d/weights", step="4")
        png = client.get(PREFIX + body["atlases"][0])
        assert png.mimetype == "image/png"
        got = tiles.unpack_tiles(
            [(png.get_data(), body["index"]["atlases"][0]["cols"])],
            (3, 3, 1),
            body["index"]["ranges"],
        )[..., 0]
        want = kernel_at(1, 4).transpose(3, 2, 0, 1).reshape(-1, 3, 3)
        assert np.abs(got - want).max() <= np.ptp(want) / 255 + 1e-6
        assert get_json(client, "stats", run="alpha", tag="conv2d/weights")["steps"] == list(
            range(STEPS)
        )
        assert get_json(client, "blob", expect=404, key="nope")["error"]
        assert get_json(client, "layer", expect=404, run="ghost", tag="x")["error"]
        assert get_json(client, "layer", run=ODD_RUN, tag="empty/weights")["index"] is None
    finally:
        ingester._stdin_handle.close()  # the server exits when its stdin closes


# Robustness.


def test_bare_route_apps_answer_json_errors(provider):
    """Route apps called outside TensorBoardWSGI still answer 400/404 JSON, never raise."""
    apps = plugin.CNNVizPlugin(
        base_plugin.TBContext(data_provider=provider, sampling_hints={})
    ).get_plugin_apps()
    layer = werkzeug.test.Client(apps["/layer"], Response)
    assert layer.get("/layer?run=alpha&tag=conv2d/weights&step=x").status_code == 400
    response = layer.get("/layer?run=ghost&tag=x")
    assert response.status_code == 404 and "error" in response.get_json()
    assert layer.get("/layer?run=alpha&tag=conv2d/weights").status_code == 200
    static = werkzeug.test.Client(apps["/static/*"], Response)
    assert static.get("/static/../plugin.py").status_code == 404
    assert static.get("/static/index.js").status_code == 200
    blob = werkzeug.test.Client(apps["/blob"], Response)
    assert blob.get("/blob?key=%%%").status_code == 404
    plan = werkzeug.test.Client(apps["/plan"], Response)
    assert plan.get("/plan").status_code == 400
    assert plan.get("/plan?run=ghost").status_code == 404
    assert plan.get("/plan?run=alpha").get_json()["steps"] == []


def test_plugin_serves_without_tensorflow(logdir):
    """In a process where TensorFlow cannot be imported, the plugin imports and serves, and
    tb_cnnviz.reader reads the same logdir."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["tensorflow"] = None  # importing TensorFlow now fails
        import werkzeug.test
        from werkzeug.wrappers import Response
        from tensorboard.backend import application
        from tensorboard.backend.event_processing import data_provider
        from tensorboard.backend.event_processing import plugin_event_multiplexer
        from tensorboard.plugins import base_plugin
        from tb_cnnviz import plugin, reader

        mux = plugin_event_multiplexer.EventMultiplexer()
        mux.AddRunsFromDirectory({str(logdir)!r})
        mux.Reload()
        provider = data_provider.MultiplexerDataProvider(mux, {str(logdir)!r})
        ctx = base_plugin.TBContext(data_provider=provider, sampling_hints={{"cnnviz": 0}})
        app = application.TensorBoardWSGI([plugin.CNNVizPlugin(ctx)], data_provider=provider)
        client = werkzeug.test.Client(app, Response)
        tags = client.get("{PREFIX}tags").get_json()
        layer = client.get("{PREFIX}layer?run=alpha&tag=conv2d/weights&step=3").get_json()
        blob = client.get("{PREFIX}" + layer["atlases"][0])
        assert client.get("{PREFIX}plan?run=alpha").get_json()["left_out"] == {{}}
        read = reader.Logdir({str(logdir)!r}).read("alpha", "conv2d", "weights", 3)
        assert read.filters and read.tiles.size
        assert sys.modules["tensorflow"] is None
        print(len(tags["alpha"]["conv2d/weights"]["steps"]), blob.mimetype)
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(STEPS), "image/png"]


def test_concurrent_requests_all_succeed(client):
    """8 threads x 50 mixed requests against one app all succeed with the right answers."""
    body = client.get(layer_url("alpha", "conv2d/weights", 5)).get_json()
    urls = [
        PREFIX + "tags",
        PREFIX + "runs",
        layer_url("alpha", "conv2d/weights", 5),
        layer_url(RUNS[1], "conv2d/feature_maps"),
        PREFIX + "stats?run=alpha&tag=conv2d/weights",
        PREFIX + body["atlases"][0],
    ]
    app = client.application

    def worker(seed):
        """Sends 50 requests in a rotation that starts at `seed`; returns their statuses."""
        local = werkzeug.test.Client(app, Response)  # one client per thread, like browsers
        statuses = []
        for i in range(50):
            url = urls[(seed + i) % len(urls)]
            response = local.get(url)
            statuses.append(response.status_code)
            if url == urls[2]:
                assert response.get_json()["step"] == 5
        return statuses

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = [s for result in pool.map(worker, range(8)) for s in result]
    assert statuses == [200] * 400


def test_truncated_and_corrupted_event_files_do_not_hide_good_data(tmp_path):
    """A truncated event file and a garbage one next to a good run: the good data is served."""
    write_run(tmp_path, "good", 0, steps=4)
    write_run(tmp_path, "truncated", 1, steps=4)
    (event_file,) = (tmp_path / "truncated").iterdir()
    data = event_file.read_bytes()
    event_file.write_bytes(data[: len(data) * 2 // 3])  # cut mid-record
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "events.out.tfevents.0.garbage").write_bytes(os.urandom(5000))
    (tmp_path / "good" / "events.out.tfevents.1.empty").write_bytes(b"")

    client = make_client(make_provider(tmp_path), {"cnnviz": 0})
    tags = get_json(client, "tags")
    assert tags["good"]["conv2d/weights"]["steps"] == [0, 1, 2, 3]
    assert "truncated" in tags  # what was fully written before the cut is kept
    for run, series_by_tag in tags.items():
        for tag, series in series_by_tag.items():
            for step in series["steps"]:
                get_json(client, "layer", run=run, tag=tag, step=str(step))
            get_json(client, "stats", run=run, tag=tag)


def test_lru_cache_is_bounded():
    """The caches drop the least recently used entries beyond their size or entry bound."""
    cache = LRUCache(max_size=100, max_entries=3)
    for key in "abc":
        cache.put(key, key.upper(), 10)
    assert cache.get("a") == "A"  # now most recently used
    cache.put("d", "D", 10)
    assert cache.get("b") is None and cache.get("a") == "A"
    cache.put("big", "BIG", 95)
    assert cache.get("big") == "BIG" and cache.get("a") is None and cache.get("d") is None


def test_steps_logged_while_serving_appear_at_once(tmp_path, monkeypatch):
    """A step written after the app cached a run's steps is listed and served on the next read."""
    write_run(tmp_path, "live", 0, steps=3)
    mux = multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    client = make_client(data_provider.MultiplexerDataProvider(mux, str(tmp_path)), {"cnnviz": 0})
    assert get_json(client, "layer", run="live", tag="conv2d/weights")["step"] == 2
    get_json(client, "layer", expect=404, run="live", tag="conv2d/weights", step="4")

    # A live run's later event file is made seconds later, so its name (which starts with the
    # time in seconds) sorts after the first; TensorBoard's loader reads files in name order
    # and skips one that sorts earlier (within one second, a writer counter of 10 sorts
    # before 9).
    time.sleep(1.1)
    writer = tf.summary.create_file_writer(str(tmp_path / "live"), filename_suffix=".more")
    with writer.as_default():
        for step in (3, 4):
            summary.filter_weights("conv2d", kernel_at(0, step), step=step)
    writer.close()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()

    assert get_json(client, "tags")["live"]["conv2d/weights"]["steps"] == [0, 1, 2, 3, 4]
    assert get_json(client, "layer", run="live", tag="conv2d/weights", step="4")["step"] == 4
    monkeypatch.setattr(plugin.data, "SERIES_FRESH_SECONDS", 0.0)  # as if two seconds went by
    assert get_json(client, "layer", run="live", tag="conv2d/weights")["step"] == 4
    assert get_json(client, "stats", run="live", tag="conv2d/weights")["steps"] == [0, 1, 2, 3, 4]


def test_tags_reread_only_the_series_that_changed(tmp_path, monkeypatch):
    """A repeated /tags reads no steps; after new data, only the changed (run, tag) is read."""
    write_run(tmp_path, "live", 0, steps=3)
    write_run(tmp_path, "done", 1, steps=3)
    mux = multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(tmp_path))
    client = make_client(provider, {"cnnviz": 0})
    reads = []
    real = provider.read_blob_sequences

    def spy(ctx, **kwargs):
        wanted = kwargs.get("run_tag_filter")
        reads.append(wanted and (sorted(wanted.runs), sorted(wanted.tags)))
        return real(ctx, **kwargs)

    monkeypatch.setattr(provider, "read_blob_sequences", spy)
    first = client.get(PREFIX + "tags").get_data()
    assert reads == [None]  # everything, in one read
    assert client.get(PREFIX + "tags").get_data() == first
    assert reads == [None]  # the same listing: the same answer, nothing read

    time.sleep(1.1)  # a later file name (see test_steps_logged_while_serving_appear_at_once)
    writer = tf.summary.create_file_writer(str(tmp_path / "live"), filename_suffix=".more")
    with writer.as_default():
        summary.filter_weights("conv2d", kernel_at(0, 3), step=3)
    writer.close()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    tags = get_json(client, "tags")
    assert reads == [None, (["live"], ["conv2d/weights"])]
    assert tags["live"]["conv2d/weights"]["steps"] == [0, 1, 2, 3]
    assert tags["live"]["conv2d/feature_maps"]["steps"] == [0, 1, 2]
    assert tags["done"]["conv2d/weights"]["steps"] == [0, 1, 2]
    # The read warmed /layer: the new step is served without another read.
    assert get_json(client, "layer", run="live", tag="conv2d/weights", step="3")["step"] == 3
    assert len(reads) == 2


def test_repeated_layer_reads_hit_the_cache(provider, monkeypatch):
    """A second /layer request for the same step decodes no index blob again."""
    client = make_client(provider, {"cnnviz": 0})
    calls = []
    real = metadata.decode_index
    monkeypatch.setattr(metadata, "decode_index", lambda b: calls.append(1) or real(b))
    first = client.get(layer_url("alpha", "conv2d/weights", 9)).get_json()
    second = client.get(layer_url("alpha", "conv2d/weights", 9)).get_json()
    assert first == second and len(calls) == 1


# Fuzzing every route with random query strings.

_QUERY_ALPHABET = st.sampled_from(
    list("ab09=&%+;./\\ ")
    + [
        "%2e",
        "%2f",
        "%ff",
        "%00",
        "%c3%a9",
        "é",
        "<",
        "run",
        "tag",
        "step",
        "key",
        "alpha",
        "conv2d/weights",
        "-1",
        "99",
    ]
)


@hypothesis.settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(
    route=st.sampled_from(
        [
            *("runs", "tags", "layer", "blob", "stats", "plan", "index.js", "static/"),
            *("similarity", "alignment", "examples"),
        ]
    ),
    query=st.lists(_QUERY_ALPHABET, max_size=12).map("".join),
    path=st.lists(_QUERY_ALPHABET, max_size=6).map("".join),
)
def test_random_requests_never_500_nor_leak_source(client, route, query, path):
    """Any query string on any route (and any static path) answers < 500, never a .py file."""
    environ = werkzeug.test.EnvironBuilder(path=PREFIX + route).get_environ()
    environ["QUERY_STRING"] = query.encode("utf-8").decode("latin-1")
    if route == "static/":
        environ["PATH_INFO"] = PREFIX + "static/" + path
    response = Response.from_app(client.application, environ)
    assert response.status_code < 500, response.get_data(as_text=True)
    assert PLUGIN_SOURCE not in response.get_data()
    assert b"import " not in response.get_data() or response.mimetype == "text/javascript"
    if response.status_code == 200 and route == "static/":
        assert response.mimetype in (
            "text/javascript",
            "text/css",
            "image/svg+xml",
            "image/png",
            "text/html",
        )


def test_tags_pass_static_facts_through_without_shadowing(tmp_path, read_logdir):
    """Static facts a writer stored (class names) appear in /tags; kind and layer still win."""
    import tensorflow as tf

    def build():
        pictures = np.zeros((1, 1, 2, 2, 1))
        return pictures, {"axis": "image", "count": 1, "total": 1}, {}, {}, []

    writer = tf.summary.create_file_writer(str(tmp_path / "run"))
    with writer.as_default():
        summary.write_layer(
            "attribution", "gradcam", build, [0], 1, step=0, class_names=["cat", "dog"]
        )
    writer.close()
    tags = read_logdir(tmp_path).client().get("/data/plugin/cnnviz/tags").get_json()
    info = tags["run"]["gradcam/attribution"]
    assert info["class_names"] == ["cat", "dog"]
    assert info["kind"] == "attribution" and info["layer"] == "gradcam" and info["steps"] == [0]
