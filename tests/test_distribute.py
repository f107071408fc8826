"""Data-parallel SAM on 2 logical CPU devices against the single-device numpy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from reference import assert_step_matches, data, mlp, ref_sam_step
from samlib import devices
from samlib.config import Config
from samlib.sam import SAM
from samlib.train import train_and_evaluate
from test_train import tiny_data


def mirrored() -> tf.distribute.Strategy:
    strategy = devices.make_strategy(Config.from_dict({"strategy": "mirrored"}))
    assert strategy.num_replicas_in_sync == 2
    assert strategy is devices.make_strategy(Config.from_dict({"strategy": "mirrored"}))  # one per process
    return strategy


def one_mirrored_step(x, y, **sam_kwargs):
    with mirrored().scope():
        net = mlp()
        model = SAM(net, **sam_kwargs)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss_at_w0 = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=net(x))).numpy()
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    # the reported loss is the global-batch mean at w, not a per-replica share of it
    np.testing.assert_allclose(history.history["loss"][0], loss_at_w0, rtol=1e-5)
    return [v.numpy() for v in net.trainable_variables]


def test_per_replica_perturbation_equals_msam_with_m_per_replica_batch():
    x, y, _ = data(n=8)
    w0, w_ref, _ = ref_sam_step(mlp(), x, y, rho=0.1, m=4)  # 8 examples over 2 replicas: 4 each
    assert_step_matches(w0, w_ref, one_mirrored_step(x, y, rho=0.1))
    # and it is not global-batch SAM (the test can tell the two apart)
    _, w_global, _ = ref_sam_step(mlp(), x, y, rho=0.1)
    assert max(np.max(np.abs(a - b)) for a, b in zip(w_global, w_ref)) > 1e-4 * max(np.max(np.abs(a - b)) for a, b in zip(w_ref, w0))


def test_sync_perturbation_equals_single_device_sam_on_the_global_batch():
    x, y, _ = data(n=8)
    w0, w_ref, _ = ref_sam_step(mlp(), x, y, rho=0.1)
    assert_step_matches(w0, w_ref, one_mirrored_step(x, y, rho=0.1, sync_perturbation=True))


def test_strategy_selection_on_cpu():
    assert devices.make_strategy(Config.from_dict({"strategy": "none"})).num_replicas_in_sync == 1
    assert devices.make_strategy(Config.from_dict({"strategy": "auto"})).num_replicas_in_sync == 1  # < 2 GPUs
    assert devices.resolve_jit(Config.from_dict({})) is False  # XLA off on CPU by default
    assert devices.resolve_jit(Config.from_dict({"jit_compile": True})) is True


@pytest.mark.parametrize("sam", ["sam", "looksam"])
def test_training_run_under_mirrored_strategy(sam):
    metrics = train_and_evaluate(Config.from_dict(dict(strategy="mirrored", sam=sam, batch_size=32, epochs=1, verbose=0, dropout=0.5)), tiny_data()).metrics
    assert metrics["replicas"] == 2 and metrics["status"] == "ok" and metrics["steps"] == 3
