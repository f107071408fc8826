"""The study's direct answer, from its results table (one row per run, `layout.run_record`).

Which runs are compared is `samlib.study.selections`' (`selections.compared`: the main notebooks' runs
that finished ok and reached their loss target, minima at the same inference-mode training loss); the
others are listed, never averaged (`selections.not_compared`).

- `gap_closure`: per optimizer family (`selections.FAMILIES`; sgd: SGD with or without momentum; adam:
  Adam, AdamW) and lr rule (`selections.LR_RULES`: one regime each, never pooled), how much of the gap
  between the base optimizer at the smallest batch (SB) and at the largest batch (LB) SAM closes at LB,
  for test loss and for test error (`stats.gap_closure`, paired by seed), on the runs' final weights.
- `paired`: every SAM-type method against its own base optimizer at the same batch size, per-seed
  differences with t-intervals (`stats.paired_difference`), for the losses, accuracies and the
  sharpness measures.
- `lr_slopes`: the slope of log(best lr) vs log(B) of `selections.lr_selection` (the lr sweep's best
  learning rate per (batch size, method, seed), chosen by **validation** loss).
- `sentences`: the answer as the report's first finding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from samlib.study import stats
from samlib.study.selections import (
    FAMILIES,
    FAMILY_LABELS,
    LR_RULES,
    by_method,
    compared,
    in_family,
    in_lr_rule,
    is_base,
    is_plain_sam,
)

METRICS = {"test_loss": "test loss", "test_error": "test error"}
RULES = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}  # slope of log(lr) vs log(B) each rule prescribes


def per_seed(runs: pd.DataFrame, column: str) -> dict[int, float]:
    """seed → value (the mean if a seed has several runs); non-finite values left out."""
    vals = runs[["seed", column]].dropna()
    vals = vals[np.isfinite(vals[column].astype(float))]
    return {int(s): float(v) for s, v in vals.groupby("seed")[column].mean().items()}


# ---------------------------------------------------------------------- the answer
def gap_closure(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per (family, lr rule) with runs to compare: ``family``, ``lr_rule``, then the test-loss
    closure (`stats.gap_closure`: estimate, ci_low, ci_high, n_seeds, ...), ``small_batch``,
    ``large_batch``, ``metric`` and the test-error closure under ``test_error`` (module doc)."""
    runs = compared(df)
    out: list[dict[str, Any]] = []
    for family in FAMILIES:
        for rule in LR_RULES:
            fam = in_lr_rule(in_family(runs, family), rule)
            base, sam = fam[is_base(fam)], fam[is_plain_sam(fam)]
            both = sorted(set(base["batch_size"]) & set(sam["batch_size"]))
            if base["batch_size"].nunique() < 2 or not both or min(base["batch_size"]) >= max(both):
                continue
            small, large = int(base["batch_size"].min()), int(max(both))
            entry: dict[str, Any] = {"family": family, "lr_rule": rule}
            for metric in METRICS:
                g = stats.gap_closure(per_seed(base[base["batch_size"] == large], metric),
                                      per_seed(sam[sam["batch_size"] == large], metric),
                                      per_seed(base[base["batch_size"] == small], metric))
                g.update(small_batch=small, large_batch=large, metric=metric)
                if metric == "test_loss":
                    entry.update(g)
                else:
                    entry[metric] = g
            out.append(entry)
    return out


def paired(df: pd.DataFrame, measures: Iterable[str] = ()) -> pd.DataFrame:
    """One row per (family, batch size, SAM-type method, metric): the paired difference method − base,
    the base being the same optimizer without SAM (``method`` and ``base`` are their labels)."""
    runs = compared(df)
    metrics = ["test_loss", "test_error", "train_loss", "val_loss"] + [m for m in measures if m in runs]
    rows = []
    for family in FAMILIES:
        fam = in_family(runs, family)
        for bs, at in fam.groupby("batch_size"):
            of_method = dict(by_method(at))
            for method, rows_m in of_method.items():
                base = of_method.get(method.base)
                if method.is_base or base is None:
                    continue
                for metric in metrics:
                    d = stats.paired_difference(per_seed(rows_m, metric), per_seed(base, metric))
                    rows.append({"family": family, "batch_size": int(bs), "method": method.label,
                                 "base": method.base.label, "metric": metric, **d})
    return pd.DataFrame(rows, columns=["family", "batch_size", "method", "base", "metric", "mean", "lo", "hi", "n",
                                       "sd", "seeds", "significant"])


def lr_slopes(selection: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """{method label: {slope, lo, hi, n, rules_in_ci, at_edge}}: log(best lr) vs log(B) over all (B, seed)
    of a `selections.best_lr` table, per method in `selections.method_order`."""
    out = {}
    for method, g in by_method(selection):
        fit = stats.loglog_slope(g["batch_size"], g["lr"])
        fit["rules_in_ci"] = [r for r, s in RULES.items() if fit["lo"] <= s <= fit["hi"]]
        fit["at_edge"] = int(g["at_edge"].sum())  # best lr on the sweep's edge: the slope is then bounded
        out[method.label] = fit
    return out


# ---------------------------------------------------------------------- words
def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def sentences(gaps: Iterable[Mapping[str, Any]]) -> list[str]:
    """The gap closure as plain sentences (the report's first findings); one per family and lr rule."""
    lines = []
    for g in gaps:
        name = f"{FAMILY_LABELS[g['family']]} ({g['lr_rule']} lr, final weights)"
        gap = g["gap"]
        where = (f"{name} at batch {g['large_batch']} vs batch {g['small_batch']} ({g['n_seeds']} paired seeds, "
                 f"test loss {gap['mean']:+.3g}, 95 % CI {gap['lo']:+.3g} to {gap['hi']:+.3g})")
        if not g["significant_gap"]:
            gain = g["sam_gain"]
            lines.append(f"The large-batch gap of {where} is not significant, so there is no gap for SAM to close "
                         f"and no closure is reported; SAM at batch {g['large_batch']} changes test loss by "
                         f"{-gain['mean']:+.3g} (95 % CI {-gain['hi']:+.3g} to {-gain['lo']:+.3g}).")
            continue
        err = g.get("test_error", {})
        err_text = (f"; of the test-error gap {_pct(err['estimate'])} (95 % CI {_pct(err['ci_low'])} to "
                    f"{_pct(err['ci_high'])})" if err and np.isfinite(err.get("estimate", math.nan)) else "")
        lines.append(f"SAM at batch {g['large_batch']} closes {_pct(g['estimate'])} (bootstrap 95 % CI "
                     f"{_pct(g['ci_low'])} to {_pct(g['ci_high'])}) of the test-loss gap of {where}"
                     f"{err_text}.")
    return lines
