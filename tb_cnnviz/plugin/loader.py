"""How TensorBoard loads the plugin: `CNNVizLoader`, named by the `tensorboard_plugins` entry
point (`cnnviz = tb_cnnviz.plugin:CNNVizLoader`), and its default for `--samples_per_plugin`.
"""

from __future__ import annotations

from collections.abc import Mapping

from tensorboard.plugins import base_plugin

from tb_cnnviz import metadata
from tb_cnnviz.plugin.app import CNNVizPlugin

__all__ = ["DEFAULT_SAMPLES_PER_TAG", "CNNVizLoader"]

#: What `CNNVizLoader.fix_flags` puts in `--samples_per_plugin` for cnnviz when the user gave
#: nothing: 0 means "keep every step" in both of TensorBoard's loaders. Without it TensorBoard
#: keeps a random 10 steps per tag of a third-party plugin.
DEFAULT_SAMPLES_PER_TAG = 0


class CNNVizLoader(base_plugin.TBLoader):
    """Loads `CNNVizPlugin` and makes every logged step browsable by default.

    TensorBoard keeps only 10 random steps per tag of a third-party plugin unless told otherwise
    with `--samples_per_plugin=cnnviz=N`. `fix_flags` adds `cnnviz=0` ("keep every step", in both
    the Rust and the Python loader) when the user did not choose a value, so a step slider shows
    every epoch that was logged. An explicit user value, including `cnnviz=0`, is kept. With the
    Python loader (`--load_fast=false`) every kept step is held in memory; users with very long
    runs can cap it with `--samples_per_plugin=cnnviz=N`.

    Example:
        >>> import argparse
        >>> flags = argparse.Namespace(samples_per_plugin={"images": 5})
        >>> CNNVizLoader().fix_flags(flags)
        >>> flags.samples_per_plugin
        {'images': 5, 'cnnviz': 0}
    """

    def fix_flags(self, flags) -> None:
        """Defaults `flags.samples_per_plugin["cnnviz"]` to keep every step.

        TensorBoard 2.21's `program.TensorBoard.configure` calls this for the serve command after
        parsing, before any data loader starts. By then `--samples_per_plugin` has been parsed into
        a `{plugin_name: int}` dict (its argparse default `""` goes through the same parser, so
        it is `{}` when the flag is absent). A string can still arrive through
        `configure(samples_per_plugin="images=5")`; it is parsed the same way and replaced by a
        dict, which is what the loaders expect.

        Args:
            flags: The parsed `argparse.Namespace` of TensorBoard's flags.

        Raises:
            tensorboard.plugins.base_plugin.FlagsError: If `samples_per_plugin` is a string that
                is not a list of `name=int` pairs.

        Example:
            >>> import argparse
            >>> flags = argparse.Namespace(samples_per_plugin="cnnviz=7")
            >>> CNNVizLoader().fix_flags(flags)
            >>> flags.samples_per_plugin
            {'cnnviz': 7}
        """
        if not hasattr(flags, "samples_per_plugin"):
            return  # not TensorBoard's serve flags; nothing reads sampling from here
        value = flags.samples_per_plugin
        if value is None:
            value = {}
        elif isinstance(value, str):
            value = _parse_samples_per_plugin(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        else:
            return  # an unknown type: leave the user's value alone rather than guess
        value.setdefault(metadata.PLUGIN_NAME, DEFAULT_SAMPLES_PER_TAG)
        flags.samples_per_plugin = value

    def load(self, context: base_plugin.TBContext) -> CNNVizPlugin:
        """Returns the plugin for this TensorBoard.

        Args:
            context: The `TBContext` TensorBoard builds from its flags.

        Returns:
            A `CNNVizPlugin`.

        Example:
            >>> CNNVizLoader().load(base_plugin.TBContext()).plugin_name
            'cnnviz'
        """
        return CNNVizPlugin(context)


def _parse_samples_per_plugin(value: str) -> dict[str, int]:
    """Parses `"a=1,b=2"` like TensorBoard's own `--samples_per_plugin` parser."""
    result = {}
    for token in value.split(","):
        if not token.strip():
            continue
        name, _, count = token.partition("=")
        try:
            result[name.strip()] = int(count)  # int("") fails too: a token without "="
        except ValueError:
            raise base_plugin.FlagsError(
                "samples_per_plugin must be comma-separated name=count pairs. "
                f"Received: samples_per_plugin={value!r}"
            ) from None
    return result
