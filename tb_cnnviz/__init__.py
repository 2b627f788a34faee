"""tb-cnnviz: see what convolutional networks learn while they train.

Importing `tb_cnnviz` never imports TensorFlow: the TensorBoard side (`tb_cnnviz.plugin`) runs
without it. The training side lives in `tb_cnnviz.callbacks`, `tb_cnnviz.summary` and the other
TensorFlow modules, imported on demand. `tb_cnnviz.probe(logdir, run, image, ...)` (Keras on
any backend) is imported on first use.
"""

from tb_cnnviz.metadata import FORMAT_VERSION, KINDS, PLUGIN_NAME

__all__ = ["FORMAT_VERSION", "KINDS", "PLUGIN_NAME", "__version__", "probe"]

__version__ = "0.1.0"


def __getattr__(name):
    # `probe` imports Keras: only when asked for, so that `import tb_cnnviz` stays light. The
    # module is callable (`tb_cnnviz.probe(...)` runs `tb_cnnviz.probe.probe(...)`).
    if name == "probe":
        import importlib

        return importlib.import_module("tb_cnnviz.probe")
    raise AttributeError(f"module 'tb_cnnviz' has no attribute {name!r}")
