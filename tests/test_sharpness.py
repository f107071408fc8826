"""samlib.sharpness against exact values computed here, independently of the module under test.

- Hessians: in float64 numpy, central differences of the hand-written backpropagation gradient of a
  hand-written forward pass (not the Keras model; error ~1e-9) and diagonalised with numpy; for least
  squares H = 2/n·X̃ᵀX̃ in closed form. Written with no backend, so the file runs on TensorFlow and JAX.
- Keskar: the exact maximum of a convex quadratic over the box, by enumerating all 2^d vertices.
- SAM sharpness and the interpolation line: closed forms in numpy.
"""

from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from reference import value_and_grad
from samlib import sharpness as S
from samlib.config import Config
from samlib.models import build_cnn

MSE = keras.losses.MeanSquaredError()
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# ----------------------------------------------------------------------------- problems
def tiny_mlp(seed: int = 0):
    """Dense(8, tanh) -> Dense(3) on 4 inputs (67 parameters), fixed weights, 64 samples."""
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    model.set_weights([(rng.standard_normal(w.shape) * 0.8).astype(np.float32) for w in model.get_weights()])
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int32)
    return model, x, y


def mlp_hessian(model: keras.Model, x: np.ndarray, y: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """The 67x67 Hessian of the mean cross-entropy, float64: central differences (step `h`) of the
    gradient of a hand-written forward pass, backpropagated by hand (error ~1e-9)."""
    shapes = [w.shape for w in model.get_weights()]
    theta = np.concatenate([w.ravel() for w in model.get_weights()]).astype(np.float64)
    xs, onehot = x.astype(np.float64), np.eye(3)[y]

    def grad(t):
        parts, i = [], 0
        for s in shapes:
            k = int(np.prod(s))
            parts.append(t[i : i + k].reshape(s))
            i += k
        w1, b1, w2, b2 = parts
        hidden = np.tanh(xs @ w1 + b1)
        logits = hidden @ w2 + b2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        d_logits = (p / p.sum(axis=1, keepdims=True) - onehot) / len(xs)
        d_z = d_logits @ w2.T * (1 - hidden**2)
        return np.concatenate([(xs.T @ d_z).ravel(), d_z.sum(0), (hidden.T @ d_logits).ravel(), d_logits.sum(0)])

    eye = np.eye(len(theta))
    hessian = np.stack([(grad(theta + h * e) - grad(theta - h * e)) / (2 * h) for e in eye], axis=1)
    return (hessian + hessian.T) / 2


def least_squares(seed: int = 0, d: int = 7, n: int = 64, at_minimum: bool = True, orthogonal: bool = False):
    """A Dense(1) model (d weights + bias), MSE; returns model, X, y, X̃ = [X, 1] in float64."""
    rng = np.random.default_rng(seed)
    if orthogonal:  # columns of [X, 1] mutually orthogonal -> H = 2/n X̃ᵀX̃ is diagonal
        q, _ = np.linalg.qr(np.c_[np.ones(n), rng.standard_normal((n, d))])
        x = q[:, 1:] * rng.uniform(1.0, 5.0, d) * math.sqrt(n)
    else:  # features with non-zero means, as data have
        x = rng.standard_normal((n, d)) + rng.uniform(0.5, 2.0, d)
    x = x.astype(np.float32)
    y = (x @ rng.standard_normal(d) + 1.0 + 0.3 * rng.standard_normal(n)).astype(np.float32)[:, None]
    x1 = np.c_[x.astype(np.float64), np.ones(n)]
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1)])
    if at_minimum:
        w = np.linalg.lstsq(x1, y.astype(np.float64), rcond=None)[0].ravel()
    else:
        w = rng.standard_normal(d + 1)
    model.set_weights([w[:d, None].astype(np.float32), w[d:].astype(np.float32)])
    return model, x, y, x1


def flat(model: keras.Model) -> np.ndarray:
    return np.concatenate([w.ravel() for w in model.get_weights()]).astype(np.float64)


def mse(x1: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return float(np.mean((x1 @ w - y.astype(np.float64).ravel()) ** 2))


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v.numpy(), copy=True) for v in model.variables]


def assert_same(model: keras.Model, before: list[np.ndarray]) -> None:
    after = snapshot(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- Hessian
def test_lambda_max_and_trace_match_exact_hessian_of_tiny_mlp():
    model, x, y = tiny_mlp()
    eig = np.linalg.eigvalsh(mlp_hessian(model, x, y))
    exact_top = eig[np.argmax(np.abs(eig))]
    top = S.hessian_top_eigenvalue(model, CE, x, y, iters=500, tol=1e-7, batch_size=24)  # 3 batches, last partial
    assert top == pytest.approx(exact_top, rel=0.01)
    trace, stderr = S.hessian_trace(model, CE, x, y, samples=300, seed=1, return_stderr=True)
    assert trace == pytest.approx(eig.sum(), rel=0.15)
    assert abs(trace - eig.sum()) <= 2 * stderr
    assert S.hessian_trace(model, CE, x, y, samples=300, seed=1) == trace  # the float form, same seed


def test_least_squares_hessian_is_two_over_n_xtx():
    model, x, y, x1 = least_squares(seed=3, at_minimum=False)
    eig = np.linalg.eigvalsh(2.0 / len(x1) * x1.T @ x1)
    assert S.hessian_top_eigenvalue(model, MSE, x, y, iters=1000, tol=1e-9) == pytest.approx(eig[-1], rel=1e-3)
    trace, stderr = S.hessian_trace(model, MSE, x, y, samples=400, return_stderr=True)
    assert abs(trace - eig.sum()) <= max(2 * stderr, 1e-3) and trace == pytest.approx(eig.sum(), rel=0.15)


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    model, x, y, x1 = least_squares(seed=4, orthogonal=True)
    hessian = 2.0 / len(x1) * x1.T @ x1
    assert np.abs(hessian - np.diag(np.diag(hessian))).max() < 1e-6 * np.abs(hessian).max()
    trace, stderr = S.hessian_trace(model, MSE, x, y, samples=5, return_stderr=True)
    assert trace == pytest.approx(np.trace(hessian), rel=1e-4)  # every Rademacher sample gives Σ H_ii
    assert stderr <= 1e-4 * np.trace(hessian)


# ----------------------------------------------------------------------------- Keskar
@pytest.mark.parametrize("seed", [0, 1])
def test_keskar_on_a_quadratic_at_its_exact_minimum_matches_the_vertex_enumeration(seed):
    model, x, y, x1 = least_squares(seed=seed)  # 8 parameters -> 256 vertices
    w = flat(model)
    eps = 0.05
    half = eps * (np.abs(w) + 1.0)
    f0 = mse(x1, y, w)
    best = max(mse(x1, y, w + np.array(s) * half) for s in itertools.product([-1.0, 1.0], repeat=len(w)))
    exact = 100.0 * (best - f0) / (1.0 + f0)
    assert exact > 1.0  # a sharp enough minimum that the test means something
    score = S.keskar_sharpness(model, MSE, x, y, epsilon=eps, max_iter=10)
    assert 0.9 * exact <= score <= exact * (1 + 1e-5) + 1e-6
    sub = S.keskar_sharpness(model, MSE, x, y, epsilon=eps, subspace_dim=3, seed=seed)
    assert 0.0 <= sub <= score


def test_keskar_away_from_a_minimum_matches_the_vertex_enumeration():
    model, x, y, x1 = least_squares(seed=5, at_minimum=False)
    w = flat(model)
    eps = 1e-4
    half = eps * (np.abs(w) + 1.0)
    f0 = mse(x1, y, w)
    best = max(mse(x1, y, w + np.array(s) * half) for s in itertools.product([-1.0, 1.0], repeat=len(w)))
    exact = 100.0 * (best - f0) / (1.0 + f0)
    assert S.keskar_sharpness(model, MSE, x, y, epsilon=eps) == pytest.approx(exact, rel=1e-3)


# ----------------------------------------------------------------------------- SAM, interpolation
def test_sam_sharpness_matches_closed_form():
    model, x, y, x1 = least_squares(seed=6, at_minimum=False)
    w = flat(model)
    g = 2.0 / len(x1) * x1.T @ (x1 @ w - y.astype(np.float64).ravel())
    rho = 0.05
    exact = mse(x1, y, w + rho * g / np.linalg.norm(g)) - mse(x1, y, w)
    assert S.sam_sharpness(model, MSE, x, y, rho=rho, batch_size=10) == pytest.approx(exact, rel=1e-3)


def test_interpolate_endpoints_and_linear_line():
    model, x, y = tiny_mlp(seed=1)
    a = model.get_weights()
    b = [w + np.random.default_rng(9).standard_normal(w.shape).astype(np.float32) * 0.3 for w in a]
    data = SimpleNamespace(x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    frame = S.interpolate(model, a, b, CE, data, alphas=[0.0, 0.5, 1.0], batch_size=16)
    assert list(frame.columns) == ["alpha", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    assert_same_weights = [w.copy() for w in model.get_weights()]
    for alpha, weights in ((0.0, a), (1.0, b)):
        model.set_weights(weights)
        for xs, ys, split in ((x, y, "train"), (x[:20], y[:20], "test")):
            logits = keras.ops.convert_to_numpy(model(xs, training=False)).astype(np.float64)
            log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
            row = frame[frame.alpha == alpha].iloc[0]
            assert row[f"{split}_loss"] == pytest.approx(-log_p[np.arange(len(ys)), ys].mean(), rel=1e-5)
            assert row[f"{split}_accuracy"] == pytest.approx((logits.argmax(1) == ys).mean())
    model.set_weights(assert_same_weights)

    lin, xl, yl, x1 = least_squares(seed=7, at_minimum=False)
    wa = lin.get_weights()
    wb = [w + 1.0 for w in wa]
    alphas = np.linspace(-1, 2, 7)
    line = S.interpolate(lin, wa, wb, MSE, SimpleNamespace(x_train=xl, y_train=yl, x_test=xl[:9], y_test=yl[:9]), alphas)
    fa, fb = flat(lin), flat(lin) + 1.0
    expected = [mse(x1, yl, (1 - t) * fa + t * fb) for t in alphas]
    np.testing.assert_allclose(line.train_loss, expected, rtol=1e-5)
    np.testing.assert_allclose(line.test_loss, [mse(x1[:9], yl[:9], (1 - t) * fa + t * fb) for t in alphas], rtol=1e-5)


# ----------------------------------------------------------------------------- weights untouched
def bn_model():
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(6), keras.layers.BatchNormalization(), keras.layers.Activation("relu"),
         keras.layers.Dropout(0.5), keras.layers.Dense(3)]
    )
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 5)).astype(np.float32) * 3 + 1
    y = rng.integers(0, 3, 40).astype(np.int32)
    model.compile(optimizer="sgd", loss=CE)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # moving statistics away from their init
    return model, x, y


class RaisingLoss(keras.losses.Loss):
    """Cross-entropy that raises (at run time, inside the compiled graph) on its n-th evaluation."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.calls = n, 0

    def _count(self, zero):
        self.calls += 1
        if self.calls >= self.n:
            raise RuntimeError("boom")
        return zero

    def call(self, y_true, y_pred):
        per_sample = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        # a constant 0 that runs Python on every evaluation (TF: numpy_function; JAX: a callback)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            zero = tf.numpy_function(self._count, [tf.constant(0.0)], tf.float32, stateful=True)
            return per_sample + tf.reshape(zero, [])
        import jax

        zero = jax.pure_callback(lambda z: np.asarray(self._count(z), np.float32),
                                 jax.ShapeDtypeStruct((), np.float32), np.float32(0.0))
        return per_sample * (1.0 + zero)  # a factor, so gradients and H v need the callback's value too


def test_weights_and_batchnorm_statistics_unchanged_including_after_an_exception():
    model, x, y = bn_model()
    moving = [v for v in model.non_trainable_variables if "moving" in v.path]
    assert moving and not np.allclose(moving[0].numpy(), 0.0)
    before = snapshot(model)
    calls = [
        lambda loss: S.keskar_sharpness(model, loss, x, y, max_iter=3, batch_size=16),
        lambda loss: S.keskar_sharpness(model, loss, x, y, max_iter=3, subspace_dim=4),
        lambda loss: S.hessian_top_eigenvalue(model, loss, x, y, iters=5, batch_size=16),
        lambda loss: S.hessian_trace(model, loss, x, y, samples=3),
        lambda loss: S.sam_sharpness(model, loss, x, y, batch_size=16),
        lambda loss: S.measure(model, loss, x, y, epsilons=(1e-3,), max_iter=2, iters=3, samples=2),
        lambda loss: S.interpolate(model, model.get_weights(), [w * 0 for w in model.get_weights()], loss,
                                   SimpleNamespace(x_train=x, y_train=y, x_test=x, y_test=y), [0.5, 2.0]),
    ]
    for call in calls:
        call(CE)
        assert_same(model, before)
        with pytest.raises(Exception, match="boom"):
            call(RaisingLoss(n=3))
        assert_same(model, before)
    # inference mode: dropout off, moving statistics used -> a repeat gives the identical number
    assert S.sam_sharpness(model, CE, x, y) == S.sam_sharpness(model, CE, x, y)


def test_inference_mode_dropout_off_batchnorm_moving_statistics():
    """sam_sharpness on a Dropout+BatchNorm model equals the same quantity computed here eagerly."""
    model, x, y = bn_model()
    before = model.get_weights()
    states = [v.value for v in model.non_trainable_variables]
    f0, _, grads = value_and_grad(lambda w: (CE(y, model.stateless_call(w, states, x, training=False)[0]), None),
                                  [v.numpy() for v in model.trainable_variables])
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
    for v, g in zip(model.trainable_variables, grads):
        v.assign_add((0.05 * g / norm).astype("float32"))
    expected = float(CE(y, model(x, training=False))) - float(f0)
    model.set_weights(before)
    assert S.sam_sharpness(model, CE, x, y, rho=0.05, batch_size=16) == pytest.approx(expected, rel=1e-3)


def test_a_sam_wrapper_is_measured_like_its_network():
    from samlib.sam import SAM

    model, x, y = tiny_mlp(seed=2)
    wrapped = SAM(model, rho=0.05)
    wrapped(x[:1])
    assert S.hessian_top_eigenvalue(wrapped, CE, x, y, iters=20) == pytest.approx(
        S.hessian_top_eigenvalue(model, CE, x, y, iters=20), rel=1e-6
    )


# ----------------------------------------------------------------------------- measure, callback, CLI
def test_measure_keys_and_consistency():
    model, x, y, _ = least_squares(seed=8, at_minimum=False)
    out = S.measure(model, MSE, x, y, S.MEASURES, epsilons=(1e-3, 5e-4), iters=50, samples=4, max_iter=5)
    for key in ("keskar_1e-03", "keskar_5e-04", "lambda_max", "hessian_trace", "sam_sharpness"):
        assert isinstance(out[key], float) and out[f"{key}_seconds"] > 0
    assert out["hessian_trace_stderr"] >= 0 and out["lambda_max_iterations"] >= 1
    assert out["lambda_max"] == pytest.approx(S.hessian_top_eigenvalue(model, MSE, x, y, iters=50), rel=1e-6)
    assert out["sam_sharpness"] == pytest.approx(S.sam_sharpness(model, MSE, x, y), rel=1e-6)
    assert set(S.measure(model, MSE, x, y, measures="sam")) == {"sam_sharpness", "sam_sharpness_seconds", "subset_loss",
                                                                "grad_norm", "weight_norm"}
    with pytest.raises(ValueError, match="unknown sharpness measure"):
        S.measure(model, MSE, x, y, measures=["nope"])


def test_callback_writes_into_history_and_csv(tmp_path):
    model, x, y = tiny_mlp(seed=3)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE)
    callbacks = [
        S.SharpnessCallback(x, y, CE, every=2, measures=("sam", "lambda_max", "keskar", "trace"), iters=5, samples=2, max_iter=2),
        keras.callbacks.CSVLogger(str(tmp_path / "history.csv")),
    ]
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=callbacks)
    for key in ("sharpness_sam", "sharpness_lambda_max", "sharpness_keskar", "sharpness_trace"):
        values = history.history[key]
        assert len(values) == 4 and math.isnan(values[0]) and math.isnan(values[2])
        assert math.isfinite(values[1]) and math.isfinite(values[3])
    header = (tmp_path / "history.csv").read_text().splitlines()[0]
    assert "sharpness_sam" in header and "sharpness_lambda_max" in header


def make_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(Config().to_dict()))
    keras.utils.set_random_seed(0)
    build_cnn().save_weights(run / "model.weights.h5")
    (run / "metrics.json").write_text("{}")
    return run


def test_cli_merges_into_metrics_json_and_rejects_missing_run(tmp_path, capsys):
    from samlib.cli import main as cli_main

    def main(argv):
        return cli_main(["sharpness", *argv])

    run = make_run(tmp_path)
    (run / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))
    code = main([str(run), "--measures", "sam", "lambda_max", "--subset", "200", "--iters", "3"])
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] == 0.5
    assert metrics["sam_sharpness"] > 0 and math.isfinite(metrics["lambda_max"])
    assert metrics["sharpness_subset"] == 200
    assert "sam_sharpness" in capsys.readouterr().out

    assert main([str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_measure_keys_name_what_measure_returns():
    from samlib.sharpness import measure_keys

    where = ["subset_loss", "grad_norm", "weight_norm"]
    assert measure_keys(["keskar", "lambda", "hessian_trace", "sam"], (1e-3, 5e-4)) == where + [
        "keskar_1e-03", "keskar_5e-04", "lambda_max", "hessian_trace", "sam_sharpness"]
    assert measure_keys("keskar", [1e-3], subspace_dim=50) == where + ["keskar_1e-03_p50"]


def test_measure_reports_loss_gradient_norm_and_weight_norm_where_it_measures():
    """Least squares by hand: f(w) = mean (X̃w − y)², ∇f = 2/n X̃ᵀ(X̃w − y); ‖∇f‖ ≈ 0 at the minimum."""
    for at_minimum in (False, True):
        model, x, y, x1 = least_squares(seed=3, at_minimum=at_minimum)
        w = flat(model)
        g = 2.0 / len(x1) * x1.T @ (x1 @ w - y.astype(np.float64).ravel())
        out = S.measure(model, MSE, x, y, measures=["sam"], batch_size=16)
        assert out["subset_loss"] == pytest.approx(mse(x1, y, w), rel=1e-5)
        assert out["weight_norm"] == pytest.approx(np.linalg.norm(w), rel=1e-6)
        if at_minimum:
            assert out["grad_norm"] < 1e-3 * np.linalg.norm(w)
        else:
            assert out["grad_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-4)
