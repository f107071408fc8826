"""The networks a run can train: the study's CNN (the classic Keras MNIST convnet, keras-io
`mnist_convnet`), a small BatchNorm ResNet (`build_resnet8`), or a builder of the user's own named by a
``package.module:function`` reference (`samlib.references`); `build_network` picks by the config's
``model``."""

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


def _residual_block(x, filters: int, stride: int, reg, name: str):
    """conv 3x3 (stride) → BN → ReLU → conv 3x3 → BN, plus the shortcut (a 1x1 conv + BN where the shape
    changes), then ReLU."""
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, kernel_regularizer=reg,
                            name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg,
                            name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        x = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, kernel_regularizer=reg,
                                name=f"{name}_proj")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(x)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([x, y]))


def build_resnet8(input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10,
                  config: Config | None = None, weight_decay: float | None = None) -> keras.Model:
    """A small ResNet with BatchNorm (He et al. 2016's CIFAR family, one block per stage): conv 3x3 16 → BN →
    ReLU, three stages of one residual block each (16, 32, 64 filters; stride 1, 2, 2), global average
    pooling, Dense. Returns **logits** (the softmax is in the loss, as for `build_cnn`); 8 weight layers
    on the main path, 78,426 parameters for 28x28x1 and 10 classes. Backend-neutral Keras 3 layers only.

    `weight_decay`: an L2 term on the kernels as in `build_cnn` (default: `config`'s, unless its
    optimizer applies weight decay itself). The config's dropout is not used (BatchNorm regularises)."""
    if weight_decay is None:
        weight_decay = _l2_of(config) if config is not None else 0.0
    reg = keras.regularizers.L2(weight_decay / 2) if weight_decay > 0 else None
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, kernel_regularizer=reg, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for i, (filters, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
        x = _residual_block(x, filters, stride, reg, name=f"stage{i + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=reg, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet8")


def _l2_of(config: Config) -> float:
    """The L2 coefficient of a run's loss: its weight decay, except for the optimizers that apply it
    themselves (AdamW, LARS, LAMB: `samlib.optimizers.BaseOptimizer.own_weight_decay`)."""
    return 0.0 if BASE_OPTIMIZERS[config.optimizer].own_weight_decay else config.weight_decay


def _cnn(input_shape: tuple[int, ...], num_classes: int, config: Config) -> keras.Model:
    return build_cnn(input_shape, num_classes, dropout=config.dropout, weight_decay=_l2_of(config))


#: the built-in networks by the name a config's ``model`` gives (`samlib.config.MODELS`), each called as
#: ``builder(input_shape, num_classes, config)`` like a user's own
BUILDERS = {"cnn": _cnn, "resnet8": build_resnet8}


def build_network(config: Config, data: Data) -> keras.Model:
    """The network of a run for `data`'s example shape and classes: the config's ``model``, a built-in
    (`BUILDERS`: the CNN with `config`'s dropout by default; weight decay is an L2 term in the loss
    except for the optimizers that apply it themselves, AdamW, LARS, LAMB) or a
    ``package.module:function`` builder called as ``function(input_shape, num_classes, config)``, which
    must return an uncompiled `keras.Model` whose outputs are logits."""
    from samlib.references import resolve

    name = getattr(config, "model", "cnn")
    builder = BUILDERS.get(name) or resolve(name)
    network = builder(data.input_shape, data.num_classes, config)
    if not isinstance(network, keras.Model):
        raise TypeError(f"model builder {name!r} returned {type(network).__name__}; expected a keras.Model")
    return network
