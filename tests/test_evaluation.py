"""samlib.evaluation.Evaluator: the exact inference-mode mean loss, at the live weights or at given values."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from samlib.evaluation import Evaluator, make_loss


def problem(seed: int = 0, weight_decay: float = 0.0):
    """Dense(6, tanh) -> Dropout -> Dense(3) with an optional L2 penalty, 50 samples (3 batches of 16 + 2)."""
    rng = np.random.default_rng(seed)
    reg = keras.regularizers.L2(weight_decay) if weight_decay else None
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="tanh", kernel_regularizer=reg),
                              keras.layers.Dropout(0.5), keras.layers.Dense(3, kernel_regularizer=reg)])
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()])
    x = rng.standard_normal((50, 4)).astype(np.float32)
    y = rng.integers(0, 3, 50).astype(np.int32)
    return model, x, y


def by_hand(model, x, y, weight_decay=0.0):
    """Mean cross-entropy of the full set (dropout off) plus the L2 penalty, in numpy float64."""
    w1, b1, w2, b2 = [w.astype(np.float64) for w in model.get_weights()]
    logits = np.tanh(x @ w1 + b1) @ w2 + b2
    top = logits.max(1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
    penalty = weight_decay * ((w1 ** 2).sum() + (w2 ** 2).sum())
    return -log_p[np.arange(len(y)), y].mean() + penalty, (logits.argmax(1) == y).mean()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_the_exact_mean_with_a_partial_last_batch_and_regularization(dtype, weight_decay):
    model, x, y = problem(weight_decay=weight_decay)
    loss, accuracy = Evaluator(model, x, y, 16, dtype=dtype)()
    expected_loss, expected_accuracy = by_hand(model, x, y, weight_decay)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert accuracy == expected_accuracy


def test_values_are_mapped_without_touching_the_weights_and_splits_share_the_functions():
    model, x, y = problem(seed=1, weight_decay=1e-2)
    live = model.get_weights()
    other = [w * 0.5 + 0.1 for w in live]
    for dtype in ("float32", "float64"):
        evaluator = Evaluator(model, x, y, 16, dtype=dtype)
        test = evaluator.split(x[:20], y[:20])
        assert test._terms is evaluator._terms and test.n == 20
        values = [tf.constant(w) for w in other] + [tf.identity(v.value) for v in model.non_trainable_variables]
        mapped, mapped_test = evaluator(values), test(values)
        for a, b in zip(model.get_weights(), live):
            np.testing.assert_array_equal(a, b)  # nothing assigned
        model.set_weights(other)
        assert evaluator() == mapped and test() == mapped_test  # the same number at the live weights
        model.set_weights(live)
        with pytest.raises(ValueError, match="values"):
            evaluator(values[:-1])


def test_batch_loss_is_the_per_batch_term_that_differentiates():
    model, x, y = problem(seed=2, weight_decay=1e-2)
    evaluator = Evaluator(model, x, y, 16, dtype="float64")
    values = [tf.identity(v.value) for v in evaluator.variables]
    with tf.GradientTape() as tape:
        tape.watch(values)
        f = sum(weight * evaluator.batch_loss(values, xb, yb) for xb, yb, weight in evaluator.batches)
    assert f.dtype == tf.float64 and float(f) == pytest.approx(evaluator(values)[0], rel=1e-6)  # eager vs graph float32
    grads = tape.gradient(f, values[: len(model.trainable_variables)])
    with tf.GradientTape() as tape:
        g = make_loss()(y, model(x, training=False)) + tf.add_n(model.losses)
    expected = tape.gradient(g, model.trainable_variables)
    for a, b in zip(grads, expected):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_non_integer_targets_have_no_accuracy_and_bad_inputs_are_refused():
    model, x, _ = problem(seed=3)
    mse = keras.losses.MeanSquaredError()
    targets = np.zeros((50, 3), np.float32)
    loss, accuracy = Evaluator(model, x, targets, 16, loss=mse, dtype="float64")()
    assert loss == pytest.approx(float(np.mean(model.predict(x, verbose=0) ** 2)), rel=1e-5) and np.isnan(accuracy)
    with pytest.raises(ValueError, match="equal length"):
        Evaluator(model, x, targets[:10], 16)
    with pytest.raises(ValueError, match="batch_size"):
        Evaluator(model, x, targets, 0)
    with pytest.raises(ValueError, match="dtype"):
        Evaluator(model, x, targets, 16, dtype="float16")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_with_correct_says_which_examples_are_right_from_the_same_pass(dtype):
    model, x, y = problem(seed=4, weight_decay=1e-2)
    evaluator = Evaluator(model, x, y, 16, dtype=dtype)  # 3 batches of 16 and one of 2
    loss, accuracy, correct = evaluator.with_correct()
    assert correct.dtype == bool and correct.shape == (50,)
    expected = np.asarray(model(x, training=False)).argmax(1) == y  # numpy, split order
    np.testing.assert_array_equal(correct, expected)
    assert correct.mean() == accuracy == by_hand(model, x, y)[1]  # exactly: the same hits over the same N
    assert (loss, accuracy) == evaluator()  # the numbers of an ordinary call, to the bit
    test = evaluator.split(x[:21], y[:21])  # shares the compiled functions
    assert test._hits is evaluator._hits
    np.testing.assert_array_equal(test.with_correct()[2], expected[:21])
    with pytest.raises(ValueError, match="integer class labels"):
        Evaluator(model, x, np.zeros((50, 3), np.float32), 16, loss=keras.losses.MeanSquaredError()).with_correct()
