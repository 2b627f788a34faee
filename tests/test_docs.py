"""The docs say what the code does: `docs/api.md` signatures against the real ones."""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
API = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
MORE = ("…", "...", "**options")


def documented_signatures():
    """`(module, name, [params])` for each `name(...)` the API reference writes out in a section
    whose heading names a module (`## Callbacks: \\`tb_cnnviz.callbacks\\``)."""
    found = []
    for section in re.split(r"^## ", API, flags=re.M)[1:]:
        heading = section.splitlines()[0]
        module_name = re.search(r"`(tb_cnnviz[\w.]*)`", heading)
        if not module_name:
            continue
        module = importlib.import_module(module_name.group(1))
        for match in re.finditer(r"`(\w+)\(([^`]*)\)`", section):
            name, params = match.group(1), " ".join(match.group(2).split())
            if callable(getattr(module, name, None)) and params:
                found.append((module.__name__, name, split_params(params)))
    return found


def split_params(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()] if current.strip() else parts


SIGNATURES = documented_signatures()


def test_the_reference_writes_out_the_main_signatures():
    """The scan finds the callbacks, summary functions, actmax and attribution signatures."""
    names = {(m.rsplit(".", 1)[-1], n) for m, n, _ in SIGNATURES}
    assert {
        ("callbacks", "CNNViz"),
        ("callbacks", "ActivationMaximization"),
        ("summary", "feature_maps"),
        ("actmax", "render"),
        ("attribution", "smoothgrad"),
    } <= names


@pytest.mark.parametrize(("module", "name", "params"), SIGNATURES, ids=lambda v: str(v)[:40])
def test_each_documented_signature_matches_the_code(module, name, params):
    """Each parameter the reference lists exists, in order, keyword-only where it says `*`."""
    target = getattr(importlib.import_module(module), name)
    real = inspect.signature(target.__init__ if inspect.isclass(target) else target)
    actual = [p for p in real.parameters.values() if p.name != "self"]
    open_ended = any(p in MORE for p in params)
    documented = [p for p in params if p not in MORE]
    keyword_only = False
    names = []
    for text in documented:
        if text == "*":
            keyword_only = True
            continue
        param, _, default = text.partition("=")
        names.append(param)
        real_param = real.parameters.get(param)
        assert real_param is not None, f"{name} has no parameter {param!r}"
        if keyword_only:
            assert real_param.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {param} not kw-only"
        if default:
            try:
                value = ast.literal_eval(default)
            except (ValueError, SyntaxError):
                continue  # a default written in words (16 MiB) or by name
            assert real_param.default == value, (
                f"{name}: {param} defaults to {real_param.default!r}"
            )
    order = [p.name for p in actual if p.name in names]
    assert order == names, f"{name}: parameters in the code come in the order {order}"
    if not open_ended:
        missing = [p.name for p in actual if p.name not in names and p.kind != p.VAR_KEYWORD]
        assert missing == [], f"{name}: the reference leaves out {missing}"
