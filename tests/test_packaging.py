"""The floors tb-cnnviz declares are the versions CI tests in its oldest environment."""

from __future__ import annotations

import importlib.metadata
import pathlib

from packaging.requirements import Requirement
from packaging.version import Version

OLDEST = pathlib.Path(__file__).parent.parent / "scripts" / "oldest.txt"
#: The extras the oldest environment installs, beside the base requirements.
TESTED_EXTRAS = ("tensorflow", "tensorflow-cpu")


def floors() -> dict[str, set[Version]]:
    """Each installed requirement's `>=` floors, base and `TESTED_EXTRAS`, by package name."""
    found: dict[str, set[Version]] = {}
    for text in importlib.metadata.requires("tb-cnnviz") or []:
        requirement = Requirement(text)
        marker = str(requirement.marker or "")
        if "extra ==" in marker and not any(f'extra == "{e}"' in marker for e in TESTED_EXTRAS):
            continue
        for spec in requirement.specifier:
            if spec.operator == ">=":
                found.setdefault(requirement.name.lower(), set()).add(Version(spec.version))
    return found


def pins() -> dict[str, set[Version]]:
    """`scripts/oldest.txt` as package name -> {pinned version}."""
    lines = [line.split("#")[0].strip() for line in OLDEST.read_text().splitlines()]
    pairs = [line.lower().split("==") for line in lines if line]
    return {name: {Version(version)} for name, version in pairs}


def test_every_floor_is_pinned_in_the_oldest_environment_and_nothing_else():
    """Each floor of setup.py (base and TensorFlow extras) equals its pin in scripts/oldest.txt."""
    declared = floors()
    # `tensorflow` and `tensorflow-cpu` are two builds of one release line: one floor, one pin.
    assert declared.pop("tensorflow") == declared["tensorflow-cpu"]
    assert declared == pins()


def test_the_tensorflow_cpu_extra_installs_one_build_that_has_wheels_on_each_platform():
    """`[tensorflow-cpu]` means tensorflow-cpu on x86-64 Linux and Windows, tensorflow elsewhere."""
    expected = {
        ("Linux", "x86_64"): "tensorflow-cpu",
        ("Windows", "AMD64"): "tensorflow-cpu",
        ("Darwin", "arm64"): "tensorflow",  # Apple silicon: no tensorflow-cpu wheel
        ("Darwin", "x86_64"): "tensorflow",
        ("Linux", "aarch64"): "tensorflow",
    }
    for (system, machine), build in expected.items():
        where = {"platform_system": system, "platform_machine": machine, "extra": "tensorflow-cpu"}
        chosen = [
            r.name
            for r in map(Requirement, importlib.metadata.requires("tb-cnnviz") or [])
            if r.name.startswith("tensorflow") and r.marker and r.marker.evaluate(where)
        ]
        assert chosen == [build], (system, machine)


ROOT = pathlib.Path(__file__).parent.parent
#: The module each backend's extra must provide, beside Keras, for the core suite to run.
BACKEND_MODULES = {
    "tensorflow": "tensorflow",
    "tensorflow-cpu": "tensorflow",
    "jax": "jax",
    "torch": "torch",
}


def readme_extras() -> list[str]:
    """The extras the README's install table names (its first column, `` `name` ``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("| extra | installs | for |", 1)[1].split("\n\n", 1)[0]
    return [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]


def installs(*extras: str) -> set[str]:
    """The distributions `pip install "tb-cnnviz[extras]"` asks for on Linux x86-64."""
    names = set()
    for text in importlib.metadata.requires("tb-cnnviz") or []:
        requirement = Requirement(text)
        for extra in ("", *extras):
            where = {"platform_system": "Linux", "platform_machine": "x86_64", "extra": extra}
            if requirement.marker is None or requirement.marker.evaluate(where):
                names.add(requirement.name.lower())
    return names


def core_suite_imports() -> set[str]:
    """Third-party top-level modules the core suite (scripts/core_tests.txt) imports at import
    time: module-level imports of its test files and of every tb_cnnviz module they reach."""
    import ast
    import sys

    paths = []
    for entry in (ROOT / "scripts" / "core_tests.txt").read_text().split():
        path = ROOT / entry
        paths += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    paths += sorted((ROOT / "tb_cnnviz").rglob("*.py")) + [ROOT / "tests" / "conftest.py"]
    found = set()
    for path in paths:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    local = {
        "tb_cnnviz",
        "zoo",
        "tbserver",
        "conftest",
        "test_backends",
        "test_callbacks",
        "test_compare",
    }
    return {m for m in found - local if m not in sys.stdlib_module_names and m != "__future__"}


def test_every_extra_in_the_readme_installs_what_its_backends_suite_imports():
    """Each backend extra the README names brings Keras, its backend and the core suite's imports.

    Pins the fix for an extra without Keras: `[torch]` once installed only PyTorch, and the
    PyTorch suite stopped at collection (`No module named 'keras'`).
    """
    extras = readme_extras()
    assert set(BACKEND_MODULES) <= set(extras) and "test" in extras
    assert set(extras) <= set(importlib.metadata.metadata("tb-cnnviz").get_all("Provides-Extra"))
    providers = importlib.metadata.packages_distributions()
    needed = core_suite_imports()
    assert {"keras", "numpy", "pytest"} <= needed  # the scan sees the suite's imports
    for extra, backend in BACKEND_MODULES.items():
        got = installs(extra, "test")
        assert "keras" in got, extra
        assert backend in got or f"{backend}-cpu" in got, extra
        for module in needed - {"tensorflow", "jax", "torch"}:
            dists = {d.lower() for d in providers.get(module, [module])}
            assert dists & got, (extra, module, dists)


def test_the_backend_commands_install_the_backend_extra_with_the_test_extra():
    """scripts/test.sh and scripts/test_backend.sh install `.[<backend>,test]` for each suite."""
    test_sh = (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    backend_sh = (ROOT / "scripts" / "test_backend.sh").read_text(encoding="utf-8")
    for backend in ("jax", "torch"):
        assert f'-e ".[{backend},test]"' in test_sh, backend
    assert '-e ".[torch,test]"' in backend_sh
    assert '-e ".[tensorflow-cpu,jax,test]"' in test_sh
