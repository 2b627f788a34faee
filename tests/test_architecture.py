"""The project's layering, read from its source: what each side may import and reach into."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: Where the product's code lives (tests may reach into privates to pin internals).
CODE = ["tb_cnnviz", "callbacks", "demo", "benchmarks"]
#: Import names of the project's modules: `tb_cnnviz.x`, and `callbacks`/`demo` as installed.
PACKAGES = {"tb_cnnviz": ROOT / "tb_cnnviz", "tb_cnnviz.callbacks": ROOT / "callbacks"}


def python_files():
    for folder in CODE:
        yield from sorted((ROOT / folder).rglob("*.py"))


def is_module(dotted: str) -> bool:
    """Whether `dotted` names one of the project's modules or packages."""
    for package, folder in PACKAGES.items():
        if dotted == package or dotted.startswith(package + "."):
            rest = dotted[len(package) :].lstrip(".").split(".") if dotted != package else []
            path = folder.joinpath(*rest)
            return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
    return False


def module_aliases(tree: ast.Module, path: pathlib.Path) -> dict[str, str]:
    """Local names bound to the project's modules by the imports of one file."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    package = package.replace("callbacks", "tb_cnnviz.callbacks", 1)
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if is_module(a.name):
                    aliases[a.asname or a.name.split(".")[0]] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for a in node.names:
                if is_module(f"{base}.{a.name}"):
                    aliases[a.asname or a.name] = f"{base}.{a.name}"
    return aliases


def private_reaches(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = module_aliases(tree, path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{path.name}:{node.lineno} imports {a.name}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{path.name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return found


@pytest.mark.parametrize("path", list(python_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_reaches_into_another_modules_private_names(path):
    """No module imports, or reads through a module alias, another module's underscore names."""
    assert private_reaches(path) == []


def test_the_checker_sees_a_private_reach(tmp_path):
    """The scan above flags `from x import _y` and `module._y` (so its passing means something)."""
    bad = ROOT / "tb_cnnviz" / "_probe_for_test.py"
    bad.write_text(
        "from tb_cnnviz.actmax import param as param_lib\n"
        "from tb_cnnviz.summary import _ratio\n"
        "param_lib._entropy(1)\n",
        encoding="utf-8",
    )
    try:
        found = private_reaches(bad)
    finally:
        bad.unlink()
    assert len(found) == 2
    assert any("imports _ratio" in f for f in found)
    assert any("tb_cnnviz.actmax.param._entropy" in f for f in found)


SERVING_SIDE = [
    *sorted((ROOT / "tb_cnnviz" / "plugin").glob("*.py")),
    *(ROOT / "tb_cnnviz" / name for name in ("reader.py", "metadata.py", "similarity.py")),
    *(ROOT / "tb_cnnviz" / name for name in ("budget.py", "checks.py", "profile.py")),
    ROOT / "tb_cnnviz" / "background.py",
]


def test_the_serving_side_never_imports_the_training_side():
    """The plugin package, reader and metadata import neither TensorFlow nor training modules."""
    training = {"tensorflow", "keras", "tb_cnnviz.summary", "tb_cnnviz.callbacks"}
    assert len(SERVING_SIDE) > 10  # the plugin package's modules are all there
    for path in SERVING_SIDE:
        name = path.name
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        bad = {m for m in imported for t in training if m == t or m.startswith(t + ".")}
        assert bad == set(), (name, bad)


#: What only `tb_cnnviz/layers.py` may do: walk the sublayers Keras tracks, and patch a layer.
LAYER_INTERNALS = {"_flatten_layers", "__setattr__", "__delattr__"}


def layer_internals(path: pathlib.Path) -> list[str]:
    """Uses of `LAYER_INTERNALS` in one file (`object.__setattr__(layer, ...)` and the like)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} uses {node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in LAYER_INTERNALS
    ]


def test_layer_discovery_and_capture_have_one_home():
    """Only tb_cnnviz/layers.py walks tracked sublayers or patches a layer's call or activation.

    Every kind (feature maps, attribution, activation maximization, references, heads) reads
    layers through `capture_outputs` and `override`, so one thread-safe mechanism serves all.
    """
    home = ROOT / "tb_cnnviz" / "layers.py"
    assert layer_internals(home), "the scan finds nothing even in layers.py"
    found = [f for path in python_files() if path != home for f in layer_internals(path)]
    assert found == []
