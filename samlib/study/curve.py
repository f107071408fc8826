"""The batch-size curve and the tuning that feeds it: pure functions on plain numbers, no TensorFlow.

- `next_lr` / `chosen_lr`: the tuning rule (Shallue et al. 2019): an lr is chosen on the validation
  split from a log-spaced grid that extends itself until its best value is interior, or its next
  value diverged or collapsed (a failed lr bounds the grid as well as a worse one does).
- `fit_critical_batch`: steps to a target vs batch size, S(B) = S_min·(1 + B_crit/B) (McCandlish et
  al. 2018: perfect scaling below B_crit, none above), by least squares of S on 1/B (S = α + β/B, so
  S_min = α and B_crit = β/α), with a Fieller CI of B_crit from the fit's covariance.
- `warmup_steps`: the length of a linear warm-up, in steps, by a stated rule with a floor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from samlib.io import is_finite
from samlib.study.stats import LEVEL, fieller

GRID_FACTOR = math.sqrt(10)  #: two grid values a decade: 0.01, 0.0316, 0.1, 0.316, ...


def chosen_lr(results: Mapping[float, Any]) -> dict[str, Any]:
    """The lr with the lowest validation loss of `results` (lr → mean validation loss over seeds; None or
    NaN for an lr that diverged or collapsed), and why the grid bounds it: ``interior`` (a finite worse
    value on both sides), ``bounded_by_failure`` (a side's neighbour diverged or collapsed), or
    ``at_edge`` (the smallest or largest lr tried: the grid must extend)."""
    lrs = sorted(float(lr) for lr in results)
    finite = {float(lr): float(v) for lr, v in results.items() if is_finite(v)}
    if not finite:
        return {"lr": None, "val_loss": None, "interior": False, "bounded_by_failure": False, "at_edge": True}
    best = min(finite, key=lambda lr: (finite[lr], lr))
    i = lrs.index(best)
    sides = [lrs[i - 1] if i > 0 else None, lrs[i + 1] if i + 1 < len(lrs) else None]
    at_edge = any(s is None for s in sides)
    failed = any(s is not None and s not in finite for s in sides)
    return {"lr": best, "val_loss": finite[best], "interior": not at_edge and not failed,
            "bounded_by_failure": failed and not at_edge, "at_edge": at_edge}


def next_lr(results: Mapping[float, Any], factor: float = GRID_FACTOR) -> float | None:
    """The next lr to try, or None when the choice is settled (interior, or bounded by a failed lr).
    Every lr failed: one step below the smallest. The best at the grid's edge: one step past it."""
    if not results:
        raise ValueError("next_lr needs at least one lr tried")
    lrs = sorted(float(lr) for lr in results)
    choice = chosen_lr(results)
    if choice["lr"] is None:
        return lrs[0] / factor
    if not choice["at_edge"]:
        return None
    return lrs[0] / factor if choice["lr"] == lrs[0] else lrs[-1] * factor


def fit_critical_batch(batch_sizes: Sequence[float], steps: Sequence[float], level: float = LEVEL) -> dict[str, Any]:
    """S(B) = S_min·(1 + B_crit/B) fitted to (batch size, steps to target) points (one per run) by least
    squares of S on 1/B; ``b_crit`` with a Fieller CI (``lo``/``hi``; None where unbounded), ``s_min``,
    ``n`` points. Needs at least three points at two or more batch sizes."""
    pts = [(float(b), float(s)) for b, s in zip(batch_sizes, steps) if is_finite(b) and is_finite(s) and float(b) > 0]
    out: dict[str, Any] = {"b_crit": math.nan, "lo": None, "hi": None, "s_min": math.nan, "n": len(pts),
                           "bounded": False}
    if len(pts) < 3 or len({b for b, _ in pts}) < 2:
        return out
    x = np.array([[1.0, 1.0 / b] for b, _ in pts])
    y = np.array([s for _, s in pts])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    alpha, beta = (float(c) for c in coef)
    df = len(pts) - 2
    resid = y - x @ coef
    sigma2 = float(resid @ resid) / df if df > 0 else math.nan
    cov = sigma2 * np.linalg.inv(x.T @ x)
    f = fieller(beta, alpha, float(cov[1, 1]), float(cov[0, 0]), float(cov[0, 1]), df, level)
    out.update(b_crit=beta / alpha if alpha else math.nan, s_min=alpha, lo=f["lo"], hi=f["hi"], bounded=f["bounded"])
    return out


def warmup_steps(steps_to_first_milestone: float, fraction: float = 0.05, floor: int = 50) -> int:
    """A linear warm-up's length: max(`fraction` of the steps the run takes to its first milestone,
    `floor`) steps, so a warm-up is one at every batch size (a quarter epoch at batch 1,000 of 3,500
    images would be a single step)."""
    return int(max(round(fraction * float(steps_to_first_milestone)), floor))
