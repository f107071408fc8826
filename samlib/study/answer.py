"""The study's direct answer, from its results table (one row per run, `layout.run_record`).

Which runs are compared: the main notebooks' runs (not the lr sweep) that finished ok and, where they
had a loss target, reached it (``converged``): minima at the same inference-mode training loss. The
others are listed, never averaged (`not_compared`).

- `gap_closure`: per optimizer family (sgd: SGD with or without momentum; adam: Adam, AdamW), how much
  of the gap between the base optimizer at the smallest batch (SB) and at the largest batch (LB) SAM
  closes at LB, for test loss and for test error (`stats.gap_closure`, paired by seed).
- `paired`: every SAM-type method against its base optimizer at the same batch size, per-seed
  differences with t-intervals (`stats.paired_difference`), for the losses, accuracies and the
  sharpness measures.
- `lr_selection`, `lr_slopes`: the lr sweep's best learning rate per (batch size, method, seed) chosen
  by **validation** loss, the test loss of that choice only, and the slope of log(best lr) vs log(B).
- `sentences`: the answer as the report's first finding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from samlib.study import stats
from samlib.study.layout import OK

LR_NOTEBOOK = "lr_scaling"
FAMILIES = {"sgd": ("sgd", "momentum"), "adam": ("adam", "adamw")}
FAMILY_LABEL = {"sgd": "SGD", "adam": "Adam"}
METRICS = {"test_loss": "test loss", "test_error": "test error"}
RULES = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}  # slope of log(lr) vs log(B) each rule prescribes


# ---------------------------------------------------------------------- selections
def _main(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["notebook"] != LR_NOTEBOOK]


def _converged(df: pd.DataFrame) -> pd.Series:
    """True where the run reached its loss target, or had none."""
    if "converged" not in df:
        return pd.Series(True, index=df.index)
    return df["converged"].map(lambda v: v is None or (isinstance(v, float) and math.isnan(v)) or bool(v))


def comparable(df: pd.DataFrame) -> pd.Series:
    """True for runs that finished ok and reached their loss target (or had none)."""
    return (df["status"] == OK) & _converged(df)


def compared(df: pd.DataFrame) -> pd.DataFrame:
    """Main runs that finished ok at their target (module doc), with ``test_error`` = 1 − accuracy."""
    runs = _main(df)
    runs = runs[comparable(runs)]
    return runs.assign(test_error=1.0 - runs["test_accuracy"].astype(float))


def not_compared(df: pd.DataFrame) -> pd.DataFrame:
    """Main runs left out of every comparison: not ok (diverged, failed, missing) or not converged."""
    runs = _main(df)
    return runs[~comparable(runs)]


def _family(df: pd.DataFrame, family: str) -> pd.DataFrame:
    return df[df["optimizer"].isin(FAMILIES[family])]


def _is_base(df: pd.DataFrame) -> pd.Series:
    return df["sam"] == "none"


def _is_plain_sam(df: pd.DataFrame) -> pd.Series:
    return (df["sam"] == "sam") & df["m"].isna()


def per_seed(runs: pd.DataFrame, column: str) -> dict[int, float]:
    """seed → value (the mean if a seed has several runs); non-finite values left out."""
    vals = runs[["seed", column]].dropna()
    vals = vals[np.isfinite(vals[column].astype(float))]
    return {int(s): float(v) for s, v in vals.groupby("seed")[column].mean().items()}


# ---------------------------------------------------------------------- the answer
def gap_closure(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """{family: {estimate, ci_low, ci_high, n_seeds, small_batch, large_batch, metric, ...}} (module doc);
    the test-loss closure at the top level, test error under ``test_error``."""
    runs = compared(df)
    out: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        fam = _family(runs, family)
        base, sam = fam[_is_base(fam)], fam[_is_plain_sam(fam)]
        both = sorted(set(base["batch_size"]) & set(sam["batch_size"]))
        if base["batch_size"].nunique() < 2 or not both or min(base["batch_size"]) >= max(both):
            continue
        small, large = int(base["batch_size"].min()), int(max(both))
        entry: dict[str, Any] = {}
        for metric in METRICS:
            g = stats.gap_closure(per_seed(base[base["batch_size"] == large], metric),
                                  per_seed(sam[sam["batch_size"] == large], metric),
                                  per_seed(base[base["batch_size"] == small], metric))
            g.update(small_batch=small, large_batch=large, metric=metric)
            if metric == "test_loss":
                entry.update(g)
            else:
                entry[metric] = g
        out[family] = entry
    return out


def paired(df: pd.DataFrame, measures: Iterable[str] = ()) -> pd.DataFrame:
    """One row per (family, batch size, SAM-type method, metric): the paired difference method − base."""
    runs = compared(df)
    metrics = ["test_loss", "test_error", "train_loss", "val_loss"] + [m for m in measures if m in runs]
    rows = []
    for family in FAMILIES:
        fam = _family(runs, family)
        for bs, at in fam.groupby("batch_size"):
            base = at[_is_base(at)]
            if not len(base):
                continue
            for method, rows_m in at[~_is_base(at)].groupby("method"):
                for metric in metrics:
                    d = stats.paired_difference(per_seed(rows_m, metric), per_seed(base, metric))
                    rows.append({"family": family, "batch_size": int(bs), "method": method,
                                 "base": base["method"].iloc[0], "metric": metric, **d})
    return pd.DataFrame(rows, columns=["family", "batch_size", "method", "base", "metric", "mean", "lo", "hi", "n",
                                       "sd", "seeds", "significant"])


def lr_selection(df: pd.DataFrame) -> pd.DataFrame:
    """Per (batch size, method, seed) of the lr sweep: the effective lr with the lowest validation loss,
    and the test loss and accuracy of that run (the only test numbers of the sweep that are reported)."""
    runs = df[(df["notebook"] == LR_NOTEBOOK) & (df["status"] == OK)]
    runs = runs[np.isfinite(runs["val_loss"].astype(float))] if "val_loss" in runs else runs.iloc[0:0]
    cols = ["batch_size", "method", "seed", "lr", "val_loss", "test_loss", "test_accuracy", "n_lrs"]
    if not len(runs):
        return pd.DataFrame(columns=cols)
    rows = []
    for (bs, method, seed), g in runs.groupby(["batch_size", "method", "seed"]):
        best = g.loc[g["val_loss"].astype(float).idxmin()]
        rows.append({"batch_size": int(bs), "method": method, "seed": int(seed), "lr": float(best["lr"]),
                     "val_loss": float(best["val_loss"]), "test_loss": float(best["test_loss"]),
                     "test_accuracy": float(best["test_accuracy"]), "n_lrs": int(g["lr"].nunique()),
                     "at_edge": float(best["lr"]) in (float(g["lr"].min()), float(g["lr"].max()))})
    return pd.DataFrame(rows)


def lr_slopes(selection: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """{method: {slope, lo, hi, n, rules_in_ci, at_edge}}: log(best lr) vs log(B) over all (B, seed)."""
    out = {}
    for method, g in selection.groupby("method"):
        fit = stats.loglog_slope(g["batch_size"], g["lr"])
        fit["rules_in_ci"] = [r for r, s in RULES.items() if fit["lo"] <= s <= fit["hi"]]
        fit["at_edge"] = int(g["at_edge"].sum())  # best lr on the sweep's edge: the slope is then bounded
        out[method] = fit
    return out


# ---------------------------------------------------------------------- words
def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def sentences(gaps: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The gap closure as plain sentences (the report's first finding); one per optimizer family."""
    lines = []
    for family, g in gaps.items():
        name = FAMILY_LABEL[family]
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
