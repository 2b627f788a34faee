"""tb-cnnviz: see what convolutional networks learn while they train.

Importing `tb_cnnviz` never imports TensorFlow: the TensorBoard side (`tb_cnnviz.plugin`) runs
without it. The training side lives in `tb_cnnviz.callbacks`, `tb_cnnviz.summary` and the other
TensorFlow modules, imported on demand.
"""

from tb_cnnviz.metadata import FORMAT_VERSION, KINDS, PLUGIN_NAME

__all__ = ["FORMAT_VERSION", "KINDS", "PLUGIN_NAME", "__version__"]

__version__ = "0.1.0"
