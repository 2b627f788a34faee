"""The TensorBoard side of tb-cnnviz: the "CNN Viz" tab's backend.

This package never imports TensorFlow: TensorBoard loads it through the `tensorboard_plugins`
entry point (`cnnviz = tb_cnnviz.plugin:CNNVizLoader`) in a process that may have no TensorFlow
at all. It reads only through `context.data_provider`, so it serves the same answers under
TensorBoard's Rust data server (`--load_fast=true`, the default where available) and under the
Python loader (`--load_fast=false`). The on-disk format it reads is the one described in the
`tb_cnnviz.summary` docstring; only `tb_cnnviz.metadata` (and the NumPy-only `similarity`) are
shared with the writing side.

One job per module, as TensorBoard's own grown-up plugins are cut:

* `loader`: `CNNVizLoader`, how TensorBoard loads the plugin, and the default that keeps every
  logged step (`--samples_per_plugin`);
* `app`: `CNNVizPlugin`, TensorBoard's plugin interface and the thin routes;
* `wsgi`: strict request parsing, JSON responses, errors as JSON (never an opaque 500);
* `static`: the dashboard's files, guarded against traversal;
* `data`: every read through the data provider, and every cache with its bound;
* `pictures`: runs, tags, a layer's pictures, statistics, blobs;
* `plans`: what the callbacks drew at each step, with costs, and what they left out, and why;
* `comparisons`: CKA heatmaps, filter alignment, dataset examples.

Routes live under `/data/plugin/cnnviz/`; `tb_cnnviz/http_api.md` documents each one.
"""

from tb_cnnviz.plugin.app import BLOB_MAX_AGE_SECONDS, CNNVizPlugin
from tb_cnnviz.plugin.comparisons import SIMILARITY_MODES, ReferenceMismatchError
from tb_cnnviz.plugin.data import SERIES_FRESH_SECONDS, read_downsample
from tb_cnnviz.plugin.loader import DEFAULT_SAMPLES_PER_TAG, CNNVizLoader

__all__ = [
    "BLOB_MAX_AGE_SECONDS",
    "DEFAULT_SAMPLES_PER_TAG",
    "SERIES_FRESH_SECONDS",
    "SIMILARITY_MODES",
    "CNNVizLoader",
    "CNNVizPlugin",
    "ReferenceMismatchError",
    "read_downsample",
]
