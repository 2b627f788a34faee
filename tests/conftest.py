"""Shared test helpers: read a real logdir back through TensorBoard's real data provider."""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Set (to anything) to run the suite as if TensorFlow were not installed, as on a JAX or
#: PyTorch machine: `import tensorflow` fails, so code that needs it anyway is found out.
HIDE_TENSORFLOW = "TB_CNNVIZ_HIDE_TENSORFLOW"


if os.environ.get(HIDE_TENSORFLOW):
    # `import tensorflow` raises ModuleNotFoundError and `importlib.util.find_spec` answers
    # None, as where it is not installed (PyTorch and Keras probe for it that way).
    sys.modules["tensorflow"] = None


def pytest_collection_modifyitems(config, items):
    """Skips tests marked `tensorflow` when Keras runs on another backend."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "tensorflow" and not os.environ.get(HIDE_TENSORFLOW):
        return
    skip = pytest.mark.skip(reason=f"needs TensorFlow; Keras backend is {backend}")
    for item in items:
        if item.get_closest_marker("tensorflow"):
            item.add_marker(skip)


class LogdirReader:
    """A logdir loaded through TensorBoard's `MultiplexerDataProvider`, as the plugin sees it."""

    def __init__(self, logdir):
        from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
        from tensorboard.plugins.base_plugin import TBContext  # noqa: F401  (imports the stack)

        self.logdir = str(logdir)
        # A reservoir of 0 keeps every step, like the plugin's default in TensorBoard.
        self.mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"cnnviz": 0})
        self.mux.AddRunsFromDirectory(self.logdir)
        self.mux.Reload()
        self.provider = data_provider.MultiplexerDataProvider(self.mux, self.logdir)

    @property
    def ctx(self):
        from tensorboard import context

        return context.RequestContext()

    def cnnviz_tags(self) -> set[tuple[str, str]]:
        """`(run, tag)` pairs of cnnviz blob sequences."""
        seqs = self.provider.list_blob_sequences(self.ctx, experiment_id="", plugin_name="cnnviz")
        return {(run, tag) for run, tags in seqs.items() for tag in tags}

    def scalar_tags(self) -> set[tuple[str, str]]:
        """`(run, tag)` pairs of scalars."""
        got = self.provider.list_scalars(self.ctx, experiment_id="", plugin_name="scalars")
        return {(run, tag) for run, tags in got.items() for tag in tags}

    def steps(self, run: str, tag: str) -> list[int]:
        """Every logged step of one cnnviz tag."""
        return [d.step for d in self.data(run, tag)]

    def datum(self, run: str, tag: str, step: int):
        """`(index, atlas_pngs)` of one step, decoded."""
        from tb_cnnviz import metadata

        [d] = [d for d in self.data(run, tag) if d.step == step]
        blobs = [self.provider.read_blob(self.ctx, blob_key=ref.blob_key) for ref in d.values]
        return metadata.decode_index(blobs[0]), blobs[1:]

    def scalars(self, run: str, tag: str) -> list[tuple[int, float]]:
        """`(step, value)` of one scalar series."""
        from tensorboard.data import provider as provider_lib

        got = self.provider.read_scalars(
            self.ctx,
            experiment_id="",
            plugin_name="scalars",
            downsample=10**6,
            run_tag_filter=provider_lib.RunTagFilter([run], [tag]),
        )
        return [(d.step, d.value) for d in got[run][tag]]

    def client(self):
        """A client of the real plugin WSGI app over this logdir."""
        return plugin_client(self)

    def data(self, run, tag):
        """Every logged datum of one cnnviz tag (TensorBoard's blob sequence), by step."""
        from tensorboard.data import provider as provider_lib

        got = self.provider.read_blob_sequences(
            self.ctx,
            experiment_id="",
            plugin_name="cnnviz",
            downsample=10**6,
            run_tag_filter=provider_lib.RunTagFilter([run], [tag]),
        )
        return got[run][tag]


@pytest.fixture
def read_logdir():
    """Returns a function that loads a logdir through TensorBoard's data provider."""
    return LogdirReader


def plugin_client(reader: LogdirReader):
    """A `werkzeug.test.Client` on the real CNN Viz plugin, served by TensorBoard's WSGI app."""
    import werkzeug.test
    import werkzeug.wrappers
    from tensorboard.backend import application
    from tensorboard.plugins import base_plugin

    from tb_cnnviz.plugin import CNNVizPlugin

    ctx = base_plugin.TBContext(
        logdir=reader.logdir, data_provider=reader.provider, sampling_hints={"cnnviz": 0}
    )
    app = application.TensorBoardWSGI([CNNVizPlugin(ctx)], data_provider=reader.provider)
    return werkzeug.test.Client(app, werkzeug.wrappers.Response)


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium under one Playwright for every browser test of the session.

    Playwright's sync API runs an event loop on the calling thread: a second `sync_playwright()`
    started while another is open there refuses to run ("inside the asyncio loop"), so browser
    test modules share this one instead of each starting their own.
    """
    from playwright.sync_api import sync_playwright
    from test_dashboard_e2e import CHROMIUM, CHROMIUM_ARGS, require_browser

    require_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
