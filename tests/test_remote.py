"""Remote logdirs: CNNViz writes to `s3://` and every reader reads it back, against a real
S3-compatible server (moto's standalone server, a separate process on loopback), never an
in-process mock of the client.

Without moto these tests skip, unless `CI=true`, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tbserver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "bucket"
LOGS = f"s3://{BUCKET}/logs"
EPOCHS = 2

# Trains a two-conv model for EPOCHS epochs with CNNViz logging to argv[1].
FIT = textwrap.dedent(
    f"""
    import sys
    import keras
    import numpy as np
    from tb_cnnviz.callbacks import CNNViz

    model = keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
        keras.layers.Conv2D(4, 3, activation="relu", name="c2"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((16, 12, 12, 3), dtype=np.float32)
    viz = CNNViz(
        sys.argv[1], probe_images=x[:2], reference_images=x, budget=None,
        attribution_freq=0, actmax_freq=0,
    )
    model.fit(x, np.zeros(16), epochs={EPOCHS}, batch_size=8, verbose=0, callbacks=[viz])
    """
)
# Reads argv[1] back through tb_cnnviz.reader, compare, plot, `tb-cnnviz export` (to argv[3])
# and the plugin's WSGI app over TensorBoard's data provider; prints what each saw as JSON.
READ = textwrap.dedent(
    """
    import json, sys
    import werkzeug.test
    from werkzeug.wrappers import Response
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    import matplotlib
    matplotlib.use("Agg")
    from tb_cnnviz import cli, compare, plot, plugin, reader

    logdir, run, figure = sys.argv[1:4]
    logs = reader.Logdir(logdir)
    pictures = logs.read(run, "c1", "weights")
    plotted = plot.layer_grid(logdir, run, "c2", "weights")
    exported = cli.main(["export", "--logdir", logdir, "--run", run, "--layer", "c1",
                         "--kind", "weights", "-o", figure])
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    ctx = base_plugin.TBContext(logdir=logdir, data_provider=provider, sampling_hints={})
    app = application.TensorBoardWSGI([plugin.CNNVizPlugin(ctx)], data_provider=provider)
    client = werkzeug.test.Client(app, Response)
    tags = client.get("/data/plugin/cnnviz/tags").get_json()
    layer = client.get("/data/plugin/cnnviz/layer", query_string={"run": run, "tag": "c1/weights"})
    print("RESULT " + json.dumps({
        "runs": logs.runs(),
        "layers": logs.layers(run),
        "compare_layers": compare.layers(logdir, run),
        "plot": type(plotted).__name__,
        "export_status": exported,
        "weights_shape": list(pictures.tiles.shape),
        "tags_steps": tags[run]["c1/weights"]["steps"],
        "layer_status": layer.status_code,
        "has_tf": sys.modules.get("tensorflow") is not None,
    }))
    """
)


def _moto_server() -> str:
    program = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    try:
        import boto3  # noqa: F401
    except ImportError:
        program = None
    if program is None:
        why = "needs moto's standalone server and boto3: pip install 'tb-cnnviz[test]'"
        if os.environ.get("CI") == "true":
            pytest.fail(f"remote logdir tests {why} in CI")
        pytest.skip(f"remote logdir tests {why}")
    return program


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible server (moto_server) on loopback with an empty bucket; the process
    environment points boto3 (and TensorBoard's S3 layer, through S3_ENDPOINT) at it."""
    program = _moto_server()
    import boto3

    port = tbserver.free_port()
    proc = subprocess.Popen(
        [program, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "S3_ENDPOINT": f"http://127.0.0.1:{port}",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        client = boto3.client("s3", endpoint_url=settings["S3_ENDPOINT"])
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield client
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        proc.terminate()
        proc.wait(timeout=30)


def run_python(code: str, *args: str, backend: str):
    """Runs `code` in a fresh Python on Keras' `backend`, with TensorFlow hidden (as where it
    is not installed, tests/conftest.py): what a JAX or PyTorch machine runs."""
    paths = [ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TB_CNNVIZ_HIDE_TENSORFLOW": "1",
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
    }
    result = subprocess.run(
        [sys.executable, "-c", "import conftest  # noqa\n" + code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def read_back(run: str, figure) -> dict:
    """What the readers and the plugin's WSGI app read of `run` in the bucket (TF hidden)."""
    out = run_python(READ, LOGS, run, str(figure), backend="jax")
    return json.loads(out.split("RESULT ", 1)[1])


@pytest.fixture(scope="module")
def written(s3):
    """The bucket after a real fit() on TensorFlow (run1, this process) and one on JAX with
    TensorFlow hidden (run2, a subprocess), both logging to s3://bucket/logs/<run>."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("writes run1 on TensorFlow")
    argv, sys.argv = sys.argv, ["fit", f"{LOGS}/run1"]
    try:
        exec(compile(FIT, "<fit>", "exec"), {})
    finally:
        sys.argv = argv
    pytest.importorskip("jax")
    run_python(FIT, f"{LOGS}/run2", backend="jax")
    return s3


@pytest.mark.tensorflow
def test_a_fit_on_tensorflow_writes_s3_that_the_readers_and_plugin_read(written, tmp_path):
    """A fit() on TensorFlow logging to s3:// is read back by the reader, compare, plot, export
    and the plugin's /tags and /layer over TensorBoard's data provider (TensorFlow hidden)."""
    figure = tmp_path / "c1.png"
    got = read_back("run1/train", figure)
    assert not got["has_tf"]
    assert {"run1/train", "run2/train"} <= set(got["runs"])
    assert {"c1", "c2"} <= set(got["layers"]) and {"c1", "c2"} <= set(got["compare_layers"])
    assert got["plot"] == "Axes" and got["export_status"] == 0
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert got["weights_shape"][0] == 4  # the 4 filters of c1
    assert got["tags_steps"] == list(range(EPOCHS))
    assert got["layer_status"] == 200


@pytest.mark.tensorflow
def test_a_fit_on_jax_without_tensorflow_writes_s3_that_the_reader_reads(written, tmp_path):
    """A fit() on JAX with TensorFlow hidden logs every epoch to s3:// as objects in the bucket."""
    keys = [
        o["Key"] for o in written.list_objects_v2(Bucket=BUCKET, Prefix="logs/run2/")["Contents"]
    ]
    assert "logs/run2/train/cnnviz_run.json" in keys  # the run claim file goes there too
    assert any("tfevents" in key for key in keys)
    got = read_back("run2/train", tmp_path / "c1.png")
    assert got["tags_steps"] == list(range(EPOCHS))
    assert got["layer_status"] == 200


@pytest.mark.tensorflow
def test_tensorboard_serves_the_tab_from_an_s3_logdir(written):
    """A real `tensorboard --logdir s3://bucket/logs` serves both runs' steps on the tab's /tags."""
    with tbserver.tensorboard(LOGS, "--reload_interval", "1", hide_tensorflow=True) as (port, out):
        listing, steps = tbserver.wait_for_steps(port, "run2/train", "c1/weights", [0, 1])
        tags = tbserver.get_json(f"http://127.0.0.1:{port}/data/plugin/cnnviz/tags")
    assert steps == list(range(EPOCHS)), out
    assert listing["cnnviz"]["enabled"] is True
    assert tags["run1/train"]["c1/weights"]["steps"] == list(range(EPOCHS))


def _fit_to(log_dir: str, begun: list) -> None:
    """A fit() of one epoch with CNNViz logging to `log_dir`; the epochs begun go to `begun`."""
    import keras

    from tb_cnnviz.callbacks import CNNViz

    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()]
    )
    model.compile("sgd", "mse")
    epochs = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: begun.append(epoch))
    x = np.zeros((2, 8, 8, 1), np.float32)
    model.fit(x, np.zeros((2, 72)), epochs=1, verbose=0, callbacks=[CNNViz(log_dir), epochs])


def test_a_missing_bucket_is_a_clear_error_before_any_epoch(s3):
    """CNNViz on s3:// of a bucket that does not exist raises ValueError at on_train_begin."""
    begun = []
    with pytest.raises(ValueError, match="NoSuchBucket.*Received: log_dir='s3://no-such-bucket"):
        _fit_to("s3://no-such-bucket/logs/run1", begun)
    assert begun == []


def test_missing_credentials_are_a_clear_error_before_any_epoch(s3, monkeypatch, tmp_path):
    """CNNViz on s3:// without credentials raises ValueError naming them, at on_train_begin."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    import boto3

    # boto3's default session keeps the credentials it found first: start a fresh one.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    begun = []
    with pytest.raises(ValueError, match="NoCredentialsError.*credentials"):
        _fit_to(f"{LOGS}/nocreds", begun)
    assert begun == []
