"""The study's answer in numbers: one module for every number the answer states.

From the snapshots table (one row per (run, milestone), `tables.snapshot_records`), `answer_table`: one
row per (data set, optimizer family, lr rule, compare_at, at):

- ``dataset``: a reader's name (`selections.dataset_label`); ``optimizer``: the family (`selections.FAMILIES`:
  ``sgd``, ``adam``, ``lars``, ``lamb``); ``lr_rule``: ``same`` (no lr scaling) or ``scaled``
  (`selections.in_lr_rule`: a rule without small-batch runs of its own shares the other rule's, as both
  give the same lr there);
  ``compare_at``: ``epochs`` (after the same number of epochs) or ``loss`` (at the same inference-mode
  training loss); ``at``: the epoch count or the loss.
- ``small_batch`` / ``large_batch``: the smallest / largest batch size of the family's main runs (the
  comparisons: `selections.main_runs`) on that data set.
- Runs: the base optimizer (no SAM, `selections.is_base`) and plain SAM (m None, `selections.is_plain_sam`)
  at those two batch sizes. A run that did not reach the milestone, or did not finish ok (diverged,
  failed, missing, collapsed), is left out of the row and counted in ``n_missing``
  (`selections.comparable_snapshots`).
- ``test_error``, ``test_loss``, ``train_loss``, ``grad_norm``, ``lambda_max``, ``keskar`` (the first
  Keskar key present, named in ``which_keskar``), ``steps``: each ``{sb, lb, lb_sam, sb_sam}``, the mean
  over seeds (each seed's value first averaged over its runs) of the base optimizer at the small and
  the large batch and of SAM at the large and the small batch; null where not measured or absent.
- ``gap``: LB − SB test error, paired by seed, ``{mean, lo, hi}`` (t-based 95 % CI,
  `stats.paired_difference`); ``n_seeds`` is its number of pairs; ``p`` its paired t-test and
  ``holm_p`` that p adjusted by Holm's method over every row of the data set's table (one family of
  tests); ``upper``: the CI's upper limit, so that "no gap larger than" reads "no gap larger than
  ``upper``"; ``mde``: the smallest gap the test detects at 80 % power with these seeds.
  ``sam_effect``: LB+SAM − LB test error, paired by seed. ``closure``: ``{estimate, lo, hi}``, the share
  of the test-error gap SAM closes at the large batch, with a Fieller 95 % CI from the per-seed
  numerators and denominators (`stats.ratio_ci`; lo/hi null where unbounded), only where both the gap
  and SAM's effect are significant (else a ratio over noise). ``mismatch``: ln(L_LB / L_SB) of the
  mean training losses at the snapshot, how far apart the compared minima are. Errors are fractions
  (0.012 = 1.2 points). ``gap_two_way``: where the runs recorded their per-test-image predictions
  (``record_predictions``), the gap with a CI over seeds × test images (`two_way_gap`), which also covers
  the sampling of the test set; ``upper`` is then its upper limit. Otherwise the CIs cover the seeds
  only, the test images being one fixed sample.
- ``seed_claims`` (`seed_claims`): whether this row shows what the seed study reported:
  ``large_batch_worse`` (a positive gap, significant after Holm), ``sam_worse`` (mean SAM effect above
  0), ``sam_sharper`` (λ_max of LB+SAM above LB; null without λ_max) and ``reproduces`` (large batch
  worse, and SAM worse or sharper).

From the results table (one row per run, `tables.run_record`; the compared runs are `selections.compared`:
ok and at their loss target, minima at the same inference-mode training loss):

- `gap_closure`: per optimizer family and lr rule (one regime each, never pooled), how much of the gap
  between the base optimizer at the smallest batch (SB) and at the largest batch (LB) SAM closes at LB,
  for test loss and for test error (`stats.gap_closure`, paired by seed), on the runs' final weights.
- `paired`: every SAM-type method against its own base optimizer at the same batch size, per-seed
  differences with t-intervals (`stats.paired_difference`).
- `lr_slopes`: the slope of log(best lr) vs log(B) of `selections.lr_selection` (the lr sweep's best
  learning rate per (batch size, method, seed), chosen by **validation** loss).
- `cost_ratios`: SAM-type / base-optimizer seconds per epoch, paired by batch size, seed and optimizer.

The words that say these numbers are `samlib.study.answer_text`'s. No TensorFlow here; pandas only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from samlib import measures
from samlib.milestones import EPOCHS, LOSS
from samlib.study import stats
from samlib.io import present
from samlib.study.selections import (
    FAMILIES,
    LR_RULES,
    TUNED_LR,
    by_method,
    comparable_runs,
    comparable_snapshots,
    compared,
    dataset_label,
    in_family,
    in_lr_rule,
    is_base,
    is_plain_sam,
    is_sam,
    main_runs,
)

COMPARE_AT = (EPOCHS, LOSS)  #: the order of the table's compare_at
GROUPS = ("sb", "lb", "lb_sam", "sb_sam")  #: base at SB, base at LB, SAM at LB, SAM at SB
LAMBDA_KEY = measures.REGISTRY[measures.LAMBDA_MAX].keys(None)[0]  #: λ_max's key, in snapshots and in rows
MEANS = {"test_error": "test_error", "test_loss": "test_loss", "train_loss": "train_loss",
         "grad_norm": "grad_norm", LAMBDA_KEY: LAMBDA_KEY, "steps": "step"}  #: row key -> snapshot column
KEYS = ["dataset", "optimizer", "lr_rule", "compare_at", "at", "small_batch", "large_batch", "n_seeds", "n_missing",
        "test_error", "test_loss", "train_loss", "grad_norm", LAMBDA_KEY, "keskar", "which_keskar", "steps", "gap",
        "sam_effect", "closure", "gap_two_way", "p", "holm_p", "upper", "mde", "mismatch", "seed_claims"]

METRICS = {"test_loss": "test loss", "test_error": "test error"}  #: the metrics of `gap_closure`
RULES = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}  #: slope of log(lr) vs log(B) each rule prescribes


def per_seed(runs: pd.DataFrame, column: str) -> dict[int, float]:
    """seed → value of `column` (the mean if a seed has several rows); missing or non-finite left out."""
    if column not in runs or not len(runs):
        return {}
    vals = runs[["seed", column]].copy()
    vals[column] = pd.to_numeric(vals[column], errors="coerce")
    vals = vals[np.isfinite(vals[column].astype(float)) & vals["seed"].notna()]
    return {int(s): float(v) for s, v in vals.groupby("seed")[column].mean().items()}


def _mean_over_seeds(runs: pd.DataFrame, column: str | None) -> float | None:
    values = per_seed(runs, column) if column else {}
    return stats.value(np.mean(list(values.values()))) if values else None


def keskar_key(snapshots: pd.DataFrame) -> str | None:
    """The first Keskar key (`samlib.measures.order`: the largest ε first) holding a number, or None."""
    keys = [k for k in measures.order(c for c in snapshots.columns if measures.is_measure(c))
            if measures.measure_of(k) is measures.REGISTRY[measures.KESKAR]]
    return next((k for k in keys if pd.to_numeric(snapshots[k], errors="coerce").notna().any()), None)


def _interval(d: Mapping[str, Any]) -> dict[str, float | None]:
    return {"mean": stats.value(d.get("mean")), "lo": stats.value(d.get("lo")), "hi": stats.value(d.get("hi"))}


def _order_at(kind: str, ats: Sequence[float]) -> list[float]:
    """Epoch milestones ascending, loss milestones descending: both in the order training reaches them."""
    return sorted(set(ats), reverse=kind == LOSS)


def _at(kind: str, at: float) -> int | float:
    return int(at) if kind == EPOCHS else float(at)


def _mismatch(train_loss: Mapping[str, Any]) -> float | None:
    """How far apart the compared minima's training losses are: ln(L_LB / L_SB) of the mean training
    losses at the snapshot (0.02 = the large batch 2 % higher); None without both."""
    lb, sb = train_loss.get("lb"), train_loss.get("sb")
    return stats.value(math.log(lb / sb)) if lb and sb and lb > 0 and sb > 0 else None


def _errors_by_seed(rows: pd.DataFrame) -> dict[int, np.ndarray]:
    """seed → per-test-image errors (1 = wrong) of a group's snapshots that recorded them
    (``test_correct``, `samlib.rundir.decode_correct`); {} without predictions."""
    if "test_correct" not in rows:
        return {}
    from samlib.rundir import decode_correct

    out = {}
    for seed, text, n in zip(rows["seed"], rows["test_correct"], rows.get("n_test", pd.Series(index=rows.index))):
        n = int(n) if present(n) else None
        if isinstance(text, str) and n and present(seed):
            out[int(seed)] = 1.0 - decode_correct(text, n).astype(float)
    return out


def two_way_gap(large: pd.DataFrame, small: pd.DataFrame) -> dict[str, Any] | None:
    """LB − SB test error with a CI over seeds × test images (`stats.two_way_bootstrap` of the per-seed,
    per-image error differences, seeds paired), where both groups recorded their predictions for at
    least two shared seeds; None otherwise."""
    lb, sb = _errors_by_seed(large), _errors_by_seed(small)
    seeds = sorted(s for s in lb if s in sb and len(lb[s]) == len(sb[s]))
    if len(seeds) < 2:
        return None
    boot = stats.two_way_bootstrap(np.stack([lb[s] - sb[s] for s in seeds]))
    return {"mean": stats.value(boot["mean"]), "lo": stats.value(boot["lo"]), "hi": stats.value(boot["hi"]),
            "n_seeds": len(seeds), "n_images": boot["n_images"]}


def answer_row(rows: pd.DataFrame, small: int, large: int, keskar: str | None = None) -> dict[str, Any]:
    """The numbers of one answer row from the snapshot rows of one (data set, family, lr rule,
    milestone) at the batch sizes `small` and `large` (module doc; identity keys are the caller's)."""
    rows = rows[(is_base(rows) | is_plain_sam(rows)) & rows["batch_size"].isin([small, large])]
    used = rows[comparable_snapshots(rows)]
    base, sam = used[is_base(used)], used[is_plain_sam(used)]
    groups = {"sb": base[base["batch_size"] == small], "lb": base[base["batch_size"] == large],
              "lb_sam": sam[sam["batch_size"] == large], "sb_sam": sam[sam["batch_size"] == small]}
    out: dict[str, Any] = {"n_missing": int(len(rows) - len(used))}
    for key, column in MEANS.items():
        out[key] = {g: _mean_over_seeds(groups[g], column) for g in GROUPS}
    out["keskar"] = {g: _mean_over_seeds(groups[g], keskar) for g in GROUPS}
    out["which_keskar"] = keskar
    err = {g: per_seed(groups[g], "test_error") for g in GROUPS}
    gap = stats.paired_difference(err["lb"], err["sb"])
    effect = stats.paired_difference(err["lb_sam"], err["lb"])
    out["n_seeds"] = int(gap["n"])
    out["gap"], out["sam_effect"] = _interval(gap), _interval(effect)
    out["gap_two_way"] = two_way_gap(groups["lb"], groups["sb"])
    out["p"] = stats.value(gap["p"])
    out["holm_p"] = None  # set by `answer_table`, over the table's gap tests
    two_way = out["gap_two_way"]  # where the test images' variance is known, the wider CI bounds the gap
    out["upper"] = two_way["hi"] if two_way else stats.value(gap["hi"]) if gap["n"] >= 2 else None
    out["mde"] = stats.value(stats.mde(gap["sd"], gap["n"])) if gap["n"] >= 2 else None
    out["mismatch"] = _mismatch(out["train_loss"])
    out["closure"] = None
    if gap["significant"] and effect["significant"]:  # a ratio of two real effects, else of noise
        num = {s: err["lb"][s] - err["lb_sam"][s] for s in err["lb"] if s in err["lb_sam"]}
        den = {s: err["lb"][s] - err["sb"][s] for s in err["lb"] if s in err["sb"]}
        c = stats.ratio_ci(num, den)
        out["closure"] = {"estimate": stats.value(c["estimate"]), "lo": stats.value(c["lo"]),
                          "hi": stats.value(c["hi"])}
    out["seed_claims"] = None  # set by `answer_table`, after the Holm correction
    return out


def seed_claims(row: Mapping[str, Any], alpha: float = 1 - stats.LEVEL) -> dict[str, Any]:
    """Whether a row shows what the seed study reported (module doc): the large batch worse (a positive
    gap, significant after Holm's correction over the table), SAM worse (its mean effect above 0), SAM
    sharper (λ_max of LB+SAM above LB; None without λ_max), and whether that reproduces the result."""
    lam = row[LAMBDA_KEY]
    sharper = None if lam["lb"] is None or lam["lb_sam"] is None else lam["lb_sam"] > lam["lb"]
    mean, holm_p = row["gap"]["mean"], row["holm_p"]
    worse_lb = bool(mean is not None and mean > 0 and holm_p is not None and holm_p < alpha)
    sam_worse = row["sam_effect"]["mean"] is not None and row["sam_effect"]["mean"] > 0
    return {"large_batch_worse": worse_lb, "sam_worse": bool(sam_worse), "sam_sharper": sharper,
            "reproduces": bool(worse_lb and (sam_worse or bool(sharper)))}


def _rule_rows(ruled: pd.DataFrame, identity: dict[str, Any], small: int, larges: Sequence[int],
               keskar: str | None) -> list[dict[str, Any]]:
    """The rows of one (data set, family, lr rule): per compare_at and milestone (in the order training
    reaches it), one row per large batch size against `small`."""
    rows = []
    for kind in COMPARE_AT:
        of_kind = ruled[ruled["kind"] == kind]
        for at in _order_at(kind, [float(a) for a in of_kind["at"] if present(a)]):
            snaps = of_kind[of_kind["at"].astype(float) == at]
            for large in larges:
                entry = {**identity, "compare_at": kind, "at": _at(kind, at), "small_batch": small, "large_batch": large}
                entry.update(answer_row(snaps, small, large, keskar))
                rows.append({k: entry[k] for k in KEYS})
    return rows


def answer_table(snapshots: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The answer table (module doc) of a snapshots table: a list of rows, ordered by data set,
    family (sgd, adam), lr rule (same, scaled, tuned), compare_at (epochs, loss), at (in the order
    training reaches it) and large batch. The same and scaled rules compare the family's smallest and
    largest batch size; the tuned rule compares every batch size it ran with its smallest (the curve).
    Empty for a study without snapshots (its runs predate them)."""
    if snapshots is None or not len(snapshots) or "milestone" not in snapshots:
        return []
    main = main_runs(snapshots)
    keskar = keskar_key(main)
    table = []
    for dataset in sorted({d for d in main["dataset"] if present(d)}, key=str):
        of_dataset = main[main["dataset"] == dataset]
        for family in FAMILIES:
            fam = in_family(of_dataset, family)
            sizes = sorted({int(b) for b in fam["batch_size"] if present(b)})
            if len(sizes) < 2:
                continue
            for rule in LR_RULES:
                ruled = in_lr_rule(fam, rule)
                own = sorted({int(b) for b in ruled["batch_size"] if present(b)})
                larges = [b for b in own if b > sizes[0]] if rule == TUNED_LR else [sizes[-1]]
                if sizes[0] not in own or not set(larges) <= set(own) or not larges:
                    continue  # the rule has no run at one of the batch sizes: nothing to compare
                identity = {"dataset": dataset_label(dataset), "optimizer": family, "lr_rule": rule}
                table += _rule_rows(ruled, identity, sizes[0], larges, keskar)
    for dataset in {r["dataset"] for r in table}:  # one family of tests per data set's table
        rows_of = [r for r in table if r["dataset"] == dataset]
        for r, adjusted in zip(rows_of, stats.holm([r["p"] for r in rows_of])):
            r["holm_p"] = stats.value(adjusted)
            r["seed_claims"] = seed_claims(r)
    return table


def side_by_side(tables: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Several studies' answer tables as one, each regime's rows of every data set together: ordered by
    family, lr rule and compare_at, then by study in the order given, each study's rows in their own
    order (its milestones). The README quotes the committed studies this way."""
    keyed = [((list(FAMILIES).index(row["optimizer"]), LR_RULES.index(row["lr_rule"]),
               COMPARE_AT.index(row["compare_at"]), t, i), dict(row))
             for t, table in enumerate(tables) for i, row in enumerate(table)]
    return [row for _, row in sorted(keyed, key=lambda kr: kr[0])]


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


# ---------------------------------------------------------------------- cost
def cost_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """SAM-type / base-optimizer seconds per epoch (steady-state seconds per step × steps per epoch),
    paired by (batch size, seed, optimizer), per SAM method; compared main runs only. One row per
    pair: batch size, seed, the method's label and fields, the ratio."""
    runs = comparable_runs(main_runs(df))
    runs = runs[np.isfinite(runs["seconds_per_epoch"].astype(float))]
    base = runs[is_base(runs)]
    rows = []
    for method, of_method in by_method(runs[is_sam(runs)]):
        for _, r in of_method.iterrows():
            match = base[(base["batch_size"] == r["batch_size"]) & (base["seed"] == r["seed"])
                         & (base["optimizer"] == method.optimizer)]
            if len(match):
                rows.append({"batch_size": r["batch_size"], "seed": r["seed"], "method": method.label,
                             **method.fields(), "ratio": r["seconds_per_epoch"] / match["seconds_per_epoch"].mean()})
    return pd.DataFrame(rows, columns=["batch_size", "seed", "method", "optimizer", "sam", "m", "ratio"])


# ---------------------------------------------------------------------- sharpness as a predictor
PREDICTED = {"test_error": "test error", "generalization_gap": "test − train loss"}  #: what a measure should predict
AXES = ("batch_size", "lr", "method")  #: the hyperparameter axes of the granulated τ


def sharpness_vs_generalization(snapshots: pd.DataFrame | None, n_boot: int = 1000) -> list[dict[str, Any]]:
    """Is a sharper minimum a worse one? One entry per (data set, loss milestone, measure, target):
    Kendall's τ of the measure (each sharpness measure the snapshots hold, and the weight norm) against
    the test error and against the generalization gap (test − train loss), over every main run's
    comparable snapshot at that milestone (all methods, batch sizes and lr rules together), with a
    bootstrap CI over the runs (`stats.kendall_tau`), and the granulated τ (`stats.granulated_tau`)
    over batch size, lr and method: τ within groups that differ in one of them only."""
    if snapshots is None or not len(snapshots) or "milestone" not in snapshots:
        return []
    runs = main_runs(snapshots)
    runs = runs[comparable_snapshots(runs) & (runs["kind"] == LOSS)]
    measures_ = [c for c in runs.columns if measures.is_measure(c) and runs[c].notna().any()] + ["weight_norm"]
    out = []
    for (dataset, at), g in runs.groupby(["dataset", runs["at"].astype(float)], sort=True):
        g = g.assign(generalization_gap=g["test_loss"].astype(float) - g["train_loss"].astype(float),
                     method=[f"{o}/{s}/{m}" for o, s, m in zip(g["optimizer"], g["sam"], g["m"])])
        records = g.to_dict("records")
        for measure in measures_:
            for target in PREDICTED:
                tau = stats.kendall_tau(g[measure], g[target], n_boot=n_boot)
                if tau["n"] < 3:
                    continue
                gran = stats.granulated_tau(records, measure, target, AXES)
                out.append({"dataset": dataset_label(dataset), "milestone": f"loss={at:g}", "measure": measure,
                            "target": target, "tau": stats.value(tau["tau"]), "lo": stats.value(tau["lo"]),
                            "hi": stats.value(tau["hi"]), "p": stats.value(tau["p"]), "n_runs": tau["n"],
                            "granulated": {k: stats.value(v) for k, v in gran["per_axis"].items()},
                            "granulated_mean": stats.value(gran["mean"])})
    return out
