"""The demo CNN: the classic small image classifier of the TensorFlow CNN tutorial."""

from __future__ import annotations

__all__ = ["build_demo_cnn"]


def build_demo_cnn(learning_rate: float = 1e-3, *, num_classes: int = 10, seed: int = 0):
    """Builds and compiles the demo CNN for 32x32 RGB images in [0, 1].

    Conv32-Conv32-MaxPool-Conv64-Conv64-MaxPool-Flatten-Dense128-Dense10, trained with Adam. The
    conv layers are named `conv1` to `conv4`.

    Args:
        learning_rate: Adam's learning rate.
        num_classes: Output classes.
        seed: Seed for the initial weights.

    Returns:
        A compiled `keras.Model`.

    Example:
        >>> model = build_demo_cnn()
        >>> [layer.name for layer in model.layers[:2]]
        ['conv1', 'conv2']
    """
    import keras

    keras.utils.set_random_seed(seed)
    conv = {"kernel_size": 3, "padding": "same", "activation": "relu"}
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3), name="image"),
            keras.layers.Conv2D(32, name="conv1", **conv),
            keras.layers.Conv2D(32, name="conv2", **conv),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(64, name="conv3", **conv),
            keras.layers.Conv2D(64, name="conv4", **conv),
            keras.layers.MaxPooling2D(name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(128, activation="relu", name="dense"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="demo_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
