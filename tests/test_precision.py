"""SAM under mixed precision: bfloat16 close to float32; float16 with Keras' loss-scale optimizer
builds ε̂ from unscaled gradients, unscales the step once, and skips a step that overflows."""

import keras
import numpy as np
import pytest

from reference import data, mlp
from samlib import devices
from samlib.sam import SAM

BF16_TOL = 5e-2  # bfloat16 keeps 8 mantissa bits: steps agree with float32 to a few per cent
F16_TOL = 1e-2  # float16 keeps 11


def step(policy, x, y, optimizer=None, steps=1):
    with devices.precision(policy):
        net = mlp()
        model = SAM(net, rho=0.1)
        model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        w0 = [v.numpy() for v in net.trainable_variables]
        for _ in range(steps):
            model.train_on_batch(x, y)
        return w0, [v.numpy() for v in net.trainable_variables], model


def relative_step_error(w0, ref, got):
    step_size = max(np.max(np.abs(r - w)) for r, w in zip(ref, w0))
    return max(np.max(np.abs(r - g)) for r, g in zip(ref, got)) / step_size


def test_mixed_bfloat16_matches_float32_within_tolerance():
    x, y, _ = data()
    w0, ref, _ = step("float32", x, y)
    _, got, _ = step("mixed_bfloat16", x, y)
    assert relative_step_error(w0, ref, got) < BF16_TOL


def test_mixed_float16_with_loss_scaling_unscales_once():
    x, y, _ = data()
    w0, ref, _ = step("float32", x, y)
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=2.0**15)
    _, got, model = step("mixed_float16", x, y, optimizer=optimizer)
    # unscaled twice, the step would be 2**15 times too small; never unscaled, 2**15 too large
    assert relative_step_error(w0, ref, got) < F16_TOL
    assert float(model.optimizer.dynamic_scale.numpy()) == 2.0**15  # no overflow: scale kept


def test_overflowing_step_is_skipped_and_scale_lowered():
    x, y, _ = data()
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=1e30)
    w0, got, model = step("mixed_float16", x, y, optimizer=optimizer)
    for a, b in zip(w0, got):
        np.testing.assert_array_equal(a, b)
    assert float(model.optimizer.dynamic_scale.numpy()) == pytest.approx(5e29, rel=1e-3)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_training_run_with_mixed_precision_restores_the_policy(policy):
    from samlib.config import Config
    from samlib.train import train_and_evaluate
    from test_train import tiny_data

    result = train_and_evaluate(Config.from_dict(dict(precision=policy, sam="sam", batch_size=32, epochs=1, verbose=0)), tiny_data())
    assert result.metrics["status"] == "ok"
    assert result.model.layers[0].compute_dtype == policy.split("_")[1]
    assert result.model.layers[-1].compute_dtype == "float32"  # logits
    assert keras.config.dtype_policy().name == "float32"
