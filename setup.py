"""Packaging for tb-cnnviz: the library, the Keras callbacks and the TensorBoard plugin."""

import pathlib

from setuptools import setup

HERE = pathlib.Path(__file__).parent

# Every floor below is a version CI tests: scripts/oldest.txt pins them, scripts/test.sh runs the
# suite on them (.venv-oldest), and tests/test_packaging.py checks the two agree. TensorFlow 2.16
# is the first with Keras 3; TensorBoard 2.16.0 and 2.16.1 depend on tf-keras(-nightly), which
# pulls in a second TensorFlow; Keras 3.6 is the first with `keras.ops.bitwise_xor` and
# `right_shift` (activation maximization's per-filter seeds, on every backend).
TENSORFLOW = ">=2.16.1,<3"
KERAS = "keras>=3.6"
# TensorFlow's CPU-only build has wheels for x86-64 Linux and Windows (none for Apple silicon or
# Linux on ARM, none for macOS after 2.16): elsewhere the `tensorflow-cpu` extra installs
# `tensorflow`, so one install command works on every platform.
CPU_WHEELS = (
    'platform_system != "Darwin" and (platform_machine == "x86_64" or platform_machine == "AMD64")'
)
NO_CPU_WHEELS = (
    'platform_system == "Darwin" or (platform_machine != "x86_64" and platform_machine != "AMD64")'
)

setup(
    name="tb-cnnviz",
    version="0.1.0",
    description="See what convolutional networks learn while they train: Keras callbacks "
    "and a CNN Viz tab for TensorBoard.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=[
        "tb_cnnviz",
        "tb_cnnviz.actmax",
        "tb_cnnviz.callbacks",
        "tb_cnnviz.plugin",
        "tb_cnnviz.frontend",
        "tb_cnnviz.demo",
    ],
    package_dir={
        "tb_cnnviz": "tb_cnnviz",
        "tb_cnnviz.callbacks": "callbacks",
        "tb_cnnviz.frontend": "frontend",
        "tb_cnnviz.demo": "demo",
    },
    package_data={
        "tb_cnnviz": ["http_api.md", "py.typed"],
        "tb_cnnviz.frontend": ["*.js", "*.css"],
        "tb_cnnviz.demo": ["data/*.npz"],
    },
    # The TensorBoard side needs no TensorFlow; the training side picks its build via an extra.
    install_requires=[
        "tensorboard>=2.16.2,<3",
        "numpy>=1.26",
        # tb_cnnviz.compare: linear_sum_assignment; 1.11 is the first for numpy 1.26 (1.11.0 was
        # yanked).
        "scipy>=1.11.1",
        "matplotlib>=3.8",
        "protobuf>=4.25.8,<8",  # the first 4.x with CVE-2025-4565 fixed: the reader parses logdirs
        "pillow>=10",
        "werkzeug>=2.0",  # 1.x has no Response.get_json, which the plugin's tests use
    ],
    extras_require={
        "tensorflow-cpu": [
            f"tensorflow-cpu{TENSORFLOW}; {CPU_WHEELS}",
            f"tensorflow{TENSORFLOW}; {NO_CPU_WHEELS}",
            KERAS,
        ],
        "tensorflow": [f"tensorflow{TENSORFLOW}", KERAS],
        # Keras 3 on JAX or PyTorch: writing needs no TensorFlow (TensorBoard's own writer).
        "jax": ["jax>=0.4.30", KERAS],
        "torch": ["torch>=2.1", KERAS],
        "test": [
            "pytest>=8",
            "hypothesis>=6",
            "playwright>=1.45",
            "ruff>=0.17,<0.18",  # the test command checks formatting: one version formats
            # tests/test_remote.py: a real S3-compatible server (moto_server) on loopback, and
            # boto3, which TensorBoard's own S3 layer writes and reads with.
            "moto[server]>=5",
            "boto3>=1.28",
        ],
    },
    entry_points={
        "tensorboard_plugins": ["cnnviz = tb_cnnviz.plugin:CNNVizLoader"],
        "console_scripts": ["tb-cnnviz = tb_cnnviz.cli:main"],
    },
    classifiers=[
        "Framework :: TensorFlow",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Visualization",
    ],
)
