"""The CNN Viz tab as shipped: plain JS and CSS within DESIGN.md's budget, and nothing remote."""

from __future__ import annotations

import pathlib
import re

from tb_cnnviz import frontend

FRONTEND = pathlib.Path(frontend.__file__).parent
SHIPPED = sorted([*FRONTEND.glob("*.js"), *FRONTEND.glob("*.css")])
BUDGET = 100 * 1024  # DESIGN.md section 7: "frontend code shipped <= 100 KB, no third-party JS"
#: Module specifiers: `import … from "x"`, `export … from "x"`, `import "x"`, `import("x")`.
JS_SPECIFIER = re.compile(r"""\b(?:from|import)\s*\(?\s*(["'])([^"']+)\1""")
#: What a stylesheet loads: `@import "x"`, `@import url(x)`, any `url(x)`.
CSS_URL = re.compile(r"""@import\s+(["'])([^"']+)\1|url\(\s*["']?([^"')]+)""")
REMOTE = re.compile(r"^(?:/|[a-z][a-z0-9+.-]*:)", re.IGNORECASE)  # /x, //cdn/x, http(s)://x


def test_shipped_frontend_is_at_most_100_kib():
    """Every .js and .css file of the frontend together weighs at most 100 KiB."""
    sizes = {path.name: path.stat().st_size for path in SHIPPED}
    assert {"index.js", "style.css"} <= sizes.keys()
    assert sum(sizes.values()) <= BUDGET, f"{sum(sizes.values())} bytes > {BUDGET}: {sizes}"


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
