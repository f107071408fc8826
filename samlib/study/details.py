"""The report's Details: every finding of findings.json as a sentence (`findings_text`), in the order
of `samlib.study.findings.compute_findings`; the answer's own words are `samlib.study.answer_text`'s."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from samlib import measures as registry
from samlib.study.answer_text import METRIC_LABELS, methods_of
from samlib.study.remedies import remedies_lines
from samlib.study.selections import LR_NOTEBOOK
from samlib.study.stats import fmt_ci


def _diff(d: Mapping[str, Any], digits: int = 3) -> str:
    if not d or not d.get("n"):
        return "n/a"
    if d["n"] < 2 or not np.isfinite(d["lo"]):
        return f"{d['mean']:+.{digits}g} (n={d['n']}, no CI)"
    return f"{d['mean']:+.{digits}g} (95 % CI {d['lo']:+.{digits}g} to {d['hi']:+.{digits}g}, n={d['n']})"


def _largest_batch_lines(f: Mapping[str, Any]) -> list[str]:
    """Each family at its largest batch: the methods' means, then their paired differences to the base."""
    lines = []
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
    return lines


def _sharpness_lines(f: Mapping[str, Any]) -> list[str]:
    """The base optimizers' sharpness per batch size (the seed study's Fig. 2 and 4), then each trend."""
    methods, lines = methods_of(f), []
    for method, by in f.get("sharpness_by_batch", {}).items():
        if method not in methods or not methods[method].is_base:
            continue
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
    return lines


def _lr_and_cost_lines(f: Mapping[str, Any]) -> list[str]:
    """The lr sweep's slopes of log(best lr) vs log(B), then each SAM method's cost ratio."""
    lines, slopes = [], f.get("lr_scaling", {}).get("slopes", {})
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
    return lines


def _run_lines(f: Mapping[str, Any]) -> list[str]:
    """How many runs, how they stopped, and which were left out of the comparisons or the lr sweep."""
    rules = f.get("stop_rules")
    counts = ", ".join(f"{v} {k}" for k, v in sorted(f.get("status_counts", {}).items()))
    lines = [f"{f.get('n_runs', 0)} runs ({counts})." + (f" Stop rule of the comparisons: {'; '.join(rules)}."
                                                         if rules else "")]
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


def _predictor_lines(f: Mapping[str, Any]) -> list[str]:
    """Kendall's τ of each sharpness measure against test error, per data set and loss milestone."""
    by: dict[tuple, list[str]] = {}
    for r in f.get("sharpness_vs_generalization", []):
        if r["target"] != "test_error" or r["tau"] is None:
            continue
        ci = "" if r["lo"] is None else f" ({r['lo']:+.2f} to {r['hi']:+.2f})"
        by.setdefault((r["dataset"], r["milestone"], r["n_runs"]), []).append(
            f"{registry.label(r['measure']) if registry.is_measure(r['measure']) else 'weight norm'} τ = "
            f"{r['tau']:+.2f}{ci}")
    return [f"Sharpness as a predictor of test error, {ds} at {ms} ({n} runs of every method, batch size and lr "
            f"rule; Kendall's τ, bootstrap 95 % CI; τ > 0: sharper is worse): " + "; ".join(parts) + "."
            for (ds, ms, n), parts in by.items()]


def _tuning_lines(f: Mapping[str, Any]) -> list[str]:
    """Each tuned method's lr per batch size, and where the grid did not settle inside."""
    from samlib.study.selections import method_label

    by: dict[tuple, list[str]] = {}
    for t in f.get("tuning", []):
        c = t["choice"]
        how = "" if c["interior"] else " (bounded by a failed lr)" if c["bounded_by_failure"] else " (at the grid's edge)"
        lr = "every lr failed" if c["lr"] is None else f"{c['lr']:g}{how}"
        by.setdefault((t["dataset"], method_label(t["optimizer"], t["sam"], t["m"])), []).append(
            f"B={t['batch_size']}: {lr}")
    return [f"Tuned lr of {m} on {ds} (half-decade grid; the fastest to the tuning milestone of the lrs whose mean "
            f"validation loss there is within the seeds' noise of the lowest): " + "; ".join(parts) + "." for (ds, m), parts in by.items()]


def _curve_lines(f: Mapping[str, Any]) -> list[str]:
    """The critical batch size of each method's curve, where it was fitted."""
    lines = []
    for e in f.get("curve", []):
        fit = e.get("fit")
        if not fit or fit.get("b_crit") is None:
            continue
        ci = "CI unbounded" if not fit.get("bounded") else f"95 % CI {fit['lo']:.3g} to {fit['hi']:.3g}"
        sizes = ", ".join(str(p["batch_size"]) for p in e["points"])
        lines.append(f"Critical batch size of {e['method']} ({e['lr_rule']} lr, {e['dataset']}) to {e['milestone']}: "
                     f"B_crit = {fit['b_crit']:.3g} ({ci}; S_min = {fit['s_min']:.3g} steps; fitted to "
                     f"S(B) = S_min·(1 + B_crit/B) over {fit['n']} runs at batch {sizes}).")
    return lines


def findings_text(f: Mapping[str, Any]) -> list[str]:
    """The findings as sentences (the report's Details), the direct answer first; every number comes from
    `samlib.study.findings.compute_findings`."""
    return (list(f.get("answer", [])) + _curve_lines(f) + remedies_lines(f.get("remedies", [])) + _tuning_lines(f)
            + _predictor_lines(f) + _largest_batch_lines(f) + _sharpness_lines(f) + _lr_and_cost_lines(f) + _run_lines(f))
