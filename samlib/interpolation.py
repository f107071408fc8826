"""Loss and accuracy along the straight line between two sets of weights (Keskar et al. 2017, Fig. 3;
Goodfellow et al. 2015): `interpolate`. The loss is the objective f of `samlib.objective` (the exact
mean over the data, inference mode), from `samlib.evaluation.Evaluator`; the model's own weights are
never assigned to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd
from keras import ops

from samlib import backends
from samlib.config import SharpnessSettings
from samlib.evaluation import Evaluator

_DEFAULTS = SharpnessSettings()  #: the evaluation batch default is the sharpness settings'


def interpolate(
    model: keras.Model,
    weights_a: Sequence[np.ndarray],
    weights_b: Sequence[np.ndarray],
    loss: Any,
    data: Any,
    alphas: Iterable[float] = np.linspace(-1.0, 2.0, 25),
    batch_size: int = _DEFAULTS.batch_size,
) -> pd.DataFrame:
    """Loss and accuracy along θ(α) = (1 − α)·a + α·b (Keskar et al. 2017, Fig. 3; Goodfellow et al. 2015).

    `weights_a`, `weights_b`: lists in `model.get_weights()` order. Every floating weight is interpolated,
    BatchNorm moving statistics included; non-float ones (none in the study's CNN) are taken from a.
    `data` has x_train, y_train, x_test, y_test. Loss is f of `samlib.objective` (exact mean, inference
    mode); accuracy is the fraction with argmax(logits) == y (NaN for non-integer targets).
    Returns columns alpha, train_loss, train_accuracy, test_loss, test_accuracy. The model's own weights
    are not touched.
    """
    weights = list(model.weights)
    if len(weights_a) != len(weights) or len(weights_b) != len(weights):
        raise ValueError(
            f"expected {len(weights)} arrays (model.get_weights() order), got {len(weights_a)} and {len(weights_b)}"
        )
    for v, a, b in zip(weights, weights_a, weights_b):
        if tuple(np.shape(a)) != tuple(v.shape) or tuple(np.shape(b)) != tuple(v.shape):
            raise ValueError(f"weight {v.path}: shape {tuple(v.shape)}, got {np.shape(a)} and {np.shape(b)}")
    position = {id(v): i for i, v in enumerate(weights)}
    train = Evaluator(model, data.x_train, data.y_train, batch_size, loss=loss, dtype="float64")
    test = train.split(data.x_test, data.y_test)

    rows = []
    for alpha in alphas:
        alpha = float(alpha)
        values = []
        for v in train.variables:
            if id(v) not in position:  # e.g. dropout seed state: not part of get_weights()
                values.append(backends.snapshot(v))
                continue
            a = np.asarray(weights_a[position[id(v)]])
            b = np.asarray(weights_b[position[id(v)]])
            if np.issubdtype(a.dtype, np.floating):
                mixed = (1.0 - alpha) * a.astype(np.float64) + alpha * b.astype(np.float64)
            else:
                mixed = a
            values.append(ops.convert_to_tensor(np.asarray(mixed).astype(v.dtype)))
        train_loss, train_acc = train(values)
        test_loss, test_acc = test(values)
        rows.append((alpha, train_loss, train_acc, test_loss, test_acc))
    return pd.DataFrame(rows, columns=["alpha", "train_loss", "train_accuracy", "test_loss", "test_accuracy"])
