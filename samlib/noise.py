"""The gradient noise scale B_simple (McCandlish et al. 2018, "An Empirical Model of Large-Batch
Training", App. A): the batch size above which a larger batch stops cutting the number of steps much,

    B_simple = tr(Σ) / |G|²,

with G = ∇f(w) the full-batch gradient of the training objective f (`samlib.objective.Objective`: the
mean loss in inference mode, plus the regularization R) and Σ the covariance of the per-example
gradients ∇(ℓ_i + R)(w). Both are taken on the examples given (a study's seeded subset, as the
sharpness measures are).

Estimator (unbiased for tr Σ with the sample divisor N − 1): a seeded permutation of the N examples is
cut into K = ⌊N/b⌋ micro-batches of b (the rest, fewer than b, is in G only), g_k is the mean gradient
of micro-batch k, and, since a micro-batch drawn without replacement has E|g_k|² = |G|² + (S²/b)(1 − b/N),

    S² = b · (mean_k |g_k|² − |G|²) / (1 − b/N),   tr(Σ) ≈ S²,

|G|² exact over all N. With b = 1 it is the sample variance itself, (1/(N−1)) Σ_i |g_i − G|². Norms are
summed in float64 from the float32 gradients.

The micro-batch b is `NOISE_BATCH` (32) in `samlib.sharpness.measure`: `SharpnessSettings` has no field
for it yet (a new setting needs its help line in `samlib.cli`). b is capped at N/2, so that K >= 2.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from samlib import backends
from samlib import measures as M
from samlib.config import SharpnessSettings
from samlib.objective import Objective

NOISE_BATCH = 32  #: the micro-batch b of `samlib.sharpness.measure`'s ``noise_scale``
_DEFAULTS = SharpnessSettings()


def gradient_noise_scale(model: keras.Model, loss: Any, x: np.ndarray, y: np.ndarray, micro_batch: int = NOISE_BATCH,
                         seed: int = _DEFAULTS.seed, batch_size: int = _DEFAULTS.batch_size) -> dict[str, float]:
    """B_simple of `model` on (x, y) (module docstring), as {B_simple, tr Σ, |G|², the b used}, keyed
    as the registry's ``noise_scale`` (`samlib.measures`); `seed` draws the permutation, `batch_size`
    is the evaluation batch of |G|²."""
    entry = M.REGISTRY[M.NOISE]
    values = noise_scale(Objective(model, loss, x, y, batch_size), micro_batch, seed)
    return dict(zip([*entry.keys(_DEFAULTS), *entry.extras], values, strict=True))


def noise_scale(obj: Objective, micro_batch: int, seed: int) -> tuple[float, float, float, int]:
    """(B_simple, tr Σ, |G|², b) at the objective's weights, on its examples (module docstring)."""
    n = len(obj.x)
    b = min(int(micro_batch), n // 2)
    if micro_batch < 1 or b < 1:
        raise ValueError(f"the noise scale needs micro_batch >= 1 and at least 2 examples, got {micro_batch} and {n}")
    rows = np.random.default_rng(seed).permutation(n)
    grad_sq = _norm_sq(obj.value_and_grad()[1])
    parts = [rows[k * b:(k + 1) * b] for k in range(n // b)]
    mean_sq = float(np.mean([_norm_sq(obj.grad_on(obj.x[part], obj.y[part])) for part in parts]))
    trace = b * (mean_sq - grad_sq) / (1.0 - b / n)
    return (trace / grad_sq if grad_sq > 0 else float("nan")), trace, grad_sq, b


def _norm_sq(g: Any) -> float:
    return backends.sum64(g, g)
