"""Sharpness of a minimum, measured several ways.

All measures look at the training objective as a function of the flat vector w of trainable weights,

    f(w) = (1/N) Σ_i ℓ(y_i, model(x_i; w)) + R(w),

evaluated in inference mode (``training=False``: dropout off, BatchNorm uses its moving statistics)
over all N examples in batches of `batch_size` (each batch's mean loss is weighted by n_b / N, so the
value is the exact mean, partial last batch included). R is the model's regularization (``model.losses``,
e.g. the L2 weight decay of `samlib.models.build_cnn`); it is 0 for the study's default runs.

- `keskar_sharpness`: Keskar et al. 2017, "On Large-Batch Training for Deep Learning: Generalization Gap
  and Sharp Minima", metric (3): 100·(max_{z∈C_ε} f(w + A z) − f(w)) / (1 + f(w)).
- `hessian_top_eigenvalue`: power iteration on Hessian-vector products, as PyHessian (Yao et al. 2020,
  "PyHessian: Neural Networks Through the Lens of the Hessian") does.
- `hessian_trace`: Hutchinson's estimator tr(H) ≈ (1/S) Σ_s v_sᵀ H v_s, v_s Rademacher (Hutchinson 1990;
  used for Hessians by PyHessian).
- `sam_sharpness`: f(w + ρ g/‖g‖₂) − f(w), g = ∇f(w): the first-order inner maximum that SAM minimises
  (Foret et al. 2021, "Sharpness-Aware Minimization for Efficiently Improving Generalization", eq. 2).
- `interpolate`: train/test loss and accuracy along (1−α)·a + α·b (Keskar et al. 2017, Fig. 3;
  Goodfellow et al. 2015).

Weights are never assigned to: every evaluation maps the variables to tensors inside a
`keras.StatelessScope` (the approach of `samlib.sam`), so the model is left bit-for-bit as it was, also
when a measure is interrupted by an exception. The hot computations (loss, gradient, Hessian-vector
product) are `tf.function`s without XLA (XLA is several times slower on CPU).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd
import scipy.optimize
import tensorflow as tf

from samlib.config import MEASURES, SharpnessSettings  # noqa: F401  (MEASURES: part of this module's API)

_ALIASES = {"hessian_trace": "trace", "sam_sharpness": "sam", "lambda": "lambda_max"}


def _compile(function):
    """A graph function without XLA (jit is several times slower on CPU); one trace per batch shape."""
    return tf.function(function, jit_compile=False, reduce_retracing=True)


class _Objective:
    """f(w) of the module docstring on one data set, with its gradient and Hessian-vector product.

    Built once and reused (the callback keeps one across epochs: `refresh` re-reads the weights), so the
    `tf.function`s are traced once per batch shape rather than once per measurement.
    """

    def __init__(self, model: keras.Model, loss: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 1000):
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not model.trainable_variables:
            raise ValueError("the model has no trainable weights (is it built?)")
        self.model, self.loss = model, loss
        self.variables = list(model.trainable_variables)
        self.states = list(model.non_trainable_variables)
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.dtype = tf.as_dtype(self.variables[0].dtype)
        n = len(x)
        # one constant per batch, built once: the hot loops then only move the weight vector
        self.batches = [
            (tf.constant(x[i : i + batch_size]), tf.constant(y[i : i + batch_size]), min(batch_size, n - i) / n)
            for i in range(0, n, batch_size)
        ]
        self._value = _compile(self._batch_value)
        self._value_and_grad = _compile(self._batch_value_and_grad)
        self._hvp = _compile(self._batch_hvp)
        self.refresh()

    @property
    def n(self) -> int:
        """Number of trainable parameters."""
        return sum(self.sizes)

    def refresh(self) -> None:
        """Snapshot the model's current weights as w (and its BatchNorm statistics / seeds)."""
        self.w = tf.concat([tf.reshape(tf.cast(v.value, self.dtype), [-1]) for v in self.variables], 0)
        self.state_values = [tf.identity(v.value) for v in self.states]

    # ---------------------------------------------------------------- per-batch graph functions
    def _unflatten(self, w: tf.Tensor) -> list[tf.Tensor]:
        parts = tf.split(w, self.sizes)
        return [tf.cast(tf.reshape(p, s), v.dtype) for p, s, v in zip(parts, self.shapes, self.variables)]

    def _batch_loss(self, w: tf.Tensor, states: list[tf.Tensor], xb: tf.Tensor, yb: tf.Tensor) -> tf.Tensor:
        mapping = list(zip(self.variables, self._unflatten(w))) + list(zip(self.states, states))
        with keras.StatelessScope(state_mapping=mapping):
            out = self.model(xb, training=False)
            value = tf.cast(self.loss(yb, out), tf.float64)
            for extra in self.model.losses:  # regularization, evaluated at the mapped weights
                value += tf.cast(extra, tf.float64)
        return value

    def _batch_value(self, w, states, xb, yb):
        return self._batch_loss(w, states, xb, yb)

    def _batch_value_and_grad(self, w, states, xb, yb):
        with tf.GradientTape() as tape:
            tape.watch(w)
            value = self._batch_loss(w, states, xb, yb)
        return value, tape.gradient(value, w)

    def _batch_hvp(self, w, v, states, xb, yb):
        # forward-over-reverse: the JVP of the gradient along v is H v at ~2 gradient costs, and was as
        # fast as (or faster than) reverse-over-reverse on this CPU at batch 1000
        with tf.autodiff.ForwardAccumulator(w, v) as acc:
            with tf.GradientTape() as tape:
                tape.watch(w)
                value = self._batch_loss(w, states, xb, yb)
            grad = tape.gradient(value, w)
        return acc.jvp(grad)

    # ---------------------------------------------------------------- full-data quantities
    def value(self, w: tf.Tensor | None = None) -> float:
        w = self.w if w is None else w
        return float(sum(c * self._value(w, self.state_values, xb, yb) for xb, yb, c in self.batches))

    def value_and_grad(self, w: tf.Tensor | None = None) -> tuple[float, tf.Tensor]:
        w = self.w if w is None else w
        total, grad = 0.0, None
        for xb, yb, c in self.batches:
            value, g = self._value_and_grad(w, self.state_values, xb, yb)
            total += c * float(value)
            grad = g * c if grad is None else grad + g * c
        return total, grad

    def hvp(self, v: tf.Tensor) -> tf.Tensor:
        """H v at the snapshot w (flat, in the weights' dtype)."""
        out = None
        for xb, yb, c in self.batches:
            h = self._hvp(self.w, v, self.state_values, xb, yb) * c
            out = h if out is None else out + h
        return out


# ==================================================================== the measures
def keskar_sharpness(
    model: keras.Model,
    loss: Any,
    x: np.ndarray,
    y: np.ndarray,
    epsilon: float = 1e-3,
    subspace_dim: int | None = None,
    max_iter: int = 10,
    seed: int = 0,
    batch_size: int = 1000,
) -> float:
    """Keskar et al. 2017, metric (3): φ_{w,f}(ε, A) = 100 · (max_{z∈C_ε} f(w + A z) − f(w)) / (1 + f(w)).

    C_ε = {z ∈ R^p : |z_i| ≤ ε (|(A⁺ w)_i| + 1)}; A = I (p = n, the full space) when `subspace_dim` is
    None, else a seeded random n×p matrix spanning a random p-dimensional subspace, A⁺ its
    pseudo-inverse. The maximum is approximated, as in the paper, by `max_iter` iterations of L-BFGS-B
    on −f(w + A z) with the box as bounds (float64 on the scipy side; its gradient and function-value
    tolerances are set to 0 so that a tiny gradient at a good minimum does not stop it early).

    Subspace: A is a Gaussian N(0, 1) matrix with orthonormalised columns (QR), i.e. a uniformly random
    p-dimensional subspace, so A⁺ = Aᵀ and ‖A z‖₂ = ‖z‖₂: ε then means the same per-coordinate size as
    in the full space. (With raw Gaussian columns ‖A z‖ ≈ √n ‖z‖, and the "restricted" maximum can
    exceed the full-space one by orders of magnitude.)

    Start point: z₀ = 0.01 · u with u uniform in the box (seeded), not z = 0. At an exact minimum
    ∇f = 0 and L-BFGS-B started at 0 stops at once with a score of 0, however sharp the minimum. From
    the small random z₀ the ascent direction is ∇f(w) + H A z₀: away from a minimum that is ∇f(w), as
    from 0 (the paper's choice); at a minimum it is a random vector multiplied by H, i.e. tilted towards
    the high-curvature directions, and L-BFGS-B climbs to a high vertex. (On random convex quadratics
    this reached the exact box maximum more often than a start drawn from the whole box; maximising a
    convex quadratic over a box is NP-hard, so a local vertex maximum below the exact one is possible.)
    One start keeps the cost at one run. Since z = 0 lies in C_ε, the returned maximum is the best of
    f(w) and every point L-BFGS-B evaluated (all inside the box), so 0 ≤ score ≤ the exact score.
    """
    return _keskar(_Objective(model, loss, x, y, batch_size), epsilon, subspace_dim, max_iter, seed)


def _keskar(obj: _Objective, epsilon: float, subspace_dim: int | None, max_iter: int, seed: int) -> float:
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    rng = np.random.default_rng(seed)
    w = obj.w.numpy().astype(np.float64)
    if subspace_dim is None:
        A = None
        center = w
    else:
        if not 1 <= subspace_dim <= obj.n:
            raise ValueError(f"subspace_dim must be in [1, {obj.n}], got {subspace_dim}")
        A, _ = np.linalg.qr(rng.standard_normal((obj.n, subspace_dim)))  # orthonormal columns
        center = A.T @ w  # A⁺ w (A⁺ = Aᵀ for orthonormal columns)
    half = epsilon * (np.abs(center) + 1.0)
    z0 = 0.01 * rng.uniform(-half, half)  # see the docstring
    f0 = obj.value()
    best = f0

    def negative(z: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal best
        theta = w + (z if A is None else A @ z)
        value, grad = obj.value_and_grad(tf.constant(theta, dtype=obj.dtype))
        best = max(best, value)
        g = grad.numpy().astype(np.float64)
        return -value, -(g if A is None else A.T @ g)

    scipy.optimize.minimize(
        negative, z0, jac=True, method="L-BFGS-B",
        bounds=np.stack([-half, half], axis=1),
        # tolerances 0: run the `max_iter` iterations; maxfun bounds the line-search evaluations
        options={"maxiter": int(max_iter), "maxfun": 3 * int(max_iter) + 5, "gtol": 0.0, "ftol": 0.0},
    )
    return 100.0 * (best - f0) / (1.0 + f0)


def hessian_top_eigenvalue(
    model: keras.Model,
    loss: Any,
    x: np.ndarray,
    y: np.ndarray,
    iters: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    batch_size: int = 1000,
) -> float:
    """The eigenvalue of ∇²f(w) of largest magnitude (signed), by power iteration (PyHessian, Yao et al. 2020).

    v₀ ~ N(0, I) seeded, normalised; then λ_k = v_kᵀ H v_k and v_{k+1} = H v_k / ‖H v_k‖, stopping after
    `iters` products or when |λ_k − λ_{k−1}| / (|λ_{k−1}| + 1e-6) < `tol`.
    """
    return _power_iteration(_Objective(model, loss, x, y, batch_size), iters, tol, seed)[0]


def _power_iteration(obj: _Objective, iters: int, tol: float, seed: int) -> tuple[float, int]:
    rng = np.random.default_rng(seed)
    v = tf.constant(rng.standard_normal(obj.n), dtype=obj.dtype)
    v = v / tf.norm(v)
    eig = None
    for k in range(1, int(iters) + 1):
        hv = obj.hvp(v)
        new = float(tf.reduce_sum(tf.cast(v, tf.float64) * tf.cast(hv, tf.float64)))  # Rayleigh quotient
        norm = tf.norm(hv)
        if float(norm) == 0.0:  # H v = 0: v is in the null space; nothing larger can be found from here
            return 0.0, k
        v = hv / norm
        if eig is not None and abs(new - eig) / (abs(eig) + 1e-6) < tol:
            return new, k
        eig = new
    return float(eig), int(iters)


def hessian_trace(
    model: keras.Model,
    loss: Any,
    x: np.ndarray,
    y: np.ndarray,
    samples: int = 100,
    seed: int = 0,
    return_stderr: bool = False,
    batch_size: int = 1000,
) -> float | tuple[float, float]:
    """Hutchinson's estimator tr(H) ≈ (1/S) Σ_s v_sᵀ H v_s with seeded Rademacher v_s (E[v vᵀ] = I).

    With `return_stderr`, also the standard error std(v_sᵀ H v_s) / √S (ddof=1). For a diagonal H every
    sample equals tr(H) exactly (v_i² = 1), so the error is then 0.
    """
    trace, stderr = _hutchinson(_Objective(model, loss, x, y, batch_size), samples, seed)
    return (trace, stderr) if return_stderr else trace


def _hutchinson(obj: _Objective, samples: int, seed: int) -> tuple[float, float]:
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(samples)):
        v = tf.constant(rng.integers(0, 2, obj.n) * 2.0 - 1.0, dtype=obj.dtype)
        values.append(float(tf.reduce_sum(tf.cast(v, tf.float64) * tf.cast(obj.hvp(v), tf.float64))))
    values_ = np.asarray(values)
    stderr = float(values_.std(ddof=1) / math.sqrt(len(values_))) if len(values_) > 1 else float("nan")
    return float(values_.mean()), stderr


def sam_sharpness(
    model: keras.Model, loss: Any, x: np.ndarray, y: np.ndarray, rho: float = 0.05, batch_size: int = 1000
) -> float:
    """f(w + ρ g/‖g‖₂) − f(w) with g = ∇f(w) on all of x: the sharpness that SAM minimises.

    Foret et al. 2021, eq. 2 with the first-order solution ε̂(w) = ρ g/‖g‖₂ of the inner maximisation over
    ‖ε‖₂ ≤ ρ (eq. 3 with p = 2). Returns 0 where g = 0 (ε̂ is then 0, as SAM's ρ g/(‖g‖ + 1e-12) is).
    """
    return _sam(_Objective(model, loss, x, y, batch_size), rho)


def _sam(obj: _Objective, rho: float) -> float:
    f0, grad = obj.value_and_grad()
    norm = float(tf.norm(tf.cast(grad, tf.float64)))
    if norm == 0.0:
        return 0.0
    return obj.value(obj.w + tf.cast(rho / norm, obj.dtype) * grad) - f0


# ==================================================================== linear interpolation
def interpolate(
    model: keras.Model,
    weights_a: Sequence[np.ndarray],
    weights_b: Sequence[np.ndarray],
    loss: Any,
    data: Any,
    alphas: Iterable[float] = np.linspace(-1.0, 2.0, 25),
    batch_size: int = 1000,
) -> pd.DataFrame:
    """Loss and accuracy along θ(α) = (1 − α)·a + α·b (Keskar et al. 2017, Fig. 3; Goodfellow et al. 2015).

    `weights_a`, `weights_b`: lists in `model.get_weights()` order. Every floating weight is interpolated,
    BatchNorm moving statistics included; non-float ones (none in the study's CNN) are taken from a.
    `data` has x_train, y_train, x_test, y_test. Loss is f of the module docstring (exact mean, inference
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
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)

    @_compile
    def evaluate(values, xb, yb):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            out = model(xb, training=False)
            value = tf.cast(loss(yb, out), tf.float64)
            for extra in model.losses:
                value += tf.cast(extra, tf.float64)
        hits = tf.constant(0.0, tf.float64)
        if yb.dtype.is_integer:
            pred = tf.argmax(out, axis=-1, output_type=tf.int64)
            hits = tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(tf.reshape(yb, tf.shape(pred)), tf.int64)), tf.float64))
        return value, hits

    def full(values: list[tf.Tensor], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        total, hits, n = 0.0, 0.0, len(x)
        for i in range(0, n, batch_size):
            value, h = evaluate(values, tf.constant(x[i : i + batch_size]), tf.constant(y[i : i + batch_size]))
            total += float(value) * min(batch_size, n - i) / n
            hits += float(h)
        return total, (hits / n if np.issubdtype(np.asarray(y).dtype, np.integer) else float("nan"))

    rows = []
    for alpha in alphas:
        alpha = float(alpha)
        values = []
        for v in variables:
            if id(v) not in position:  # e.g. dropout seed state: not part of get_weights()
                values.append(tf.identity(v.value))
                continue
            a = np.asarray(weights_a[position[id(v)]])
            b = np.asarray(weights_b[position[id(v)]])
            if np.issubdtype(a.dtype, np.floating):
                mixed = (1.0 - alpha) * a.astype(np.float64) + alpha * b.astype(np.float64)
            else:
                mixed = a
            values.append(tf.constant(mixed, dtype=v.dtype))
        train_loss, train_acc = full(values, data.x_train, data.y_train)
        test_loss, test_acc = full(values, data.x_test, data.y_test)
        rows.append((alpha, train_loss, train_acc, test_loss, test_acc))
    return pd.DataFrame(rows, columns=["alpha", "train_loss", "train_accuracy", "test_loss", "test_accuracy"])


# ==================================================================== several at once
def _normalise(measures: Iterable[str] | str) -> list[str]:
    names = [measures] if isinstance(measures, str) else list(measures)
    out = []
    for name in names:
        name = _ALIASES.get(name, name)
        if name not in MEASURES:
            raise ValueError(f"unknown sharpness measure {name!r}; allowed: {', '.join(MEASURES)}")
        out.append(name)
    return out


def _keskar_key(epsilon: float, subspace_dim: int | None) -> str:
    return f"keskar_{epsilon:.0e}" + (f"_p{subspace_dim}" if subspace_dim else "")


def subset(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` examples drawn without replacement by `seed`, in their original order (n = 0: all of them)."""
    if n and n < len(x):
        rows = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
        return x[rows], y[rows]
    return x, y


def measure_keys(
    measures: Iterable[str] | str = MEASURES, epsilons: Sequence[float] = (1e-3, 5e-4), subspace_dim: int | None = None
) -> list[str]:
    """The value keys `measure` returns for these settings (without the ``_seconds`` timings)."""
    names = {"lambda_max": ["lambda_max"], "trace": ["hessian_trace"], "sam": ["sam_sharpness"]}
    keys: list[str] = ["subset_loss", "grad_norm", "weight_norm"]
    for name in _normalise(measures):
        if name == "keskar":
            keys += [_keskar_key(float(e), subspace_dim) for e in np.atleast_1d(np.asarray(epsilons, dtype=float))]
        else:
            keys += names[name]
    return keys


def _measure(
    obj: _Objective,
    measures: Iterable[str] | str = MEASURES,
    epsilons: Sequence[float] = (1e-3, 5e-4),
    subspace_dim: int | None = None,
    max_iter: int = 10,
    iters: int = 100,
    tol: float = 1e-4,
    samples: int = 100,
    rho: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    # where the measures are taken: f(w), ‖∇f(w)‖₂ (≈ 0 only at a stationary point; Keskar's first-order
    # term ε·Σ(|wᵢ|+1)|gᵢ| grows with it) and ‖w‖₂ (Keskar's box scales with |w|; Dinh et al. 2017)
    value, grad = obj.value_and_grad()
    results: dict[str, float] = {
        "subset_loss": value,
        "grad_norm": float(tf.norm(grad)),
        "weight_norm": float(tf.norm(obj.w)),
    }

    def timed(key: str, compute) -> Any:
        start = time.perf_counter()
        value = compute()
        results[f"{key}_seconds"] = time.perf_counter() - start
        return value

    for name in _normalise(measures):
        if name == "keskar":
            for eps in np.atleast_1d(np.asarray(epsilons, dtype=float)).tolist():
                key = _keskar_key(float(eps), subspace_dim)
                results[key] = timed(key, lambda eps=eps: _keskar(obj, eps, subspace_dim, max_iter, seed))
        elif name == "lambda_max":
            results["lambda_max"], results["lambda_max_iterations"] = timed(
                "lambda_max", lambda: _power_iteration(obj, iters, tol, seed)
            )
        elif name == "trace":
            results["hessian_trace"], results["hessian_trace_stderr"] = timed(
                "hessian_trace", lambda: _hutchinson(obj, samples, seed)
            )
        else:
            results["sam_sharpness"] = timed("sam_sharpness", lambda: _sam(obj, rho))
    return {k: float(v) for k, v in results.items()}


def measure(
    model: keras.Model,
    loss: Any,
    x: np.ndarray,
    y: np.ndarray,
    measures: Iterable[str] | str | None = None,
    *,
    settings: SharpnessSettings | None = None,
    **overrides: Any,
) -> dict[str, float]:
    """Several measures on one model and data set, as a flat dict of floats with stable keys.

    `measures` from ``keskar``, ``lambda_max``, ``trace``, ``sam`` (aliases ``hessian_trace``,
    ``sam_sharpness``). Keys: ``keskar_1e-03``, ``keskar_5e-04``, … one per ε in `epsilons`
    (``keskar_1e-03_p100`` with `subspace_dim`=100), ``lambda_max`` and ``lambda_max_iterations``,
    ``hessian_trace`` and ``hessian_trace_stderr``, ``sam_sharpness``; each with ``<key>_seconds``.
    Always also ``subset_loss`` f(w), ``grad_norm`` ‖∇f(w)‖₂ and ``weight_norm`` ‖w‖₂ on the same data.
    Settings: `settings` (default `SharpnessSettings()`, the one source of these defaults), with any of
    its fields given by keyword (``epsilons``, ``subspace_dim``, ``max_iter``, ``iters``, ``tol``,
    ``samples``, ``rho``, ``seed``, ``batch_size``) replacing its value. `measures`: default
    ``settings.measures`` (`SharpnessSettings().measures` without settings). The settings'
    ``subset`` does not apply here: x and y are measured as given. One set of compiled functions serves all.
    """
    base = settings if settings is not None else SharpnessSettings()
    names = [f.name for f in dataclasses.fields(SharpnessSettings) if f.name not in ("measures", "subset")]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(f"measure() got unknown settings {unknown}; allowed: {', '.join(names)}")
    s = {name: overrides.get(name, getattr(base, name)) for name in names}
    if measures is None:
        measures = base.measures
    obj = _Objective(model, loss, x, y, s["batch_size"])
    return _measure(obj, measures, s["epsilons"], s["subspace_dim"], s["max_iter"], s["iters"], s["tol"],
                    s["samples"], s["rho"], s["seed"])


class SharpnessCallback(keras.callbacks.Callback):
    """Every `every` epochs, measure `self.model` on (x, y) and write ``sharpness_<name>`` into the logs.

    Keys: ``sharpness_keskar`` (at ``epsilon``, default 1e-3), ``sharpness_lambda_max``,
    ``sharpness_trace``, ``sharpness_sam``. On epochs in between the keys are NaN, so every epoch has the
    same columns (`keras.callbacks.CSVLogger` fixes its columns at the first epoch). Put this callback
    before any CSVLogger in the list. `kwargs`: ``epsilon``, ``subspace_dim``, ``max_iter``, ``iters``,
    ``tol``, ``samples``, ``rho``, ``seed``, ``batch_size`` as in the single-measure functions.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, loss: Any, every: int = 1,
                 measures: Iterable[str] | str = ("sam",), **kwargs: Any) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.x, self.y, self.loss, self.every = x, y, loss, int(every)
        self.measures = _normalise(measures)
        self.epsilon = float(kwargs.pop("epsilon", 1e-3))
        self.batch_size = int(kwargs.pop("batch_size", 1000))
        allowed = {"subspace_dim", "max_iter", "iters", "tol", "samples", "rho", "seed"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise TypeError(f"SharpnessCallback got unknown settings {unknown}; allowed: {sorted(allowed | {'epsilon', 'batch_size'})}")
        self.settings = kwargs
        self._objective: _Objective | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        keys = {name: f"sharpness_{name}" for name in self.measures}
        if (epoch + 1) % self.every:
            logs.update({key: float("nan") for key in keys.values()})
            return
        if self._objective is None or self._objective.model is not self.model:
            self._objective = _Objective(self.model, self.loss, self.x, self.y, self.batch_size)
        else:
            self._objective.refresh()
        found = _measure(self._objective, self.measures, epsilons=(self.epsilon,), **self.settings)
        source = {
            "keskar": _keskar_key(self.epsilon, self.settings.get("subspace_dim")),
            "lambda_max": "lambda_max", "trace": "hessian_trace", "sam": "sam_sharpness",
        }
        logs.update({keys[name]: found[source[name]] for name in self.measures})
