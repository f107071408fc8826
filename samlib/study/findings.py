"""What the study found, in numbers: the statistics and the findings paragraph.

The runs each number is computed from are `samlib.study.selections`' (the compared runs: ok and at their
loss target; the lr sweep's per-seed choices; the methods, identified by their fields); measure labels
and order are `samlib.measures`'. Here: `mean_ci` / `fmt_ci`, the t-based interval mean ± t₀.₉₇₅,ₙ₋₁ ·
s/√n (s with ddof=1; no interval for n < 2); `measures_in` and `cost_ratios` (shared with the figures);
`compute_findings` (findings.json: the answer table of the snapshots first, `answer_table`), `findings_text`
(the bullets), `seed_result` (where the seed study's result reproduces, from the answer table) and
`headline` (the paragraph: `seed_result` and numbers the bullets do not repeat). Diverged and collapsed
runs never enter a mean. Nothing here draws or writes files.

findings.json names methods by their labels (they are what a reader sees); its ``methods`` maps each
label to the method's fields, and `findings_text` and `headline` read what a method is from there.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from samlib import measures as registry
from samlib.study import answer, selections
from samlib.study import answer_table as answers
from samlib.study.layout import OK, TARGET_NOT_REACHED
from samlib.study.layout import present as _present
from samlib.study.selections import (
    FAMILIES,
    FAMILY_LABELS,
    LR_NOTEBOOK,
    PLAIN_SAM,
    Method,
    by_method,
    comparable_runs,
)
from samlib.study.stats import mean_ci  # noqa: F401  (also part of this module's API)

# --------------------------------------------------------------------------------------- constants
METRIC_LABELS = {"test_loss": "test loss", "test_error": "test error", "train_loss": "train loss",
                 "val_loss": "validation loss"}


def measures_in(df: pd.DataFrame) -> list[str]:
    """The sharpness measure columns of a `collect` table that hold at least one number."""
    return [c for c in df.columns if registry.is_measure(c) and df[c].notna().any()]


# ============================================================================ statistics
def fmt_ci(ci: Mapping[str, float], digits: int = 3) -> str:
    """'0.123 (95 % CI 0.101–0.145, n=3)'; 'n/a' when there is no value."""
    if not ci or ci.get("n", 0) == 0 or not np.isfinite(ci["mean"]):
        return "n/a"
    text = f"{ci['mean']:.{digits}g}"
    if ci["n"] >= 2 and np.isfinite(ci["lo"]):
        text += f" (95 % CI {ci['lo']:.{digits}g}–{ci['hi']:.{digits}g}, n={ci['n']})"
    else:
        text += f" (n={ci['n']}, no CI)"
    return text


# ============================================================================ cost
def cost_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """SAM-type / base-optimizer seconds per epoch (steady-state seconds per step × steps per epoch),
    paired by (batch size, seed, optimizer), per SAM method; compared main runs only. One row per
    pair: batch size, seed, the method's label and fields, the ratio."""
    runs = comparable_runs(selections.main_runs(df))
    runs = runs[np.isfinite(runs["seconds_per_epoch"].astype(float))]
    base = runs[selections.is_base(runs)]
    rows = []
    for method, of_method in by_method(runs[selections.is_sam(runs)]):
        for _, r in of_method.iterrows():
            match = base[(base["batch_size"] == r["batch_size"]) & (base["seed"] == r["seed"])
                         & (base["optimizer"] == method.optimizer)]
            if len(match):
                rows.append({"batch_size": r["batch_size"], "seed": r["seed"], "method": method.label,
                             **method.fields(), "ratio": r["seconds_per_epoch"] / match["seconds_per_epoch"].mean()})
    return pd.DataFrame(rows, columns=["batch_size", "seed", "method", "optimizer", "sam", "m", "ratio"])


# ============================================================================ findings
def _ci_of(df: pd.DataFrame, column: str) -> dict[str, float]:
    return mean_ci(df[column].astype(float)) if column in df else mean_ci([])


def _trend(df: pd.DataFrame, measure: str) -> dict[str, Any]:
    ok = comparable_runs(df)
    ok = ok[np.isfinite(ok[measure].astype(float))] if measure in ok else ok.iloc[0:0]
    if ok["batch_size"].nunique() < 2:
        return {}
    lo_bs, hi_bs = int(ok["batch_size"].min()), int(ok["batch_size"].max())
    small = mean_ci(ok[ok["batch_size"] == lo_bs][measure].astype(float))
    large = mean_ci(ok[ok["batch_size"] == hi_bs][measure].astype(float))
    rho, p = stats.spearmanr(ok["batch_size"].astype(float), ok[measure].astype(float))
    return {"smallest_batch": lo_bs, "largest_batch": hi_bs, "small": small, "large": large,
            "ratio": large["mean"] / small["mean"] if small["mean"] else math.nan,
            "spearman_rho": float(rho), "spearman_p": float(p), "n_runs": int(len(ok))}


def compute_findings(df: pd.DataFrame, snapshots: pd.DataFrame | None = None) -> dict[str, Any]:
    """The numbers the findings state, each from the results table (see the module doc), and first
    ``answer_table``: the answer regime by regime from the snapshots table (`answer_table.answer_table`;
    empty without snapshots), with ``seed_result``, the sentence saying where the seed study's result
    reproduces (`seed_result`; None without rows).

    Comparisons use `selections.compared` runs only: ok and at their loss target. ``methods`` maps
    each method's label to its fields (optimizer, sam, m). ``gap_closure`` is the
    direct answer (`answer.gap_closure`); ``paired`` holds every SAM-type method minus its base optimizer
    at each batch size over shared seeds; ``sharpness_by_batch`` the measures per batch size (the seed
    study's Fig. 2 and 4, here at a matched training loss); ``lr_scaling`` the sweep's validation-chosen
    lrs and the slope of log(best lr) vs log(B); ``not_compared`` the runs left out, with why.
    """
    table = answers.answer_table(snapshots)
    out: dict[str, Any] = {"answer_table": table, "seed_result": seed_result(table)}
    out.update(n_runs=int(len(df)), status_counts=df["status"].value_counts().to_dict())
    out["methods"] = {m.label: m.fields() for m in selections.method_order(df)}
    main = selections.main_runs(df)
    out["stop_rules"] = sorted(set(main["stop_rule"].dropna()))
    measures = measures_in(df)
    gaps = answer.gap_closure(df)
    out["gap_closure"] = gaps
    out["answer"] = answer.sentences(gaps)
    compared = selections.compared(df)
    paired = answer.paired(df, measures)
    out["paired"] = paired.to_dict("records")
    # each family at its largest batch: means with t-CIs, and the paired differences to the base
    comparisons = {}
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
                **{k: _ci_of(rows, k) for k in ("test_loss", "test_error", "test_accuracy", "train_loss", "val_loss")},
                **{m: _ci_of(rows, m) for m in measures + ["grad_norm", "weight_norm"] if m in rows},
                "runs": n_all, "not_compared": n_all - int(len(rows)),
            }
        for _, r in paired[(paired["family"] == key) & (paired["batch_size"] == bs)].iterrows():
            entry["paired"].setdefault(r["method"], {})[r["metric"]] = {k: r[k] for k in ("mean", "lo", "hi", "n",
                                                                                       "significant")}
        comparisons[FAMILY_LABELS[key]] = entry
    out["largest_batch"] = comparisons
    # sharpness per batch size and its trend, per method (compared runs: minima at the same train loss)
    by_batch: dict[str, dict[str, Any]] = {}
    trends: dict[str, dict[str, Any]] = {}
    for method, rows in by_method(compared):
        by_batch[method.label] = {m: {int(bs): _ci_of(g, m) for bs, g in rows.groupby("batch_size")}
                                  for m in measures + ["test_loss", "train_loss"] if m in rows}
        t = {m: _trend(rows, m) for m in measures}
        t = {k: v for k, v in t.items() if v}
        if t:
            trends[method.label] = t
    out["sharpness_by_batch"] = by_batch
    out["sharpness_trend"] = trends
    # cost
    ratios = cost_ratios(df)
    cost = {}
    for method, r in by_method(ratios):
        cost[method.label] = {"all": mean_ci(r["ratio"]), "largest_batch": int(r["batch_size"].max()),
                              "at_largest": mean_ci(r[r["batch_size"] == r["batch_size"].max()]["ratio"])}
    out["cost_ratio"] = cost
    # lr scaling: chosen per seed on validation loss
    selection = selections.lr_selection(df)
    lr_out: dict[str, Any] = {"selection": selection.to_dict("records"), "slopes": answer.lr_slopes(selection),
                              "best_lr": {}}
    for method, b in by_method(selection):
        lr_out["best_lr"][method.label] = {int(bs): mean_ci(g["lr"]) for bs, g in b.groupby("batch_size")}
    out["lr_scaling"] = lr_out
    # what is not compared, and why
    left = selections.not_compared(df)
    out["not_compared"] = [
        {"notebook": r["notebook"], "batch_size": _int_or_none(r["batch_size"]), "run": r["run"],
         "status": r["status"] if r["status"] != OK else TARGET_NOT_REACHED,
         "train_loss": r["train_loss"], "target_loss": r.get("target_loss")}
        for _, r in left.iterrows()
    ]
    bad = df[df["status"] != OK]
    out["not_ok"] = [
        {"notebook": r["notebook"], "batch_size": _int_or_none(r["batch_size"]), "run": r["run"],
         "status": r["status"], "error": r["error"] if _present(r["error"]) else None}
        for _, r in bad.iterrows()
    ]
    return out


def _methods(f: Mapping[str, Any]) -> dict[str, Method]:
    """label -> `Method` of the findings' ``methods`` (the fields `compute_findings` recorded), in order."""
    found = {label: Method.of(**fields) for label, fields in f.get("methods", {}).items()}
    return dict(sorted(found.items(), key=lambda item: item[1].rank()))


def _int_or_none(v: Any) -> int | None:
    return int(v) if _present(v) else None


def _diff(d: Mapping[str, Any], digits: int = 3) -> str:
    if not d or not d.get("n"):
        return "n/a"
    if d["n"] < 2 or not np.isfinite(d["lo"]):
        return f"{d['mean']:+.{digits}g} (n={d['n']}, no CI)"
    return f"{d['mean']:+.{digits}g} (95 % CI {d['lo']:+.{digits}g} to {d['hi']:+.{digits}g}, n={d['n']})"


def findings_text(f: Mapping[str, Any]) -> list[str]:
    """The findings as sentences, the direct answer first; every number comes from `compute_findings`."""
    methods = _methods(f)
    lines: list[str] = list(f.get("answer", []))
    for fam, entry in f.get("largest_batch", {}).items():
        means = [f"{m}: test loss {fmt_ci(v['test_loss'])}, test error {fmt_ci(v['test_error'])}"
                 + (f" [{v['not_compared']} of {v['runs']} runs not compared]" if v.get("not_compared") else "")
                 for m, v in entry["methods"].items()]
        lines.append(f"At the largest batch size {entry['batch_size']} ({fam} family, runs at the target): "
                     + "; ".join(means) + ".")
        parts = []
        for method, diffs in entry.get("paired", {}).items():
            items = [f"{METRIC_LABELS.get(k, registry.label(k))} {_diff(v)}" for k, v in diffs.items()
                     if k in METRIC_LABELS or registry.is_measure(k)]
            parts.append(f"{method} − {fam}: " + "; ".join(items))
        if parts:
            lines.append(f"Paired differences at batch {entry['batch_size']} ({fam} family, same seeds, t-based "
                         f"95 % CI): " + " | ".join(parts) + ".")
    for method, by in f.get("sharpness_by_batch", {}).items():
        if method not in methods or not methods[method].is_base:
            continue  # the base optimizers' sharpness vs batch size (the seed study's Fig. 2 and 4)
        parts = [f"{registry.label(k)} " + ", ".join(f"B={bs}: {fmt_ci(ci)}" for bs, ci in v.items())
                 for k, v in by.items() if registry.is_measure(k)]
        if parts:
            lines.append(f"Sharpness of {method} minima vs batch size (all at the same training loss): "
                         + "; ".join(parts) + ".")
    for method, trend in f.get("sharpness_trend", {}).items():
        parts = [f"{registry.label(k)} ×{t['ratio']:.2g} from batch {t['smallest_batch']} to {t['largest_batch']} "
                 f"(Spearman ρ = {t['spearman_rho']:.2f}, p = {t['spearman_p']:.2g}, {t['n_runs']} runs)"
                 for k, t in trend.items()]
        lines.append(f"Trend with batch size, {method}: " + "; ".join(parts) + ".")
    slopes = f.get("lr_scaling", {}).get("slopes", {})
    if slopes:
        parts = []
        for method, s in slopes.items():
            ci = (f"95 % CI {s['lo']:.2f} to {s['hi']:.2f}" if np.isfinite(s.get("lo", math.nan)) else "no CI")
            rules = ", ".join(s["rules_in_ci"]) or "none of none/sqrt/linear"
            parts.append(f"{method}: slope {s['slope']:.2f} ({ci}, {s['n']} choices; within the CI: {rules}"
                         + (f"; {s['at_edge']} choices at the sweep's edge" if s.get("at_edge") else "") + ")")
        lines.append("Learning-rate scaling: best lr chosen per seed on validation loss, log(best lr) fitted "
                     "against log(batch size): " + "; ".join(parts) + ".")
    for method, c in f.get("cost_ratio", {}).items():
        lines.append(f"Cost of {method} relative to its base optimizer (steady-state seconds per step, paired by "
                     f"seed): {fmt_ci(c['all'], 2)} over all batch sizes; {fmt_ci(c['at_largest'], 2)} at batch "
                     f"{c['largest_batch']}.")
    rules = f.get("stop_rules") or ["n/a"]
    counts = ", ".join(f"{v} {k}" for k, v in sorted(f.get("status_counts", {}).items()))
    lines.append(f"{f.get('n_runs', 0)} runs ({counts}). Stop rule of the comparisons: {'; '.join(rules)}.")
    left = f.get("not_compared", [])
    if left:
        lines.append(f"{len(left)} run(s) of the comparisons are shown but not compared (not ok, or stopped at "
                     "their cap above the target): "
                     + ", ".join(f"{b['notebook']}/{b['batch_size']}/{b['run']} ({b['status']})" for b in left[:12])
                     + (" …" if len(left) > 12 else "") + ".")
    bad = [b for b in f.get("not_ok", []) if b["notebook"] == LR_NOTEBOOK]
    if bad:
        lines.append(f"{len(bad)} run(s) of the lr sweep did not finish ok (an lr that diverges or collapses is a "
                     "result): "
                     + ", ".join(f"{b['batch_size']}/{b['run']} ({b['status']})" for b in bad[:12])
                     + (" …" if len(bad) > 12 else "") + ".")
    return lines


# ============================================================================ the seed study's result
SEED_CLAIM = "the large batch worse, and SAM at the large batch worse or sharper"


def _pair(d: Mapping[str, Any], a: str, b: str, digits: int = 3) -> str:
    x, y = d.get(a), d.get(b)
    return "n/a" if x is None or y is None else f"{x:.{digits}g} vs {y:.{digits}g}"


def _why(row: Mapping[str, Any], with_dataset: bool) -> str:
    """One reproducing regime with the numbers that explain it, at the point measured."""
    pts = answers.points
    gap, sam = row["gap"], row["sam_effect"]
    lam = row[answers.LAMBDA_KEY]
    parts = [f"gap {pts(gap['mean'])} points (CI {pts(gap['lo'])} to {pts(gap['hi'])})",
             f"SAM {pts(sam['mean'])} points"]
    if lam.get("lb") is not None and lam.get("lb_sam") is not None:
        parts.append(f"λ_max {lam['lb_sam']:.3g} with SAM vs {lam['lb']:.3g}")
    parts.append(f"where batch {row['large_batch']} has training loss {_pair(row['train_loss'], 'lb', 'sb')} and "
                 f"gradient norm {_pair(row['grad_norm'], 'lb', 'sb')} against batch {row['small_batch']}")
    return f"{answers.regime(row, with_dataset)} ({'; '.join(parts)})"


def seed_result(table: list[Mapping[str, Any]]) -> str | None:
    """Where the seed study's result (`SEED_CLAIM`) reproduces: the rows of the answer table whose
    ``seed_claims`` say so, each with its gap, SAM effect, λ_max and the training loss and gradient norm
    of the large batch against the small one at that point (why it is worse there); then why it does
    not elsewhere (no significant gap, and how large a gap could hide; or SAM neither worse nor
    sharper). None for an empty table."""
    if not table:
        return None
    many = len({r["dataset"] for r in table}) > 1
    yes = [r for r in table if r["seed_claims"]["reproduces"]]
    head = f"The seed study's result ({SEED_CLAIM})"
    if yes:
        text = (f"{head} reproduces in {len(yes)} of {len(table)} regimes: "
                + "; ".join(_why(r, many) for r in yes[:3]) + ("; …" if len(yes) > 3 else "") + ".")
    else:
        text = f"{head} reproduces in none of the {len(table)} regimes."
    unmeasured = [r for r in table if r["n_seeds"] < 2]
    no_gap = [r for r in table if r["n_seeds"] >= 2 and not r["seed_claims"]["large_batch_worse"]]
    sam_fine = [r for r in table if r["seed_claims"]["large_batch_worse"] and not r["seed_claims"]["reproduces"]]
    rest = []
    if no_gap:
        widths = sorted(answers.points(r["detectable"], False) for r in no_gap if r["detectable"] is not None)
        span = widths[0] if len(set(widths)) == 1 else f"{min(float(w) for w in widths):g}–{max(float(w) for w in widths):g}"
        rest.append(f"in {len(no_gap)} the large batch is not significantly worse"
                    + (f" (no gap larger than ±{span} points)" if widths else ""))
    if sam_fine:
        rest.append(f"in {len(sam_fine)} it is, but SAM makes it neither worse nor sharper")
    if unmeasured:
        rest.append(f"in {len(unmeasured)} fewer than two seeds have both batch sizes at the milestone")
    lead = " Elsewhere: " if yes else " Of them: "
    return text + (lead + "; ".join(rest) + "." if rest else "")


def headline(f: Mapping[str, Any], matched_figure: int | None = None) -> str:
    """The report's paragraph: where the seed study's result reproduces (``seed_result``; or that the
    study has no snapshots, so no answer table), then a few main numbers (each computed in
    `compute_findings`) in words the findings' bullets (`findings_text`) do not repeat;
    `matched_figure`: the number of the matched-loss figure, if the reader has it."""
    parts = []
    if f.get("seed_result"):
        parts.append(f["seed_result"])
    elif "answer_table" in f and not f["answer_table"]:
        parts.append("This study's runs have no milestone snapshots (they predate them), so its answer table is "
                     "empty until it is re-run; the details below compare each run where it stopped.")
    missing = sum(r.get("n_missing", 0) for r in f.get("answer_table", []))
    if missing:
        parts.append(f"{missing} snapshot(s) of the table's runs are missing (the run did not reach the milestone "
                     "or did not finish ok) and are counted, not compared.")
    trends = f.get("sharpness_trend", {})
    # the SGD-family base optimizer the study trained (plain or momentum SGD), preferring one with a trend
    bases = [m for m in _methods(f).values() if m.is_base and m.optimizer in FAMILIES["sgd"]]
    base = next((m for m in bases if m.label in trends), bases[0] if bases else None)
    sgd = base.label if base else ""
    trend = trends.get(sgd, {})
    key = registry.headline_key(list(trend))
    if key:
        t = trend[key]
        parts.append(f"{registry.label(key)} of {sgd} minima, all at the same training loss, goes from "
                     f"{t['small']['mean']:.3g} at batch {t['smallest_batch']} to {t['large']['mean']:.3g} at "
                     f"{t['largest_batch']} (×{t['ratio']:.2g}; Spearman ρ = {t['spearman_rho']:.2f} over "
                     f"{t['n_runs']} runs).")
    cost = f.get("cost_ratio", {}).get(Method(base.optimizer, PLAIN_SAM).label) if base else None
    if cost:
        parts.append(f"SAM costs {fmt_ci(cost['all'], 2)} times {sgd}'s seconds per step.")
    left = f.get("not_compared", [])
    parts.append(f"{len(left)} run(s) of the comparisons did not reach their target or did not finish and are "
                 "listed, not compared" + (f" (Fig. {matched_figure} shows the training loss each reached)."
                                           if matched_figure else ".") if left else
                 "Every run of the comparisons reached its target.")
    return " ".join(parts)
