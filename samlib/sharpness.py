"""Sharpness of a minimum, measured several ways.

All measures look at the training objective f(w) as a function of the flat vector w of trainable
weights: the exact mean loss over the data in inference mode, plus the model's regularization, with its
gradient and Hessian-vector product (`samlib.objective.Objective`, which defines it).

Measure names, result keys and labels are the registry's, `samlib.measures`; every default of the
functions here is a field of `samlib.config.SharpnessSettings()`.

- `keskar_sharpness`: Keskar et al. 2017, "On Large-Batch Training for Deep Learning: Generalization Gap
  and Sharp Minima", metric (3): 100·(max_{z∈C_ε} f(w + A z) − f(w)) / (1 + f(w)).
- `hessian_top_eigenvalue`: power iteration on Hessian-vector products, as PyHessian (Yao et al. 2020,
  "PyHessian: Neural Networks Through the Lens of the Hessian") does.
- `hessian_trace`: Hutchinson's estimator tr(H) ≈ (1/S) Σ_s v_sᵀ H v_s, v_s Rademacher (Hutchinson 1990;
  used for Hessians by PyHessian).
- `sam_sharpness`: f(w + ρ g/‖g‖₂) − f(w), g = ∇f(w): the first-order inner maximum that SAM minimises
  (Foret et al. 2021, "Sharpness-Aware Minimization for Efficiently Improving Generalization", eq. 2).
- `gradient_noise_scale` (from `samlib.noise`): B_simple = tr(Σ)/|G|², the gradient noise scale of
  McCandlish et al. 2018 (no sharpness, but taken on the same weights and examples).

`measure` takes several at once on one set of compiled functions (with `measure_keys`, the keys it
returns), `subset` draws the examples they are taken on, and `SharpnessCallback` logs them during
training. Also here, from `samlib.interpolation`: `interpolate`, train/test loss and accuracy along
(1−α)·a + α·b (Keskar et al. 2017, Fig. 3; Goodfellow et al. 2015).

Weights are never assigned to (`samlib.objective`): the model is left bit-for-bit as it was, also when
a measure is interrupted by an exception.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np
import scipy.optimize
from keras import ops

from samlib import backends
from samlib import measures as M
from samlib.config import SharpnessSettings
from samlib.interpolation import interpolate  # noqa: F401  (part of this module's API)
from samlib.noise import NOISE_BATCH, gradient_noise_scale, noise_scale  # noqa: F401  (gradient_noise_scale: API)
from samlib.objective import Objective

MEASURES: tuple[str, ...] = M.NAMES  #: the measures `measure` knows (`samlib.measures` is their registry)
_DEFAULTS = SharpnessSettings()  #: every default of this module's functions is a field of this


# ---------------------------------------------------------------------- the measures
def keskar_sharpness(
    model: keras.Model,
    loss: Any,
    x: np.ndarray,
    y: np.ndarray,
    epsilon: float = _DEFAULTS.epsilons[0],
    subspace_dim: int | None = _DEFAULTS.subspace_dim,
    max_iter: int = _DEFAULTS.max_iter,
    seed: int = _DEFAULTS.seed,
    batch_size: int = _DEFAULTS.batch_size,
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
    return _keskar(Objective(model, loss, x, y, batch_size), epsilon, subspace_dim, max_iter, seed)


def _keskar(obj: Objective, epsilon: float, subspace_dim: int | None, max_iter: int, seed: int) -> float:
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    rng = np.random.default_rng(seed)
    w = ops.convert_to_numpy(obj.w).astype(np.float64)
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
        value, grad = obj.value_and_grad(ops.convert_to_tensor(np.asarray(theta, obj.dtype)))
        best = max(best, value)
        g = ops.convert_to_numpy(grad).astype(np.float64)
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
    iters: int = _DEFAULTS.iters,
    tol: float = _DEFAULTS.tol,
    seed: int = _DEFAULTS.seed,
    batch_size: int = _DEFAULTS.batch_size,
) -> float:
    """The eigenvalue of ∇²f(w) of largest magnitude (signed), by power iteration (PyHessian, Yao et al. 2020).

    v₀ ~ N(0, I) seeded, normalised; then λ_k = v_kᵀ H v_k and v_{k+1} = H v_k / ‖H v_k‖, stopping after
    `iters` products or when |λ_k − λ_{k−1}| / (|λ_{k−1}| + 1e-6) < `tol`.
    """
    return _power_iteration(Objective(model, loss, x, y, batch_size), iters, tol, seed)[0]


def _power_iteration(obj: Objective, iters: int, tol: float, seed: int) -> tuple[float, int]:
    rng = np.random.default_rng(seed)
    v = ops.convert_to_tensor(rng.standard_normal(obj.n).astype(obj.dtype))
    v = v / ops.norm(v)
    eig = None
    for k in range(1, int(iters) + 1):
        hv = obj.hvp(v)
        new = backends.sum64(v, hv)  # Rayleigh quotient
        norm = ops.norm(hv)
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
    samples: int = _DEFAULTS.samples,
    seed: int = _DEFAULTS.seed,
    return_stderr: bool = False,
    batch_size: int = _DEFAULTS.batch_size,
) -> float | tuple[float, float]:
    """Hutchinson's estimator tr(H) ≈ (1/S) Σ_s v_sᵀ H v_s with seeded Rademacher v_s (E[v vᵀ] = I).

    With `return_stderr`, also the standard error std(v_sᵀ H v_s) / √S (ddof=1). For a diagonal H every
    sample equals tr(H) exactly (v_i² = 1), so the error is then 0.
    """
    trace, stderr = _hutchinson(Objective(model, loss, x, y, batch_size), samples, seed)
    return (trace, stderr) if return_stderr else trace


def _hutchinson(obj: Objective, samples: int, seed: int) -> tuple[float, float]:
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(samples)):
        v = ops.convert_to_tensor((rng.integers(0, 2, obj.n) * 2.0 - 1.0).astype(obj.dtype))
        values.append(backends.sum64(v, obj.hvp(v)))
    values_ = np.asarray(values)
    stderr = float(values_.std(ddof=1) / math.sqrt(len(values_))) if len(values_) > 1 else float("nan")
    return float(values_.mean()), stderr


def sam_sharpness(
    model: keras.Model, loss: Any, x: np.ndarray, y: np.ndarray, rho: float = _DEFAULTS.rho,
    batch_size: int = _DEFAULTS.batch_size,
) -> float:
    """f(w + ρ g/‖g‖₂) − f(w) with g = ∇f(w) on all of x: the sharpness that SAM minimises.

    Foret et al. 2021, eq. 2 with the first-order solution ε̂(w) = ρ g/‖g‖₂ of the inner maximisation over
    ‖ε‖₂ ≤ ρ (eq. 3 with p = 2). Returns 0 where g = 0 (ε̂ is then 0, as SAM's ρ g/(‖g‖ + 1e-12) is).
    """
    return _sam(Objective(model, loss, x, y, batch_size), rho)


def _sam(obj: Objective, rho: float) -> float:
    f0, grad = obj.value_and_grad()
    norm = math.sqrt(backends.sum64(grad, grad))
    if norm == 0.0:
        return 0.0
    return obj.value(obj.w + ops.cast(rho / norm, obj.dtype) * grad) - f0


# ---------------------------------------------------------------------- several at once
def subset(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` examples drawn without replacement by `seed`, in their original order (n = 0: all of them)."""
    if n and n < len(x):
        rows = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
        return x[rows], y[rows]
    return x, y


#: registry name -> (objective, settings) -> one computation per value key of the measure, in the order of
#: the registry's ``keys(settings)``; each gives the value, or (value, *extras) in the order of its ``extras``
_COMPUTE: dict[str, Callable[[Objective, SharpnessSettings], list[Callable[[], Any]]]] = {
    M.KESKAR: lambda obj, s: [functools.partial(_keskar, obj, eps, s.subspace_dim, s.max_iter, s.seed)
                              for eps in s.epsilons],
    M.LAMBDA_MAX: lambda obj, s: [functools.partial(_power_iteration, obj, s.iters, s.tol, s.seed)],
    M.TRACE: lambda obj, s: [functools.partial(_hutchinson, obj, s.samples, s.seed)],
    M.SAM: lambda obj, s: [functools.partial(_sam, obj, s.rho)],
    M.NOISE: lambda obj, s: [functools.partial(noise_scale, obj, NOISE_BATCH, s.seed)],
}

#: the settings a call may change by keyword (``measures`` is an argument of its own; ``subset`` is the caller's)
_OVERRIDABLE = tuple(f.name for f in dataclasses.fields(SharpnessSettings) if f.name not in ("measures", "subset"))


def _epsilons(epsilons: Sequence[float] | float) -> tuple[float, ...]:
    return tuple(np.atleast_1d(np.asarray(epsilons, dtype=float)).tolist())


def _settings(base: SharpnessSettings, overrides: dict[str, Any], who: str,
              allowed: Sequence[str] = _OVERRIDABLE) -> SharpnessSettings:
    """`base` with `overrides` replacing its fields (not validated: a caller's own values, as given)."""
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise TypeError(f"{who} got unknown settings {unknown}; allowed: {', '.join(allowed)}")
    s = dataclasses.replace(base, **overrides)
    return dataclasses.replace(s, epsilons=_epsilons(s.epsilons))


def measure_keys(
    measures: Iterable[str] | str | None = None,
    epsilons: Sequence[float] = _DEFAULTS.epsilons,
    subspace_dim: int | None = _DEFAULTS.subspace_dim,
) -> list[str]:
    """The keys `measure` returns for these settings: the context (`samlib.measures.CONTEXT`), then each
    measure's value keys (without its diagnostics and the ``_seconds`` timings). `measures`: default
    ``SharpnessSettings().measures``."""
    s = dataclasses.replace(_DEFAULTS, epsilons=_epsilons(epsilons), subspace_dim=subspace_dim)
    return list(M.CONTEXT) + M.value_keys(s, measures)


def _measure(obj: Objective, names: Sequence[str], s: SharpnessSettings) -> dict[str, float]:
    """The measures `names` (registry names) under settings `s`, with the context and timings."""
    # where the measures are taken: f(w), ‖∇f(w)‖₂ (≈ 0 only at a stationary point; Keskar's first-order
    # term ε·Σ(|wᵢ|+1)|gᵢ| grows with it) and ‖w‖₂ (Keskar's box scales with |w|; Dinh et al. 2017),
    # in the order of `samlib.measures.CONTEXT`
    value, grad = obj.value_and_grad()
    results: dict[str, Any] = dict(zip(M.CONTEXT, (value, float(ops.norm(grad)), float(ops.norm(obj.w))), strict=True))
    for name in names:
        entry = M.REGISTRY[name]
        for key, compute in zip(entry.keys(s), _COMPUTE[name](obj, s), strict=True):
            start = time.perf_counter()
            found = compute()
            results[f"{key}_seconds"] = time.perf_counter() - start
            results.update(zip((key, *entry.extras), found if isinstance(found, tuple) else (found,), strict=True))
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

    `measures`: names from the registry `samlib.measures` (``keskar``, ``lambda_max``, ``trace``, ``sam``,
    ``noise_scale``; aliases ``lambda``, ``hessian_trace``, ``sam_sharpness``, ``b_simple``). Keys, as
    `samlib.measures.result_keys` names them: one Keskar key per ε in `epsilons` (``keskar_1e-03``,
    ``keskar_1e-03_p100`` with `subspace_dim`=100), λ_max and its iteration count, the Hessian trace and
    its standard error, the SAM sharpness, B_simple with tr Σ, |G|² and its micro-batch
    (`samlib.noise`, b = `NOISE_BATCH`); each value key with ``<key>_seconds``. Always also the context `samlib.measures.CONTEXT`
    (f(w), ‖∇f(w)‖₂ and ‖w‖₂ on the same data).
    Settings: `settings` (default `SharpnessSettings()`, the one source of these defaults), with any of
    its fields given by keyword (``epsilons``, ``subspace_dim``, ``max_iter``, ``iters``, ``tol``,
    ``samples``, ``rho``, ``seed``, ``batch_size``) replacing its value. `measures`: default
    ``settings.measures``. The settings' ``subset`` does not apply here: x and y are measured as given.
    One set of compiled functions serves all.
    """
    base = settings if settings is not None else _DEFAULTS
    s = _settings(base, overrides, "measure()")
    names = M.normalise(base.measures if measures is None else measures)
    return _measure(Objective(model, loss, x, y, s.batch_size), names, s)


class SharpnessCallback(keras.callbacks.Callback):
    """Every `every` epochs, measure `self.model` on (x, y) and write ``sharpness_<name>`` into the logs.

    One key per registry name measured: ``sharpness_keskar`` (at one ε, ``epsilon``), ``sharpness_lambda_max``,
    ``sharpness_trace``, ``sharpness_sam``. On epochs in between the keys are NaN, so every epoch has the
    same columns (`keras.callbacks.CSVLogger` fixes its columns at the first epoch). Put this callback
    before any CSVLogger in the list. Settings as in `measure`: `settings` (default `SharpnessSettings()`),
    `measures` (default ``settings.measures``), and by keyword ``epsilon`` (default: the settings' first
    ε), ``subspace_dim``, ``max_iter``, ``iters``, ``tol``, ``samples``, ``rho``, ``seed``, ``batch_size``.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, loss: Any, every: int = 1,
                 measures: Iterable[str] | str | None = None, *, settings: SharpnessSettings | None = None,
                 **overrides: Any) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.x, self.y, self.loss, self.every = x, y, loss, int(every)
        base = settings if settings is not None else _DEFAULTS
        allowed = ("epsilon",) + tuple(name for name in _OVERRIDABLE if name != "epsilons")  # one ε is logged
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            raise TypeError(f"SharpnessCallback got unknown settings {unknown}; allowed: {', '.join(allowed)}")
        epsilon = float(overrides.pop("epsilon", base.epsilons[0]))
        self.settings = _settings(base, {**overrides, "epsilons": (epsilon,)}, "SharpnessCallback")
        self.measures = M.normalise(base.measures if measures is None else measures)
        self.epsilon, self.batch_size = self.settings.epsilons[0], self.settings.batch_size
        self._objective: Objective | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        keys = {name: f"sharpness_{name}" for name in self.measures}
        if (epoch + 1) % self.every:
            logs.update({key: float("nan") for key in keys.values()})
            return
        if self._objective is None or self._objective.model is not self.model:
            self._objective = Objective(self.model, self.loss, self.x, self.y, self.settings.batch_size)
        else:
            self._objective.refresh()
        found = _measure(self._objective, self.measures, self.settings)
        # each measure's headline value (its first key: the one ε for Keskar)
        logs.update({keys[name]: found[M.REGISTRY[name].keys(self.settings)[0]] for name in self.measures})
