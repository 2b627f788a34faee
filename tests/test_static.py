"""`tb_cnnviz.plugin.static`: the dashboard's files as served, whole-line comments left out."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
from tensorboard import errors

from tb_cnnviz.plugin import static

FRONTEND = static.frontend_dir()
SCRIPTS = sorted(FRONTEND.glob("*.js"))
# Parses each source given (as JSON on stdin) as an ES module with V8; prints one verdict each.
PARSE = """
const vm = require("node:vm")
const sources = JSON.parse(require("node:fs").readFileSync(0, "utf8"))
console.log(JSON.stringify(sources.map((s) => {
	try { new vm.SourceTextModule(s); return true } catch (e) { return e.name }
})))
"""


def v8_parses(sources: list[str]) -> list:
    """V8's verdict on each source as an ES module: True, or the error's name."""
    done = subprocess.run(
        ["node", "--experimental-vm-modules", "--no-warnings", "-e", PARSE],
        input=json.dumps(sources),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout)


def removed(text: str, language: str = "js") -> list[str]:
    """The text of each span `comment_spans` finds."""
    return [text[a:b] for a, b in static.comment_spans(text, language)]


@pytest.mark.parametrize(
    "source, expected",
    [
        ("// a\nf()\n", ["// a\n"]),
        ("  /** a\n   * b */\nf()", ["  /** a\n   * b */\n"]),
        ("f() // after code\n/* x */ g()\n", []),
        ("const s = 'x\\\n// inside a continued string'\n", []),
        ('const s = "// not a comment"\n', []),
        ("const t = `\n// template text\n${a /* in code */}`\n", []),
        ("const t = `${`\n${b}\n// nested text`}\n// real`\n", []),
        ("const t = `${f({a: 1})}`\n// after\n", ["// after\n"]),
        ("const r = /[`'\"]\\/\\//g\n// after a regex\n", ["// after a regex\n"]),
        ("const q = a / b / c\n// after division\n", ["// after division\n"]),
        ("return /'/.test(x)\n// after\n", ["// after\n"]),
        ("x = a.in / 2 / `\n// text`\n", []),
        ("/* end */", ["/* end */"]),
    ],
)
def test_comment_spans_are_only_whole_line_comments_in_code(source, expected):
    """Strings, templates (nested), regexes and division hide comment-like text; lone lines go."""
    assert removed(source) == expected


def test_css_comments_and_strings():
    """In CSS only `/* */` blocks alone on their lines go; quoted text and `//` stay."""
    css = '/* a */\na { content: "/* no */"; }\n  /* b\n */\nb { x: url(//y) }\n'
    assert removed(css, "css") == ["/* a */\n", "  /* b\n */\n"]
    assert static.strip_comments(css, "css") == 'a { content: "/* no */"; }\nb { x: url(//y) }\n'


@pytest.mark.parametrize("source", ["'open", "`open ${a", "/* open", "x = /open\n"])
def test_unterminated_literals_are_refused(source):
    """A source the scanner cannot follow is an error, not a guess (it is then served as is)."""
    with pytest.raises(ValueError):
        static.comment_spans(source)


def test_every_shipped_module_stripped_is_the_same_code_by_v8():
    """Stripped, every module still parses; every removed span is a comment V8 reads as code.

    A span that is one `//` line or one `/* */` block (checked here), standing where V8 reads
    code (replacing it with `@`, a syntax error only in code, breaks the parse), is a comment
    token; removing whole comment lines leaves a line break between the tokens around them, so
    the token stream (automatic semicolons included) is the original's minus comments.
    """
    texts = {path.name: path.read_text(encoding="utf-8") for path in SCRIPTS}
    stripped, broken, count = [], [], 0
    for name, text in texts.items():
        spans = static.comment_spans(text)
        assert spans, f"{name} has no whole-line comment"  # the scanner does find them
        stripped.append(static.strip_comments(text))
        for a, b in spans:
            body = text[a:b].strip()
            assert re.fullmatch(r"//[^\n]*", body) or (
                body.startswith("/*") and body.index("*/") == len(body) - 2
            ), (name, body)
            broken.append(text[:a] + "@\n" + text[b:])
            count += 1
    assert v8_parses(stripped) == [True] * len(stripped)
    assert v8_parses(list(texts.values())) == [True] * len(texts)  # the check itself can pass
    assert v8_parses(broken) == ["SyntaxError"] * count


def test_stylesheet_stripped_keeps_every_rule():
    """The stylesheet served keeps every rule: it equals the original with all comments gone."""
    css = (FRONTEND / "style.css").read_text(encoding="utf-8")
    assert not re.search(r"[\"'][^\"'\n]*/\*", css)  # no quoted `/*`, so a regex sees comments
    without = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    served = static.read_file("style.css")[0].decode("utf-8")
    assert len(served) < len(css)
    assert re.sub(r"\s+", "", re.sub(r"/\*.*?\*/", "", served, flags=re.DOTALL)) == re.sub(
        r"\s+", "", without
    )


def test_served_bytes_follow_the_file(tmp_path, monkeypatch):
    """The stripped bytes are kept per file and remade when the file changes."""
    (tmp_path / "a.js").write_text("// why\nexport const a = 1\n")
    monkeypatch.setattr(static, "frontend_dir", lambda: tmp_path)
    assert static.read_file("a.js") == (b"export const a = 1\n", "text/javascript")
    (tmp_path / "a.js").write_text("// why not\nexport const a = 22\n")
    later = time.time() + 5
    os.utime(tmp_path / "a.js", (later, later))
    assert static.read_file("a.js")[0] == b"export const a = 22\n"
    (tmp_path / "b.js").write_text("const s = 'open\n// x\n")  # not followable: served as is
    assert static.read_file("b.js")[0] == (tmp_path / "b.js").read_bytes()
    (tmp_path / "p.svg").write_text("<!-- kept --><svg/>")
    assert static.read_file("p.svg")[0] == b"<!-- kept --><svg/>"


def test_paths_outside_the_frontend_are_refused():
    """Traversal and unknown types are 404s whatever the stripping does."""
    for path in ["../plugin/app.py", "__init__.py", ".hidden.js", "a/../../x.js"]:
        with pytest.raises(errors.NotFoundError, match="no such file"):
            static.read_file(path)
    assert b"export" in static.read_file("index.js")[0]  # while the shipped file serves
