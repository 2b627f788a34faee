"""The CNN Viz tab as shipped: plain JS and CSS within DESIGN.md's budget, and nothing remote."""

from __future__ import annotations

import gzip
import pathlib
import re

import pytest
import werkzeug.test
import werkzeug.wrappers

from tb_cnnviz import frontend

FRONTEND = pathlib.Path(frontend.__file__).parent
SHIPPED = sorted([*FRONTEND.glob("*.js"), *FRONTEND.glob("*.css")])
#: DESIGN.md section 7: "frontend code shipped <= 48 KB gzip-compressed, no third-party JS".
#: What counts is what the browser downloads: the plugin serves the files without their
#: whole-line comments (`tb_cnnviz.plugin.static`), so those cost nothing.
BUDGET = 48 * 1024
#: Module specifiers: `import … from "x"`, `export … from "x"`, `import "x"`, `import("x")`.
JS_SPECIFIER = re.compile(r"""\b(?:from|import)\s*\(?\s*(["'])([^"']+)\1""")
#: What a stylesheet loads: `@import "x"`, `@import url(x)`, any `url(x)`.
CSS_URL = re.compile(r"""@import\s+(["'])([^"']+)\1|url\(\s*["']?([^"')]+)""")
REMOTE = re.compile(r"^(?:/|[a-z][a-z0-9+.-]*:)", re.IGNORECASE)  # /x, //cdn/x, http(s)://x


@pytest.fixture(scope="module")
def tensorboard_app(tmp_path_factory):
    """TensorBoard's WSGI app with the plugin, as `tensorboard` builds it (empty logdir)."""
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as multiplexer
    from tensorboard.plugins import base_plugin

    from tb_cnnviz import plugin

    logdir = str(tmp_path_factory.mktemp("logdir"))
    mux = multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    context = base_plugin.TBContext(logdir=logdir, data_provider=provider, sampling_hints={})
    return application.TensorBoardWSGI([plugin.CNNVizPlugin(context)], data_provider=provider)


def downloaded_bytes(app, path: pathlib.Path) -> int:
    """Bytes the browser downloads for one shipped file: the gzip body the plugin's own route
    (`/index.js` or `/static/<name>`) sends through TensorBoard's app to a browser accepting it."""
    route = "index.js" if path.name == "index.js" else f"static/{path.name}"
    client = werkzeug.test.Client(app, werkzeug.wrappers.Response)
    response = client.get(
        f"/data/plugin/cnnviz/{route}", headers={"Accept-Encoding": "gzip, deflate"}
    )
    assert response.status_code == 200, route
    assert response.headers.get("Content-Encoding") == "gzip"
    return len(response.get_data())


def test_shipped_frontend_downloads_at_most_48_kib_compressed(tensorboard_app):
    """Every .js and .css file of the frontend, as served, downloads as at most 48 KiB (gzip)."""
    sizes = {path.name: downloaded_bytes(tensorboard_app, path) for path in SHIPPED}
    assert {"index.js", "style.css"} <= sizes.keys()
    assert sum(sizes.values()) <= BUDGET, f"{sum(sizes.values())} bytes > {BUDGET}: {sizes}"
    raw = sum(len(gzip.compress(path.read_bytes(), 9)) for path in SHIPPED)
    assert sum(sizes.values()) < raw  # served without comments: less than the files' own gzip


def test_frontend_loads_nothing_from_absolute_or_remote_urls():
    """The frontend imports only its own shipped files, by relative URL: no CDN, no third party."""
    specifiers = {}
    for path in SHIPPED:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".js":
            found = [m.group(2) for m in JS_SPECIFIER.finditer(text)]
            bad = [s for s in found if not s.startswith(("./", "../"))]
        else:
            found = [m.group(2) or m.group(3) for m in CSS_URL.finditer(text)]
            bad = [u for u in found if REMOTE.match(u.strip())]
        specifiers[path.name] = found
        assert not bad, f"{path.name} loads {bad}"
    assert "./static/controller.js" in specifiers["index.js"]  # the pattern does see imports
    # index.js is served at the plugin's root and imports through its /static route; the other
    # modules are served from /static and import their siblings. Each import names a shipped file.
    shipped = {path.name for path in SHIPPED}
    for name, found in specifiers.items():
        prefix = "./static/" if name == "index.js" else "./"
        for spec in found if name.endswith(".js") else []:
            assert spec.startswith(prefix) and spec.removeprefix(prefix) in shipped, (name, spec)
