"""findings.json, assembled: each part's numbers from `samlib.study.answer` (the answer) and
`samlib.study.stats` (every statistic), on the runs `samlib.study.selections` picks; its words are
`samlib.study.answer_text`'s. Nothing here computes a statistic, draws, or writes files.

`compute_findings` gives, in this order: ``answer_table`` (regime by regime, from the snapshots),
``seed_result``, ``sharpness_vs_generalization`` (Kendall's τ of each measure against test error and
the generalization gap over every run at each loss milestone) and ``curve`` (steps, epochs and gradient
evaluations to each loss milestone per method and batch size, the B_crit fit, B_simple), ``remedies``
(`samlib.study.remedies`: every tuned method at matched loss and cost against tuned SGD at the small
batch); the run counts and ``methods`` (each method's label → its fields: findings.json names
methods by label, as a reader sees them); ``gap_closure`` and ``answer`` (final weights); ``paired``;
``largest_batch``; ``sharpness_by_batch`` and ``sharpness_trend``; ``cost_ratio``; ``lr_scaling``;
``tuning`` (each tuned method and batch size: the lr grid's validation losses and the choice);
``not_compared`` and ``not_ok``. Diverged and collapsed runs never enter a mean.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from samlib.io import present
from samlib.study import answer, answer_text, curve, remedies, selections, tuning
from samlib.study.layout import OK, TARGET_NOT_REACHED
from samlib.study.selections import FAMILIES, FAMILY_LABELS, by_method, measures_in
from samlib.study.stats import mean_ci, trend

_MEANS = ("test_loss", "test_error", "test_accuracy", "train_loss", "val_loss")  #: per method at the largest batch


def _ci_of(df: pd.DataFrame, column: str) -> dict[str, float]:
    return mean_ci(df[column].astype(float)) if column in df else mean_ci([])


def _int_or_none(v: Any) -> int | None:
    return int(v) if present(v) else None


def largest_batch(df: pd.DataFrame, paired: pd.DataFrame, measures: list[str]) -> dict[str, Any]:
    """Each family at its largest SAM batch size: every method's means with t-CIs (and how many of its
    runs were not compared), and the paired differences of `paired` to the base optimizer there."""
    compared, main = selections.compared(df), selections.main_runs(df)
    out = {}
    for key in FAMILIES:
        runs, every = selections.in_family(compared, key), selections.in_family(main, key)
        sam = runs[selections.is_sam(runs)]
        if not len(sam) or not len(runs[selections.is_base(runs)]):
            continue
        bs = int(sam["batch_size"].max())
        at, every_at = runs[runs["batch_size"] == bs], every[every["batch_size"] == bs]
        entry: dict[str, Any] = {"batch_size": bs, "methods": {}, "paired": {}}
        for method, rows in by_method(at):
            n_all = int(len(selections.select(every_at, method)))
            entry["methods"][method.label] = {
                **{k: _ci_of(rows, k) for k in _MEANS},
                **{m: _ci_of(rows, m) for m in measures + ["grad_norm", "weight_norm"] if m in rows},
                "runs": n_all, "not_compared": n_all - int(len(rows)),
            }
        for _, r in paired[(paired["family"] == key) & (paired["batch_size"] == bs)].iterrows():
            entry["paired"].setdefault(r["method"], {})[r["metric"]] = {k: r[k] for k in ("mean", "lo", "hi", "n",
                                                                                       "significant")}
        out[FAMILY_LABELS[key]] = entry
    return out


def sharpness_by_batch(df: pd.DataFrame, measures: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``sharpness_by_batch``, ``sharpness_trend``): per method of the compared runs (minima at the same
    training loss), each measure's mean per batch size, and its `stats.trend` over batch size."""
    by_batch: dict[str, dict[str, Any]] = {}
    trends: dict[str, dict[str, Any]] = {}
    for method, rows in by_method(selections.compared(df)):
        by_batch[method.label] = {m: {int(bs): _ci_of(g, m) for bs, g in rows.groupby("batch_size")}
                                  for m in measures + ["test_loss", "train_loss"] if m in rows}
        found = {m: trend(rows["batch_size"], rows[m]) for m in measures}
        found = {k: v for k, v in found.items() if v}
        if found:
            trends[method.label] = found
    return by_batch, trends


def cost(df: pd.DataFrame) -> dict[str, Any]:
    """Per SAM method: its cost ratio to the base optimizer (`answer.cost_ratios`) over all batch sizes
    and at the largest one."""
    ratios, out = answer.cost_ratios(df), {}
    for method, r in by_method(ratios):
        out[method.label] = {"all": mean_ci(r["ratio"]), "largest_batch": int(r["batch_size"].max()),
                             "at_largest": mean_ci(r[r["batch_size"] == r["batch_size"].max()]["ratio"])}
    return out


def lr_scaling(df: pd.DataFrame) -> dict[str, Any]:
    """The lr sweep's per-seed choices on validation loss (`selections.lr_selection`), the slope of
    log(best lr) vs log(B) (`answer.lr_slopes`) and the mean best lr per batch size."""
    selection = selections.lr_selection(df)
    out: dict[str, Any] = {"selection": selection.to_dict("records"), "slopes": answer.lr_slopes(selection),
                           "best_lr": {}}
    for method, b in by_method(selection):
        out["best_lr"][method.label] = {int(bs): mean_ci(g["lr"]) for bs, g in b.groupby("batch_size")}
    return out


def left_out(df: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(``not_compared``, ``not_ok``): the main runs left out of every comparison, and every run not ok."""
    not_compared = [
        {"notebook": r["notebook"], "batch_size": _int_or_none(r["batch_size"]), "run": r["run"],
         "status": r["status"] if r["status"] != OK else TARGET_NOT_REACHED,
         "train_loss": r["train_loss"], "stop_rule": r.get("stop_rule")}
        for _, r in selections.not_compared(df).iterrows()
    ]
    not_ok = [
        {"notebook": r["notebook"], "batch_size": _int_or_none(r["batch_size"]), "run": r["run"],
         "status": r["status"], "error": r["error"] if present(r["error"]) else None}
        for _, r in df[df["status"] != OK].iterrows()
    ]
    return not_compared, not_ok


def compute_findings(df: pd.DataFrame, snapshots: pd.DataFrame | None = None,
                     planned_tuning: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The numbers the findings state (module doc), from the results table `df` and the snapshots
    table (the answer table is empty without snapshots; ``seed_result`` is then None). `planned_tuning`:
    the tuning entries the study's runs took their lrs from (`tuning.planned_with`), put after its own."""
    table = answer.answer_table(snapshots)
    out: dict[str, Any] = {"answer_table": table, "seed_result": answer_text.seed_result(table),
                           "sharpness_vs_generalization": answer.sharpness_vs_generalization(snapshots),
                           "curve": curve.curve_table(snapshots)}
    out["remedies"] = remedies.remedies_table(snapshots)  # every tuned method against tuned SGD at the small batch
    out.update(n_runs=int(len(df)), status_counts=df["status"].value_counts().to_dict())
    out["methods"] = {m.label: m.fields() for m in selections.method_order(df)}
    out["stop_rules"] = sorted(set(selections.main_runs(df)["stop_rule"].dropna()))
    measures = measures_in(df)
    out["gap_closure"] = answer.gap_closure(df)
    out["answer"] = answer_text.sentences(out["gap_closure"])
    paired = answer.paired(df, measures)
    out["paired"] = paired.to_dict("records")
    out["largest_batch"] = largest_batch(df, paired, measures)
    out["sharpness_by_batch"], out["sharpness_trend"] = sharpness_by_batch(df, measures)
    out["cost_ratio"] = cost(df)
    out["lr_scaling"] = lr_scaling(df)
    out["tuning"] = tuning.tuning_table(df) + list(planned_tuning or [])
    out["not_compared"], out["not_ok"] = left_out(df)
    return out

