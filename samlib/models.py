"""The CNN of the study: the classic Keras MNIST convnet (keras-io `mnist_convnet`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from samlib.optimizers import BASE_OPTIMIZERS

if TYPE_CHECKING:
    from samlib.config import Config
    from samlib.data import Data


def build_cnn(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    dropout: float = 0.5,
    weight_decay: float = 0.0,
) -> keras.Model:
    """Conv2D 32 3x3 ReLU -> MaxPool 2 -> Conv2D 64 3x3 ReLU -> MaxPool 2 -> Flatten -> Dropout -> Dense.

    Returns **logits** (train with ``from_logits=True``). 34,826 parameters for 28x28x1 and 10 classes.
    `weight_decay` > 0 adds an L2 penalty ``weight_decay/2 * ||W||^2`` on each kernel (its gradient is
    ``weight_decay * W``, classic coupled weight decay).
    """
    reg = keras.regularizers.L2(weight_decay / 2) if weight_decay > 0 else None
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.Conv2D(32, 3, activation="relu", kernel_regularizer=reg),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, activation="relu", kernel_regularizer=reg),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dropout(dropout),
            # float32 logits even under a mixed-precision policy (a stable softmax cross-entropy)
            keras.layers.Dense(num_classes, kernel_regularizer=reg, dtype="float32"),
        ],
        name="mnist_cnn",
    )


def build_network(config: Config, data: Data) -> keras.Model:
    """The CNN of a run: `build_cnn` for `data`'s image shape and classes with `config`'s dropout;
    weight decay is an L2 term in the loss except for the optimizers that apply it themselves (AdamW,
    LARS, LAMB: `samlib.optimizers.BaseOptimizer.own_weight_decay`)."""
    l2 = 0.0 if BASE_OPTIMIZERS[config.optimizer].own_weight_decay else config.weight_decay
    return build_cnn(data.input_shape, data.num_classes, dropout=config.dropout, weight_decay=l2)
