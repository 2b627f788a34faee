"""Keras callbacks that log CNN pictures for TensorBoard's CNN Viz tab.

Add one to `model.fit` and run `tensorboard --logdir <log_dir>`:

    from tb_cnnviz.callbacks import CNNViz
    model.fit(x, y, epochs=10, callbacks=[CNNViz("logs/run1", probe_images=x_val[:8])])
"""

from .actmax import ActivationMaximization
from .attribution import Attribution
from .base import VizCallback
from .cnnviz import CNNViz
from .feature_maps import FeatureMaps
from .references import References
from .snapshots import Snapshots
from .weights import FilterWeights

__all__ = [
    "ActivationMaximization",
    "Attribution",
    "CNNViz",
    "FeatureMaps",
    "FilterWeights",
    "References",
    "Snapshots",
    "VizCallback",
]
