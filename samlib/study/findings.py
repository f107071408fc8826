"""What the study found, in numbers: the run selections, the statistics and the findings paragraph.

Selections of a `samlib.study.report.collect` table (`main_runs`, `matched_runs`, `reached_target`,
`family`, `measures_in`); measure labels (`measure_label`; the column vocabulary itself is
`samlib.study.layout`'s); `mean_ci` / `fmt_ci`, the t-based interval mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (s with
ddof=1; no interval for n < 2); `best_lr` and `cost_ratios` (shared with the figures);
`compute_findings` (findings.json), `findings_text` and `headline`. Diverged runs (non-finite loss)
never enter a mean. Nothing here draws or writes files.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from samlib.study.layout import OK, OPTIMIZER_LABELS, is_measure
from samlib.study.layout import present as _present

# --------------------------------------------------------------------------------------- constants
LR_NOTEBOOK = "lr_scaling"
SGD_FAMILY = ("sgd", "momentum")
ADAM_FAMILY = ("adam", "adamw")
FAMILIES = {"SGD": SGD_FAMILY, "Adam": ADAM_FAMILY}
MEASURE_LABELS = {
    "lambda_max": "Hessian λ_max",
    "hessian_trace": "Hessian trace",
    "sam_sharpness": "SAM sharpness f(w+ε̂)−f(w)",
}


# ============================================================================ names
def measure_label(key: str) -> str:
    match = re.fullmatch(r"keskar_([0-9.e+-]+)(?:_p(\d+))?", key)
    if match:
        return f"Keskar ε={float(match.group(1)):g}" + (f" (p={match.group(2)})" if match.group(2) else "")
    return MEASURE_LABELS.get(key, key)


def _measure_order(keys: Iterable[str]) -> list[str]:
    def rank(k: str) -> tuple:
        if k.startswith("keskar_"):
            match = re.match(r"keskar_([0-9.e+-]+)", k)
            return (0, -float(match.group(1)) if match else 0.0, k)
        return ({"lambda_max": 1, "hessian_trace": 2, "sam_sharpness": 3}.get(k, 4), 0.0, k)

    return sorted(set(keys), key=rank)


def measures_in(df: pd.DataFrame) -> list[str]:
    """The sharpness measure columns of a `collect` table that hold at least one number."""
    return [c for c in df.columns if is_measure(c) and df[c].notna().any()]


# ============================================================================ statistics
def mean_ci(values: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and t-based CI of the finite `values`: mean ± t_{(1+c)/2, n-1} · s / √n (s: ddof=1).

    Returns {"mean", "lo", "hi", "n"}; lo = hi = NaN when n < 2 (no interval from one value).
    """
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    mean = float(v.mean())
    if n < 2:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "n": 1}
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


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


# ============================================================================ selections
def main_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of the SAM-vs-base comparisons: step-budget (no loss target), not the lr sweep."""
    return df[(df["notebook"] != LR_NOTEBOOK) & df["target_loss"].isna()]


def matched_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs trained to a loss target (any notebook)."""
    return df[df["target_loss"].notna()]


def reached_target(df: pd.DataFrame) -> pd.DataFrame:
    """The loss-target runs that finished ok at their target: ``converged`` where the run recorded it,
    else (runs made before that key) a stop at the target."""
    runs = matched_runs(df)
    stopped = runs["stop_reason"] == "target_loss"
    if "converged" in runs:
        stopped = runs["converged"].where(runs["converged"].notna(), stopped)
    return runs[(runs["status"] == OK) & stopped.astype(bool)]


def family(df: pd.DataFrame, optimizers: Sequence[str]) -> pd.DataFrame:
    return df[df["optimizer"].isin(optimizers)]


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == OK]


def _method_order(methods: Iterable[str]) -> list[str]:
    def rank(m: str) -> tuple:
        base = m.split("+")[0]
        fam = list(OPTIMIZER_LABELS.values()).index(base) if base in OPTIMIZER_LABELS.values() else 9
        has_m = "(m=" in m
        mval = int(re.search(r"m=(\d+)", m).group(1)) if has_m else 0
        return (fam, "+" in m, -mval if has_m else -10**9, m)

    return sorted(set(methods), key=rank)


# ============================================================================ lr sweep and cost
def best_lr(df: pd.DataFrame) -> pd.DataFrame:
    """Per (batch size, method, seed): the effective lr with the lowest test loss in the lr sweep.

    Runs with the same effective lr (e.g. all rules at the base batch size) are averaged first.
    Diverged runs (NaN test loss) never win.
    """
    runs = _ok(df[df["notebook"] == LR_NOTEBOOK])
    runs = runs[np.isfinite(runs["test_loss"].astype(float))]
    if not len(runs):
        return pd.DataFrame(columns=["batch_size", "method", "seed", "lr", "test_loss"])
    keyed = runs.assign(lr_key=runs["lr"].astype(float).round(12))
    mean = keyed.groupby(["batch_size", "method", "seed", "lr_key"], as_index=False)["test_loss"].mean()
    idx = mean.groupby(["batch_size", "method", "seed"])["test_loss"].idxmin()
    out = mean.loc[idx].rename(columns={"lr_key": "lr"}).reset_index(drop=True)
    return out[["batch_size", "method", "seed", "lr", "test_loss"]]


def cost_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """SAM-type / base-optimizer seconds per epoch, paired by (batch size, seed, optimizer), per
    SAM method. Main (step-budget) runs only."""
    runs = _ok(main_runs(df))
    runs = runs[np.isfinite(runs["seconds_per_epoch"].astype(float))]
    base = runs[runs["sam"] == "none"]
    rows = []
    for _, r in runs[runs["sam"] != "none"].iterrows():
        match = base[(base["batch_size"] == r["batch_size"]) & (base["seed"] == r["seed"])
                     & (base["optimizer"] == r["optimizer"])]
        if len(match):
            rows.append({"batch_size": r["batch_size"], "seed": r["seed"], "method": r["method"],
                         "ratio": r["seconds_per_epoch"] / match["seconds_per_epoch"].mean()})
    return pd.DataFrame(rows, columns=["batch_size", "seed", "method", "ratio"])


# ============================================================================ findings
def _ci_of(df: pd.DataFrame, column: str) -> dict[str, float]:
    return mean_ci(df[column].astype(float)) if column in df else mean_ci([])


def _trend(df: pd.DataFrame, measure: str) -> dict[str, Any]:
    ok = _ok(df)
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


def compute_findings(df: pd.DataFrame) -> dict[str, Any]:
    """The numbers the findings paragraph states, each from the results table (see the module doc)."""
    out: dict[str, Any] = {"n_runs": int(len(df)), "status_counts": df["status"].value_counts().to_dict()}
    main = main_runs(df)
    out["stop_rules"] = sorted(set(main["stop_rule"].dropna()))
    out["matched_stop_rules"] = sorted(set(matched_runs(df)["stop_rule"].dropna()))
    measures = measures_in(df)
    # SAM vs base at the largest batch size (SGD family first, then Adam)
    comparisons = {}
    for fam_name, fam in (("SGD", SGD_FAMILY), ("Adam", ADAM_FAMILY)):
        runs = family(main, fam)
        sam = runs[runs["sam"] != "none"]
        if not len(sam) or not len(runs[runs["sam"] == "none"]):
            continue
        bs = int(sam["batch_size"].max())
        at = runs[runs["batch_size"] == bs]
        entry: dict[str, Any] = {"batch_size": bs, "methods": {}}
        for method in _method_order(at["method"]):
            rows = at[at["method"] == method]
            entry["methods"][method] = {
                "test_loss": _ci_of(_ok(rows), "test_loss"),
                "test_accuracy": _ci_of(_ok(rows), "test_accuracy"),
                "train_loss": _ci_of(_ok(rows), "train_loss"),
                **{m: _ci_of(_ok(rows), m) for m in measures},
                "runs": int(len(rows)),
                "not_ok": int((rows["status"] != OK).sum()),
            }
        comparisons[fam_name] = entry
    out["largest_batch"] = comparisons
    # sharpness trend vs batch size, per method of the main runs
    trends: dict[str, dict[str, Any]] = {}
    for method in _method_order(main["method"].dropna()):
        rows = main[main["method"] == method]
        t = {m: _trend(rows, m) for m in measures}
        t = {k: v for k, v in t.items() if v}
        if t:
            trends[method] = t
    out["sharpness_trend"] = trends
    # cost
    ratios = cost_ratios(df)
    cost = {}
    for method in _method_order(ratios["method"]) if len(ratios) else []:
        r = ratios[ratios["method"] == method]
        cost[method] = {"all": mean_ci(r["ratio"]), "largest_batch": int(r["batch_size"].max()),
                        "at_largest": mean_ci(r[r["batch_size"] == r["batch_size"].max()]["ratio"])}
    out["cost_ratio"] = cost
    # matched loss
    matched = matched_runs(df)
    reached = reached_target(df)
    m_out: dict[str, Any] = {"runs": int(len(matched)), "reached": int(len(reached))}
    if len(reached):
        bs = int(reached["batch_size"].max())
        at = reached[reached["batch_size"] == bs]
        m_out["batch_size"] = bs
        m_out["methods"] = {
            method: {"train_loss": _ci_of(at[at["method"] == method], "train_loss"),
                     "test_loss": _ci_of(at[at["method"] == method], "test_loss"),
                     **{m: _ci_of(at[at["method"] == method], m) for m in measures}}
            for method in _method_order(at["method"])
        }
    out["matched_loss"] = m_out
    # lr scaling
    best = best_lr(df)
    lr_out: dict[str, Any] = {}
    for method in _method_order(best["method"]) if len(best) else []:
        b = best[best["method"] == method]
        lr_out[method] = {int(bs): mean_ci(g["lr"]) for bs, g in b.groupby("batch_size")}
    out["best_lr"] = lr_out
    # problems
    bad = df[df["status"] != OK]
    out["not_ok"] = [
        {"notebook": r["notebook"], "batch_size": _int_or_none(r["batch_size"]), "run": r["run"],
         "status": r["status"], "error": r["error"] if _present(r["error"]) else None}
        for _, r in bad.iterrows()
    ]
    return out


def _int_or_none(v: Any) -> int | None:
    return int(v) if _present(v) else None


def findings_text(f: Mapping[str, Any]) -> list[str]:
    """The findings as sentences; every number comes from `compute_findings`."""
    lines: list[str] = []
    rules = f.get("stop_rules") or ["n/a"]
    counts = ", ".join(f"{v} {k}" for k, v in sorted(f.get("status_counts", {}).items()))
    lines.append(f"{f.get('n_runs', 0)} runs ({counts}). Stop rule of the SAM-vs-base comparisons: "
                 f"{'; '.join(rules)}" + (f"; matched-loss runs: {'; '.join(f['matched_stop_rules'])}"
                                           if f.get("matched_stop_rules") else "") + ".")
    for fam, entry in f.get("largest_batch", {}).items():
        methods = entry["methods"]
        parts = [f"{m}: test loss {fmt_ci(v['test_loss'])}, test accuracy {fmt_ci(v['test_accuracy'])}"
                 + (f" [{v['not_ok']} of {v['runs']} runs not ok]" if v["not_ok"] else "")
                 for m, v in methods.items()]
        base = next((m for m in methods if "+" not in m), None)
        verdicts = []
        if base is not None:
            b = methods[base]["test_loss"]
            for m, v in methods.items():
                if m == base or not v["test_loss"]["n"] or not b["n"]:
                    continue
                diff = v["test_loss"]["mean"] - b["mean"]
                overlap = _overlap(v["test_loss"], b)
                verdicts.append(f"{m} {'lower' if diff < 0 else 'higher'} than {base} by {abs(diff):.3g}"
                                + (" (CIs overlap)" if overlap else " (CIs do not overlap)" if overlap is False
                                   else " (no CI)"))
        lines.append(f"At the largest batch size {entry['batch_size']} ({fam}): " + "; ".join(parts) + "."
                     + (" Test loss: " + "; ".join(verdicts) + "." if verdicts else ""))
    for method, trend in f.get("sharpness_trend", {}).items():
        parts = []
        for measure, t in trend.items():
            parts.append(f"{measure_label(measure)} {t['small']['mean']:.3g} at batch {t['smallest_batch']} → "
                         f"{t['large']['mean']:.3g} at {t['largest_batch']} (×{t['ratio']:.2g}, Spearman ρ = "
                         f"{t['spearman_rho']:.2f} over {t['n_runs']} runs)")
        lines.append(f"Sharpness vs batch size, {method}: " + "; ".join(parts) + ".")
    for method, c in f.get("cost_ratio", {}).items():
        lines.append(f"Cost of {method} relative to its base optimizer (seconds per epoch): "
                     f"{fmt_ci(c['all'], 2)} over all batch sizes; {fmt_ci(c['at_largest'], 2)} at batch "
                     f"{c['largest_batch']}.")
    m = f.get("matched_loss", {})
    if m.get("runs"):
        text = f"Matched training loss: {m['reached']} of {m['runs']} loss-target runs reached their target"
        if m.get("methods"):
            parts = []
            for method, v in m["methods"].items():
                sharp = "; ".join(f"{measure_label(k)} {fmt_ci(v[k])}" for k in v
                                  if is_measure(k) and v[k]["n"])
                parts.append(f"{method}: train loss {fmt_ci(v['train_loss'])}, {sharp}")
            text += f"; at batch size {m['batch_size']}: " + " | ".join(parts)
        lines.append(text + ".")
    if f.get("best_lr"):
        parts = []
        for method, by_bs in f["best_lr"].items():
            parts.append(f"{method}: " + ", ".join(f"B={bs}: {v['mean']:.3g}" for bs, v in by_bs.items()))
        lines.append("Best effective learning rate by batch size (mean over seeds of each seed's best): "
                     + "; ".join(parts) + ".")
    bad = f.get("not_ok", [])
    if bad:
        lines.append(f"{len(bad)} run(s) did not finish ok and are listed below (never dropped silently): "
                     + ", ".join(f"{b['notebook']}/{b['batch_size']}/{b['run']} ({b['status']})" for b in bad[:12])
                     + (" …" if len(bad) > 12 else "") + ".")
    return lines


def headline(f: Mapping[str, Any], matched_figure: int | None = None) -> str:
    """A short paragraph of the main numbers (each computed in `compute_findings`); `matched_figure`:
    the number of the matched-loss figure, if the reader has it."""
    parts = []
    rules = f.get("stop_rules") or []
    if rules:
        parts.append(f"Step-budget comparisons use {', '.join(rules)} at every batch size"
                     + (f"; matched-loss runs use {', '.join(f['matched_stop_rules'])}" if f.get("matched_stop_rules")
                        else "") + ".")
    sgd = f.get("largest_batch", {}).get("SGD")
    if sgd:
        methods = sgd["methods"]
        base = methods.get("SGD") or next((v for m, v in methods.items() if "+" not in m), None)
        sam = methods.get("SGD+SAM") or next((v for m, v in methods.items() if "+" in m), None)
        if base and sam and base["test_loss"]["n"] and sam["test_loss"]["n"]:
            diff = sam["test_loss"]["mean"] - base["test_loss"]["mean"]
            overlap = _overlap(sam["test_loss"], base["test_loss"])
            verdict = {True: "the 95 % CIs overlap, so this study cannot tell them apart",
                       False: "the 95 % CIs do not overlap", None: "too few seeds for a CI"}[overlap]
            parts.append(
                f"At the largest batch size ({sgd['batch_size']}), SGD+SAM reaches test loss "
                f"{fmt_ci(sam['test_loss'])} vs SGD {fmt_ci(base['test_loss'])} ({'lower' if diff < 0 else 'higher'} "
                f"by {abs(diff):.3g}; {verdict}); test accuracy {sam['test_accuracy']['mean']:.3f} vs "
                f"{base['test_accuracy']['mean']:.3f}.")
    trend = f.get("sharpness_trend", {}).get("SGD", {})
    key = "lambda_max" if "lambda_max" in trend else next(iter(trend), None)
    if key:
        t = trend[key]
        parts.append(f"{measure_label(key)} of SGD minima goes from {t['small']['mean']:.3g} at batch "
                     f"{t['smallest_batch']} to {t['large']['mean']:.3g} at {t['largest_batch']} "
                     f"(×{t['ratio']:.2g}; Spearman ρ = {t['spearman_rho']:.2f} with batch size over "
                     f"{t['n_runs']} runs).")
    cost = f.get("cost_ratio", {}).get("SGD+SAM")
    if cost:
        parts.append(f"SAM costs {fmt_ci(cost['all'], 2)} times the seconds per epoch of SGD.")
    m = f.get("matched_loss", {})
    if m.get("runs"):
        parts.append(f"{m['reached']} of {m['runs']} loss-target runs reached their target"
                     + (f" (compared at batch size {m['batch_size']}"
                        + (f" in Fig. {matched_figure}" if matched_figure else "") + ")."
                        if m.get("methods") else "."))
    bad = f.get("not_ok", [])
    parts.append(f"{len(bad)} of {f.get('n_runs', 0)} runs did not finish ok." if bad else
                 f"All {f.get('n_runs', 0)} runs finished ok.")
    return " ".join(parts)


def _overlap(a: Mapping[str, float], b: Mapping[str, float]) -> bool | None:
    if not (np.isfinite(a["lo"]) and np.isfinite(b["lo"])):
        return None
    return bool(a["lo"] <= b["hi"] and b["lo"] <= a["hi"])
