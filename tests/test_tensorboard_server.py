"""A real `tensorboard` process (both data loaders) and `tb-cnnviz serve` find every logged step."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tbserver import free_port, serve, tensorboard, wait_for_steps

from tb_cnnviz import summary

STEPS = 15  # more than TensorBoard's default of 10 samples per tag


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("logs")
    writer = tf.summary.create_file_writer(str(path / "run_a" / "train"))
    rng = np.random.default_rng(0)
    with writer.as_default():
        for step in range(STEPS):
            summary.filter_weights("conv1", rng.normal(size=(3, 3, 3, 4)), step=step)
    writer.close()
    return path


@pytest.mark.parametrize("load_fast", ["true", "false"])
def test_plain_tensorboard_serves_every_logged_step(logdir, load_fast):
    """`tensorboard --logdir` with no sampling flag lists all 15 steps and enables the tab."""
    with tensorboard(logdir, f"--load_fast={load_fast}") as (port, _):
        listing, steps = wait_for_steps(port, "run_a/train", "conv1/weights", list(range(STEPS)))
    assert steps == list(range(STEPS))
    assert listing["cnnviz"]["enabled"] is True
    assert listing["cnnviz"]["tab_name"] == "CNN Viz"


def test_explicit_samples_per_plugin_is_respected(logdir):
    """An explicit `--samples_per_plugin=cnnviz=5` keeps 5 steps: the user's value wins."""
    flags = ("--samples_per_plugin=cnnviz=5", "--load_fast=false")

    def five_ending_with_the_last(steps):
        return steps is not None and len(steps) == 5 and steps[-1] == STEPS - 1

    with tensorboard(logdir, *flags) as (port, _):
        _, steps = wait_for_steps(port, "run_a/train", "conv1/weights", five_ending_with_the_last)
    assert five_ending_with_the_last(steps), steps


def test_tb_cnnviz_serve_binds_loopback_and_prints_the_url(logdir):
    """`tb-cnnviz serve` prints the tab's URL and serves every step on 127.0.0.1."""
    port = free_port()
    cli = os.path.join(os.path.dirname(sys.executable), "tb-cnnviz")
    proc = serve([cli, "serve", "--logdir", str(logdir), "--port", str(port)])
    try:
        _, steps = wait_for_steps(port, "run_a/train", "conv1/weights", list(range(STEPS)))
        assert steps == list(range(STEPS))
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/#cnnviz" in out


def test_tb_cnnviz_serve_rejects_a_missing_logdir(tmp_path):
    """`tb-cnnviz serve` on a path that is not a directory exits 2 with a message naming it."""
    cli = os.path.join(os.path.dirname(sys.executable), "tb-cnnviz")
    missing = tmp_path / "nope"
    result = subprocess.run(
        [cli, "serve", "--logdir", str(missing)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert str(missing) in result.stderr
