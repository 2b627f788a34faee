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
