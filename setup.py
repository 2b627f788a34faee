"""Packaging for tb-cnnviz: the library, the Keras callbacks and the TensorBoard plugin."""

import pathlib

from setuptools import setup

HERE = pathlib.Path(__file__).parent

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
        "tensorboard>=2.21,<3",
        "numpy>=1.26",
        "scipy>=1.11",  # tb_cnnviz.compare: linear_sum_assignment; 1.11 is the first for numpy 1.26
        "matplotlib>=3.8",
        "protobuf>=6.31.1,<8",
        "pillow>=10",
        "werkzeug>=1.0.1",
    ],
    extras_require={
        "tensorflow-cpu": ["tensorflow-cpu>=2.21,<3"],
        "tensorflow": ["tensorflow>=2.21,<3"],
        # Keras 3 on JAX or PyTorch: writing needs no TensorFlow (TensorBoard's own writer).
        "jax": ["jax>=0.4.30", "keras>=3.0"],
        "torch": ["torch>=2.1", "keras>=3.0"],
        "test": [
            "pytest>=8",
            "hypothesis>=6",
            "playwright>=1.45",
            "ruff>=0.17,<0.18",  # the test command checks formatting: one version formats
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
