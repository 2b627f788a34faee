"""The dashboard's own files (`tb_cnnviz.frontend`), served by `/index.js` and `/static/*`.

Only `.js`, `.css`, `.svg`, `.png` and `.html` files are served, by a path made of plain names
(no `..`, no hidden files, no absolute paths or backslashes) that stays inside the folder after
resolving symlinks. The MIME type comes from the extension, never from `mimetypes` (which reads
the Windows registry).
"""

from __future__ import annotations

import pathlib
import re

from tensorboard import errors

from tb_cnnviz import metadata

__all__ = ["PREFIXES", "frontend_dir", "read_file"]

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


def read_file(relative_path: str) -> tuple[bytes, str]:
    """Returns `(bytes, content_type)` of a dashboard file.

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
        return target.read_bytes(), content_type
    except OSError:
        raise not_found from None


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
