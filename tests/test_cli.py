"""The `tb-cnnviz` command line: the demo trains two runs and serves them."""

from __future__ import annotations

import os
import subprocess
import sys

from tbserver import free_port, get_json, serve, wait_for_steps

from tb_cnnviz import cli
from tb_cnnviz.demo.data import CLASS_NAMES

CLI = os.path.join(os.path.dirname(sys.executable), "tb-cnnviz")
RUNS = ("lr_1e-3/train", "lr_1e-4/train")


def test_demo_trains_two_runs_and_serves_them(tmp_path, read_logdir):
    """`tb-cnnviz demo` logs two runs with every kind, their responses and model snapshots at
    the first and latest step with the class names, and serves them (the Probe view has data)."""
    port = free_port()
    logdir = tmp_path / "demo"
    proc = serve(
        [
            CLI,
            "demo",
            "--logdir",
            str(logdir),
            "--epochs",
            "2",
            "--samples",
            "128",
            "--port",
            str(port),
        ]
    )
    try:
        _, steps = wait_for_steps(port, "lr_1e-4/train", "conv4/weights", [0, 1], timeout=240)
        assert steps == [0, 1]
        base = f"http://127.0.0.1:{port}/data/plugin/cnnviz"
        snapshots = {run: get_json(f"{base}/snapshots?run={run}") for run in RUNS}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/#cnnviz" in out
    tags = read_logdir(logdir).cnnviz_tags()
    assert {run for run, _ in tags} == set(RUNS)
    for run in RUNS:
        for layer in ("conv1", "conv2", "conv3", "conv4"):
            assert (run, f"{layer}/weights") in tags
            assert (run, f"{layer}/feature_maps") in tags
            assert (run, f"{layer}/responses") in tags  # the tab's comparison views have data
        assert snapshots[run]["steps"] == [0, 1], snapshots[run]
        assert snapshots[run]["class_names"] == list(CLASS_NAMES)


def test_demo_no_serve_exits_and_says_how_to_browse(tmp_path):
    """`tb-cnnviz demo --no-serve` trains, exits 0, and prints the serve command."""
    logdir = tmp_path / "d"
    result = subprocess.run(
        [CLI, "demo", "--logdir", str(logdir), "--epochs", "1", "--samples", "64", "--no-serve"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"tb-cnnviz serve --logdir {logdir}" in result.stdout
    assert sorted(os.listdir(logdir)) == ["lr_1e-3", "lr_1e-4"]


def test_bad_numbers_are_rejected_with_a_message(capsys):
    """`--epochs 0` and `--port 70000` exit 2 and say what was expected."""
    for argv in (["demo", "--epochs", "0"], ["demo", "--port", "70000"]):
        try:
            cli.main(argv)
        except SystemExit as e:
            assert e.code == 2
        else:
            raise AssertionError(f"{argv} was accepted")
    err = capsys.readouterr().err
    assert "expected a positive integer, got '0'" in err
    assert "expected a port number (1-65535), got '70000'" in err


def test_python_dash_m_and_version_work_like_the_script():
    """`python -m tb_cnnviz --version` prints the version (argparse's version action), exit 0."""
    import tb_cnnviz

    result = subprocess.run(
        [sys.executable, "-m", "tb_cnnviz", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"tb-cnnviz {tb_cnnviz.__version__}"
    help_text = subprocess.run(
        [sys.executable, "-m", "tb_cnnviz", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--version" in help_text and "demo" in help_text
