"""The batch-size curve and the tuning that feeds it: pure functions on plain numbers, no TensorFlow.

- `next_lr` / `chosen_lr`: the tuning rule (Shallue et al. 2019): an lr is chosen on the validation
  split from a log-spaced grid: the fastest of the lrs whose validation loss is within the seeds'
  noise of the best; the grid extends itself until that choice is interior, or its next value
  diverged or collapsed (a failed lr bounds the grid as well as a worse one does).
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

from samlib import measures
from samlib.cost import grad_evals_per_step
from samlib.io import is_finite

GRID_FACTOR = math.sqrt(10)  #: two grid values a decade: 0.01, 0.0316, 0.1, 0.316, ...


def chosen_lr(results: Mapping[float, Any], steps: Mapping[float, Any] | None = None,
              tolerance: float = 0.0) -> dict[str, Any]:
    """The tuning rule's choice among `results` (lr → mean validation loss over seeds; None or NaN for an
    lr that diverged or collapsed). Without `steps`: the lr with the lowest validation loss. With `steps`
    (lr → mean steps to the tuning milestone), Shallue et al.'s (2019) rule: of the lrs whose validation
    loss is within `tolerance` of the lowest (the seeds' noise), the fastest; ties go to the larger lr.
    Also why the grid bounds it: ``interior`` (a tried value on both sides), ``bounded_by_failure`` (a
    side's neighbour diverged or collapsed), or ``at_edge`` (the smallest or largest lr tried: the grid
    must extend). ``best_lr`` is the lowest-loss lr, ``tolerance`` the one used."""
    lrs = sorted(float(lr) for lr in results)
    finite = {float(lr): float(v) for lr, v in results.items() if is_finite(v)}
    if not finite:
        return {"lr": None, "val_loss": None, "best_lr": None, "tolerance": tolerance,
                "interior": False, "bounded_by_failure": False, "at_edge": True}
    best = min(finite, key=lambda lr: (finite[lr], lr))
    chosen = best
    if steps is not None:
        near = [lr for lr, v in finite.items() if v <= finite[best] + tolerance and is_finite(steps.get(lr))]
        chosen = min(near, key=lambda lr: (float(steps[lr]), -lr), default=best)
    i = lrs.index(chosen)
    sides = [lrs[i - 1] if i > 0 else None, lrs[i + 1] if i + 1 < len(lrs) else None]
    at_edge = any(s is None for s in sides)
    failed = any(s is not None and s not in finite for s in sides)
    return {"lr": chosen, "val_loss": finite[chosen], "best_lr": best, "tolerance": tolerance,
            "interior": not at_edge and not failed, "bounded_by_failure": failed and not at_edge,
            "at_edge": at_edge}


def next_lr(results: Mapping[float, Any], factor: float = GRID_FACTOR, steps: Mapping[float, Any] | None = None,
            tolerance: float = 0.0) -> float | None:
    """The next lr to try, or None when the choice (`chosen_lr` with `steps` and `tolerance`) is settled
    (interior, or bounded by a failed lr). Every lr failed: one step below the smallest. The choice at
    the grid's edge: one step past it."""
    if not results:
        raise ValueError("next_lr needs at least one lr tried")
    lrs = sorted(float(lr) for lr in results)
    choice = chosen_lr(results, steps, tolerance)
    if choice["lr"] is None:
        return lrs[0] / factor
    if not choice["at_edge"]:
        return None
    return lrs[0] / factor if choice["lr"] == lrs[0] else lrs[-1] * factor


def fit_critical_batch(batch_sizes: Sequence[float], steps: Sequence[float],
                       level: float | None = None) -> dict[str, Any]:
    """S(B) = S_min·(1 + B_crit/B) fitted to (batch size, steps to target) points (one per run) by least
    squares of S on 1/B; ``b_crit`` with a Fieller CI (``lo``/``hi``; None where unbounded), ``s_min``,
    ``n`` points; `level` defaults to `stats.LEVEL`. Needs at least three points at two or more batch sizes."""
    from samlib.study import stats  # scipy: loaded only when a curve is fitted (plans and cell views need none)

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
    f = stats.fieller(beta, alpha, float(cov[1, 1]), float(cov[0, 0]), float(cov[0, 1]), df, level or stats.LEVEL)
    out.update(b_crit=beta / alpha if alpha else math.nan, s_min=alpha, lo=f["lo"], hi=f["hi"], bounded=f["bounded"])
    return out


def warmup_steps(steps_to_first_milestone: float, fraction: float = 0.05, floor: int = 50) -> int:
    """A linear warm-up's length: max(`fraction` of the steps the run takes to its first milestone,
    `floor`) steps, so a warm-up is one at every batch size (a quarter epoch at batch 1,000 of 3,500
    images would be a single step)."""
    return int(max(round(fraction * float(steps_to_first_milestone)), floor))


# ---------------------------------------------------------------------- the curve of a study
NOISE_KEY = measures.REGISTRY[measures.NOISE].keys(None)[0]  #: B_simple's key in the snapshots
MIN_CURVE_SIZES = 3  #: batch sizes a B_crit fit needs (S_min and B_crit from two would fit any two points)
def _ci(values: Sequence[float]) -> dict[str, Any]:
    from samlib.study.stats import mean_ci, value

    ci = mean_ci(values)
    return {"mean": value(ci["mean"]), "lo": value(ci["lo"]), "hi": value(ci["hi"]), "n": ci["n"]}


def curve_table(snapshots: Any) -> list[dict[str, Any]]:
    """The batch-size curve of a snapshots table: one entry per (data set, method, lr rule, loss
    milestone) with at least two batch sizes, each batch size's steps, epochs and gradient evaluations to
    that milestone (mean and t-CI over the seeds that reached it; ``missed`` counts the others), its mean
    B_simple there where measured, and the fit S(B) = S_min·(1 + B_crit/B) over every (B, seed) point
    (`fit_critical_batch`; None with fewer than `MIN_CURVE_SIZES` batch sizes). Main runs only
    (`selections.main_runs`); each run in its own lr rule (`selections.own_lr_rules`)."""
    from samlib.study import selections

    if snapshots is None or not len(snapshots) or "milestone" not in snapshots:
        return []
    runs = selections.main_runs(snapshots)
    runs = runs[runs["kind"] == "loss"]
    runs = runs.assign(lr_rule=selections.own_lr_rules(runs), comparable=selections.comparable_snapshots(runs))
    out = []
    for (dataset, rule, at), g in runs.groupby(["dataset", "lr_rule", runs["at"].astype(float)], sort=True):
        for method, rows in selections.by_method(g):
            if rows["batch_size"].nunique() < 2:
                continue
            reached = rows[rows["comparable"]]
            evals = grad_evals_per_step(method.sam, rows["looksam_k"].iloc[0] if "looksam_k" in rows else None)
            points = []
            for bs, at_b in rows.groupby("batch_size"):
                done = reached[reached["batch_size"] == bs]
                steps = done["step"].astype(float).tolist()
                b_simple = done[NOISE_KEY].astype(float).dropna() if NOISE_KEY in done else []
                points.append({"batch_size": int(bs), "steps": _ci(steps), "epochs": _ci(done["epoch"].astype(float)),
                               "grad_evals": _ci([s * evals for s in steps]), "missed": int(len(at_b) - len(done)),
                               NOISE_KEY: float(np.mean(b_simple)) if len(b_simple) else None})
            fit = fit_critical_batch(reached["batch_size"].astype(float), reached["step"].astype(float)) \
                if reached["batch_size"].nunique() >= MIN_CURVE_SIZES else None  # two points fit any S(B)
            out.append({"dataset": selections.dataset_label(dataset), "method": method.label, **method.fields(),
                        "lr_rule": rule, "milestone": f"loss={at:g}", "grad_evals_per_step": evals,
                        "points": points, "fit": None if fit is None else
                        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in fit.items()}})
    return out
