"""The CNN Viz tab as shipped: plain JS and CSS within DESIGN.md's budget, and nothing remote."""

from __future__ import annotations

import pathlib
import re

from tb_cnnviz import frontend

FRONTEND = pathlib.Path(frontend.__file__).parent
SHIPPED = sorted([*FRONTEND.glob("*.js"), *FRONTEND.glob("*.css")])
#: DESIGN.md section 7: "frontend code shipped <= 48 KB gzip-compressed, no third-party JS".
#: What counts is what the browser downloads, so comments cost (almost) nothing.
BUDGET = 48 * 1024
#: Module specifiers: `import … from "x"`, `export … from "x"`, `import "x"`, `import("x")`.
JS_SPECIFIER = re.compile(r"""\b(?:from|import)\s*\(?\s*(["'])([^"']+)\1""")
#: What a stylesheet loads: `@import "x"`, `@import url(x)`, any `url(x)`.
CSS_URL = re.compile(r"""@import\s+(["'])([^"']+)\1|url\(\s*["']?([^"')]+)""")
REMOTE = re.compile(r"^(?:/|[a-z][a-z0-9+.-]*:)", re.IGNORECASE)  # /x, //cdn/x, http(s)://x


def downloaded_bytes(path: pathlib.Path) -> int:
    """Bytes the browser downloads for one shipped file: the body TensorBoard's own `Respond`
    sends a browser that accepts gzip (it compresses text as it serves it)."""
    from tensorboard.backend import http_util
    from werkzeug.test import EnvironBuilder

    request = EnvironBuilder(headers={"Accept-Encoding": "gzip, deflate"}).get_request()
    kind = "text/css" if path.suffix == ".css" else "text/javascript"
    response = http_util.Respond(request, path.read_bytes(), kind)
    assert response.headers.get("Content-Encoding") == "gzip"
    return len(response.get_data())


def test_shipped_frontend_downloads_at_most_48_kib_compressed():
    """Every .js and .css file of the frontend together downloads as at most 48 KiB (gzip)."""
    sizes = {path.name: downloaded_bytes(path) for path in SHIPPED}
    assert {"index.js", "style.css"} <= sizes.keys()
    assert sum(sizes.values()) <= BUDGET, f"{sum(sizes.values())} bytes > {BUDGET}: {sizes}"
    raw = sum(path.stat().st_size for path in SHIPPED)
    assert sum(sizes.values()) < raw / 2  # it is the compressed size that is measured


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
