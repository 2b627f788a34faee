"""The dashboard's own files (`tb_cnnviz.frontend`), served by `/index.js` and `/static/*`.

Only `.js`, `.css`, `.svg`, `.png` and `.html` files are served, by a path made of plain names
(no `..`, no hidden files, no absolute paths or backslashes) that stays inside the folder after
resolving symlinks. The MIME type comes from the extension, never from `mimetypes` (which reads
the Windows registry).

JavaScript and CSS are served without the comments that stand alone on their lines
(`strip_comments`), so the comments that explain the code cost the browser nothing; the
stripped bytes are kept per file and made again when the file changes (its mtime or size).
"""

from __future__ import annotations

import pathlib
import re
import threading

from tensorboard import errors

from tb_cnnviz import metadata

__all__ = ["PREFIXES", "comment_spans", "frontend_dir", "read_file", "strip_comments"]

_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".html": "text/html",
}
# One path segment: no leading dot (so no "..", no hidden files), no separators.
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
#: The paths `/static/*` is reached by: TensorBoard passes the full path, a bare app its own.
PREFIXES = (f"/data/plugin/{metadata.PLUGIN_NAME}/static/", "/static/")
#: Languages whose comments are left out of the served bytes, by extension.
_STRIPPED = {".js": "js", ".css": "css"}
# path -> ((mtime_ns, size), served bytes); a handful of files, so no bound is needed
_served: dict[pathlib.Path, tuple[tuple[int, int], bytes]] = {}
_served_lock = threading.Lock()


def read_file(relative_path: str) -> tuple[bytes, str]:
    """Returns `(bytes, content_type)` of a dashboard file, as served.

    JavaScript and CSS come without their whole-line comments (`strip_comments`); other files
    byte for byte.

    Args:
        relative_path: The path under `static/`, e.g. `"model.js"`.

    Raises:
        tensorboard.errors.NotFoundError: For anything but a shipped web file.

    Example:
        >>> read_file("index.js")[1]
        'text/javascript'
        >>> read_file("../plugin/app.py")
        Traceback (most recent call last):
        ...
        tensorboard.errors.NotFoundError: Not found: no such file: '../plugin/app.py'
    """
    not_found = errors.NotFoundError(f"no such file: {relative_path[:200]!r}")
    name = relative_path[:-1] if relative_path.endswith("/") else relative_path
    segments = name.split("/")
    if len(name) > 512 or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise not_found
    content_type = _TYPES.get(pathlib.PurePosixPath(name).suffix.lower())
    if content_type is None:
        raise not_found
    root = frontend_dir()
    if root is None:
        raise not_found
    try:
        target = root.joinpath(*segments).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise not_found
        return _served_bytes(target), content_type
    except OSError:
        raise not_found from None


def _served_bytes(path: pathlib.Path) -> bytes:
    """The bytes served for `path`: stripped once per version of the file (mtime and size)."""
    language = _STRIPPED.get(path.suffix.lower())
    if language is None:
        return path.read_bytes()
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _served.get(path)
    if cached is not None and cached[0] == version:
        return cached[1]
    raw = path.read_bytes()
    try:
        body = strip_comments(raw.decode("utf-8"), language).encode("utf-8")
    except (UnicodeDecodeError, ValueError):  # not ours to fix here: serve it as it is
        body = raw
    with _served_lock:
        _served[path] = (version, body)
    return body


def frontend_dir() -> pathlib.Path | None:
    """The resolved folder of the `tb_cnnviz.frontend` package, or None when it is missing.

    Example:
        >>> (frontend_dir() / "index.js").is_file()
        True
    """
    try:
        from tb_cnnviz import frontend
    except ImportError:
        return None
    return pathlib.Path(frontend.__file__).resolve().parent


# -- comments out of what is served ------------------------------------------------------------
# The frontend is written with comments that explain why (DESIGN.md: "comments are free"), and
# the budget counts what the browser downloads, so the served bytes leave out the comments that
# fill whole lines. Only those: a comment after code on its line stays, so no token can be
# glued to another and no line break that automatic semicolon insertion relies on disappears.
# The scanner below knows just enough JavaScript to tell where code is: strings, template
# literals (with `${...}` nesting), regular expression literals (told from division by the
# token before them) and comments. tests/test_static.py proves every shipped file's removed
# spans are comments in code position, by V8's own parser.

#: Words after which a `/` starts a regular expression (elsewhere a word ends an operand).
_REGEX_AFTER = frozenset(
    "return typeof instanceof in of new delete void throw case do else yield await".split()
)
_WORD = re.compile(r"[A-Za-z0-9_$\u0080-\uffff]+")
_SPACE = " \t\r\f\v\ufeff"


def comment_spans(text: str, language: str = "js") -> list[tuple[int, int]]:
    """Where the comments that stand alone on their lines are, as `(start, end)` offsets.

    A span covers the comment's whole lines: from the start of its first line (indentation
    included) through the line break after it. A comment that shares a line with code is not
    listed.

    Args:
        text: The source of one JavaScript module (`language="js"`) or stylesheet (`"css"`).
        language: `"js"` or `"css"` (CSS has only `/* */` comments and quoted strings).

    Returns:
        The spans in order; they do not overlap.

    Raises:
        ValueError: If the text ends inside a string, template, regex or comment.

    Example:
        >>> source = "// why\\nconst url = 'http://x' // kept\\n  /* a\\n  b */\\nf()\\n"
        >>> [source[a:b] for a, b in comment_spans(source)]
        ['// why\\n', '  /* a\\n  b */\\n']
    """
    spans: list[tuple[int, int]] = []
    n = len(text)
    i = 0
    line_start = 0  # offset where the current line begins
    blank = True  # nothing but whitespace so far on this line (outside literals)
    regex_ok = True  # a `/` here would start a regular expression
    after_dot = False  # the previous token was `.` (so a word is a property name)
    braces = [0]  # open `{` per nesting level; a template's `${` opens a level

    def whole_line(start: int, end: int) -> None:
        # `end` is where the comment ends; the span takes its line if nothing else is on it.
        stop = end
        while stop < n and text[stop] in _SPACE:
            stop += 1
        if stop == n or text[stop] == "\n":
            spans.append((line_start, min(stop + 1, n)))

    while i < n:
        c = text[i]
        if c == "\n":
            i += 1
            line_start, blank = i, True
            continue
        if c in _SPACE:
            i += 1
            continue
        first = blank
        blank = False
        two = text[i : i + 2]
        if two == "/*":
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError(f"unterminated comment at offset {i}")
            i = end + 2
            if first:
                whole_line(line_start, i)
            if spans and spans[-1][1] > i:  # the comment and its line break are gone
                i = spans[-1][1]
                line_start, blank = i, True
            continue
        if language == "js" and two == "//":
            end = text.find("\n", i)
            i = n if end < 0 else end
            if first:
                whole_line(line_start, i)
                if spans and spans[-1][1] > i:
                    i = spans[-1][1]
                    line_start, blank = i, True
            continue
        if c in "'\"":
            i = _skip_string(text, i)
            regex_ok, after_dot = False, False
            continue
        if language == "css":
            i += 1
            continue
        if c == "`" or (c == "}" and braces[-1] == 0 and len(braces) > 1):
            if c == "}":
                braces.pop()
            i, opened = _skip_template(text, i + 1)
            if opened:
                braces.append(0)
            regex_ok, after_dot = opened, False
            continue
        if c == "/":
            if regex_ok:
                i = _skip_regex(text, i)
                regex_ok = False
            else:
                i += 1
                regex_ok = True
            after_dot = False
            continue
        word = _WORD.match(text, i)
        if word:
            i = word.end()
            regex_ok = not after_dot and word.group() in _REGEX_AFTER
            after_dot = False
            continue
        if c == "{":
            braces[-1] += 1
        elif c == "}":
            braces[-1] -= 1
        i += 1
        # After `)` and `]` comes an operator; after `}` a statement (a block's end) is likelier.
        regex_ok = c not in ")]"
        after_dot = c == "."
    if len(braces) > 1:
        raise ValueError("unterminated template literal")
    return spans


def _skip_string(text: str, i: int) -> int:
    """The offset after the string literal that starts at `i`."""
    quote, j = text[i], i + 1
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
        elif c == quote:
            return j + 1
        elif c == "\n":
            break
        else:
            j += 1
    raise ValueError(f"unterminated string at offset {i}")


def _skip_template(text: str, j: int) -> tuple[int, bool]:
    """From inside a template literal at `j`: the offset after its end or after its next `${`,
    and whether it was a `${`."""
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
        elif c == "`":
            return j + 1, False
        elif c == "$" and text[j + 1 : j + 2] == "{":
            return j + 2, True
        else:
            j += 1
    raise ValueError("unterminated template literal")


def _skip_regex(text: str, i: int) -> int:
    """The offset after the regular expression literal (and its flags) that starts at `i`."""
    j, in_class = i + 1, False
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "\n":
            break
        if c == "[":
            in_class = True
        elif c == "]":
            in_class = False
        elif c == "/" and not in_class:
            flags = _WORD.match(text, j + 1)
            return flags.end() if flags else j + 1
        j += 1
    raise ValueError(f"unterminated regular expression at offset {i}")


def strip_comments(text: str, language: str = "js") -> str:
    """`text` without the comments that stand alone on their lines (see `comment_spans`).

    Args:
        text: The source of one JavaScript module or stylesheet.
        language: `"js"` or `"css"`.

    Returns:
        The same code: every other character is kept, in order.

    Example:
        >>> source = "/** Why. */\\nexport const re = /\\\\/\\\\//g // kept\\n"
        >>> print(strip_comments(source), end="")
        export const re = /\\/\\//g // kept
    """
    kept, at = [], 0
    for start, end in comment_spans(text, language):
        kept.append(text[at:start])
        at = end
    kept.append(text[at:])
    return "".join(kept)
