"""Requests and responses of the plugin's routes: strict query parsing, JSON bodies, errors.

A route is a `CNNVizPlugin` method wrapped by `route`: it parses its request with `query` (and
`required`, `step_param`, `parse_runs`), calls one answer, and returns `json_response`. `route`
turns TensorBoard's public errors (`NotFoundError`, `InvalidArgumentError`, ...) into a JSON
body `{"error": "..."}` with their status, and anything else into a logged JSON 500, so a bad
request never becomes an opaque error page, even when the app is called bare, outside
`TensorBoardWSGI`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util, json_util
from werkzeug import wrappers

__all__ = [
    "Answer",
    "body",
    "encode_json",
    "json_response",
    "parse_runs",
    "query",
    "request_context",
    "required",
    "route",
    "step_param",
]

logger = logging.getLogger(__name__)

# Limits on what a request may carry; anything larger is a malformed request (400).
_MAX_QUERY_BYTES = 64 * 1024
_MAX_QUERY_FIELDS = 32
_MAX_STEP = 2**63 - 1  # steps are int64 in event files


def route(handler: Callable[..., wrappers.Response]):
    """Wraps a route method: errors become JSON bodies, never an opaque 500.

    Example:
        >>> class Plugin:
        ...     @route
        ...     def hello(self, request):
        ...         return json_response(request, {"hello": query(request).get("name")})
        >>> from werkzeug.test import Client
        >>> client = Client(lambda env, start: Plugin().hello(env, start))
        >>> client.get("/?name=you").get_json(), client.get("/?name=a&name=b").status_code
        ({'hello': 'you'}, 400)
    """

    @functools.wraps(handler)
    @wrappers.Request.application
    def app(self, request: wrappers.Request) -> wrappers.Response:
        try:
            return handler(self, request)
        except errors.PublicError as e:
            return json_response(request, {"error": str(e)}, code=e.http_code, headers=e.headers)
        except Exception:  # a bug of ours or a provider failure: say so in JSON, keep serving
            logger.exception("cnnviz: %s failed", request.path)
            return json_response(
                request,
                {"error": "internal error in the cnnviz plugin; see the TensorBoard log"},
                code=500,
            )

    return app


def request_context(request: wrappers.Request):
    """`(RequestContext, experiment id)` of a request, as TensorBoard's middleware set them."""
    return plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)


def query(request: wrappers.Request) -> dict[str, str]:
    """Parses the query string strictly: UTF-8, each parameter at most once, bounded size.

    Werkzeug's own parser silently keeps undecodable bytes and repeated parameters; a request
    that is not what the dashboard sends is answered 400 instead of being guessed at.

    Raises:
        tensorboard.errors.InvalidArgumentError: For anything else.
    """
    raw = request.environ.get("QUERY_STRING", "")
    try:
        data = raw.encode("latin-1")  # PEP 3333: the raw bytes, as latin-1 code points
    except UnicodeEncodeError:
        raise errors.InvalidArgumentError("the query string is not valid") from None
    if len(data) > _MAX_QUERY_BYTES:
        raise errors.InvalidArgumentError(
            f"the query string is longer than {_MAX_QUERY_BYTES} bytes"
        )
    params: dict[str, str] = {}
    for field in data.split(b"&"):
        if not field:
            continue
        name, _, value = field.partition(b"=")
        name, value = _unquote(name), _unquote(value)
        if name in params:
            raise errors.InvalidArgumentError(f"parameter {name!r} is given more than once")
        params[name] = value
        if len(params) > _MAX_QUERY_FIELDS:
            raise errors.InvalidArgumentError("the query string has too many parameters")
    return params


def _unquote(part: bytes) -> str:
    try:
        return urllib.parse.unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidArgumentError("the query string is not valid UTF-8") from None


def required(params: Mapping[str, str], name: str) -> str:
    """The value of a required parameter, or a 400 naming it."""
    value = params.get(name)
    if value is None:
        raise errors.InvalidArgumentError(f"missing required parameter {name!r}")
    return value


def body(request: wrappers.Request, limit: int, too_large: type[errors.PublicError]) -> bytes:
    """The request body, refused with `too_large` (a 413) beyond `limit` bytes before more than
    `limit + 1` bytes are read, and as a 405-like 400 unless the method is POST."""
    if request.method != "POST":
        raise errors.InvalidArgumentError(f"send the image with POST. Received: {request.method}")
    if (request.content_length or 0) > limit:
        raise too_large(f"the body is larger than {limit} bytes")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise too_large(f"the body is larger than {limit} bytes")
    return data


def step_param(params: Mapping[str, str], name: str = "step") -> int | None:
    """The step named `name` in a query (None when absent), checked: a 400 unless it is an
    integer from 0 to the largest int64."""
    if name not in params:
        return None
    text = params[name]
    if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) > _MAX_STEP:
        raise errors.InvalidArgumentError(
            f"{name} must be an integer from 0 to {_MAX_STEP}. Received: {name}={text[:40]!r}"
        )
    return int(text)


def parse_runs(text: str) -> list[str]:
    """`runs=`: run names separated by commas, or a JSON array (for names holding commas).

    Example:
        >>> parse_runs("a,b"), parse_runs('["a,1", "b"]')
        (['a', 'b'], ['a,1', 'b'])
    """
    if text.startswith("["):
        try:
            runs = json.loads(text)
        except ValueError:
            runs = None
        if not (isinstance(runs, list) and all(isinstance(r, str) for r in runs)):
            raise errors.InvalidArgumentError(
                f"runs must be names separated by commas, or a JSON array of names. Received: "
                f"runs={text[:80]!r}"
            )
    else:
        runs = text.split(",")
    if not runs or not all(runs):
        raise errors.InvalidArgumentError(f"runs must name runs. Received: runs={text[:80]!r}")
    return runs


class Answer(dict):
    """A JSON-ready answer kept in a cache and sent many times: `json_response` encodes it once
    (a megabyte of `/tags` takes 20 ms to encode). Treat it as read-only.

    Example:
        >>> answer = Answer(run={"steps": [0, 1]})
        >>> encode_json(answer) is encode_json(answer)
        True
    """

    __slots__ = ("_encoded",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._encoded = None


def encode_json(obj) -> bytes:
    """`obj` as compact UTF-8 JSON, with `<`, `>` and `&` escaped inside strings.

    Example:
        >>> encode_json({"name": "<b>"})
        b'{"name":"\\\\u003cb\\\\u003e"}'
    """
    if isinstance(obj, Answer) and obj._encoded is not None:
        return obj._encoded
    try:
        text = json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except ValueError:  # NaN or Inf from a hand-made index: TensorBoard's JSON spells them out
        text = json.dumps(json_util.Cleanse(obj), ensure_ascii=False, separators=(",", ":"))
    # "<", ">" and "&" only occur inside JSON strings, where escaping them keeps the JSON equal
    # and makes run or layer names holding HTML inert even if a page misuses the body.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    body = text.encode("utf-8")
    if isinstance(obj, Answer):
        obj._encoded = body
    return body


def json_response(request, obj, code: int = 200, headers=None):
    """A JSON response of `encode_json(obj)`."""
    return http_util.Respond(
        request, encode_json(obj), "application/json", code=code, headers=headers
    )
