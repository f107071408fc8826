"""Data-parallel SAM on 2 logical CPU devices against the single-device numpy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from reference import assert_step_matches, data, mlp, ref_sam_step
from samlib import devices
from samlib.config import Config
from samlib.evaluation import Evaluator
from samlib.models import build_cnn
from samlib.sam import SAM
from samlib.train import prepare_data, train_and_evaluate
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


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy from logits, in numpy float64."""
    logits = logits.astype(np.float64)
    top = logits.max(1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def l2_penalty(network: keras.Model) -> float:
    """Σ model.losses by hand: each regularized kernel's L2 term, in numpy float64."""
    return sum(float(layer.kernel_regularizer.l2) * float(np.sum(layer.kernel.numpy().astype(np.float64) ** 2))
               for layer in network.layers if getattr(layer, "kernel_regularizer", None) is not None)


def test_mirrored_run_reports_the_true_inference_loss_not_a_per_replica_share():
    # the evaluators are built and called inside strategy.scope(), where a Keras loss scales its mean by
    # 1/replicas: the reported losses were halved, and a loss target of 1.5 (< ln 10) stopped the run at once
    config = Config.from_dict(dict(strategy="mirrored", batch_size=32, epochs=1, verbose=0, weight_decay=1e-3,
                                   eval_batch_size=40, target_loss=1.5))
    data = prepare_data(config, tiny_data())  # the run's own train/val split: 84 and 12 images
    result = train_and_evaluate(config, data)
    metrics, network = result.metrics, result.model
    assert metrics["replicas"] == 2 and metrics["status"] == "ok" and metrics["steps"] == 3
    assert metrics["stop_reason"] == "epochs"  # every loss check saw the true loss, above the target
    penalty = l2_penalty(network)
    assert penalty > 0
    for split, x, y in (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val),
                        ("test", data.x_test, data.y_test)):
        expected = cross_entropy(network(x, training=False).numpy(), y) + penalty
        assert metrics[f"{split}_loss"] == pytest.approx(expected, rel=1e-5), split


def scaled(variables) -> list[tf.Tensor]:
    """The variables' values, the float ones times 1.5 (the seed generator's state as it is)."""
    return [tf.identity(v.value) * 1.5 if "float" in str(v.dtype) else tf.identity(v.value) for v in variables]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_evaluator_inside_a_two_replica_scope_gives_the_loss_of_one_outside(dtype):
    data = tiny_data(n_train=50)
    strategy = mirrored()
    with strategy.scope():
        keras.utils.set_random_seed(0)
        network = build_cnn(weight_decay=1e-2)
        inside = Evaluator(network, data.x_train, data.y_train, 16, dtype=dtype)  # 3 batches of 16 + 2
        loss_in, accuracy_in = inside()
        mapped_in = inside(scaled(inside.variables))
    outside = Evaluator(network, data.x_train, data.y_train, 16, dtype=dtype)
    loss_out, accuracy_out = outside()
    assert loss_in == pytest.approx(loss_out, rel=1e-6) and accuracy_in == accuracy_out
    assert mapped_in[0] == pytest.approx(outside(scaled(outside.variables))[0], rel=1e-6)  # at given values too
    expected = cross_entropy(network(data.x_train, training=False).numpy(), data.y_train) + l2_penalty(network)
    assert loss_in == pytest.approx(expected, rel=1e-5)
