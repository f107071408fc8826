"""The study's answer in words: every label, sentence and table cell that says `samlib.study.answer`'s
numbers, in one place.

- Labels: `regime` (a row's regime, 'SGD, scaled lr, at loss 0.03'), `figure_label` (the same for the
  headline figure's axis), `points` (an error in percentage points).
- The answer table as a reader sees it: `answer_cells` (`ANSWER_HEADER` columns), the one rendering
  shared by `answer_table_html` (the report) and `answer_table_markdown` (the docs and the README).
- Sentences: `sentences` (the gap closure on final weights), `seed_result` (where the seed study's
  result reproduces), `findings_text` (the report's Details bullets) and `headline` (its paragraph).

Every number said here was computed by `samlib.study.answer` or `samlib.study.findings`; nothing here
computes a statistic (`samlib.study.stats.fmt_ci` formats one).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from samlib import measures as registry
from samlib.milestones import EPOCHS
from samlib.study.answer import LAMBDA_KEY
from samlib.study.selections import FAMILIES, FAMILY_LABELS, LR_NOTEBOOK, PLAIN_SAM, Method
from samlib.study.stats import fmt_ci

METRIC_LABELS = {"test_loss": "test loss", "test_error": "test error", "train_loss": "train loss",
                 "val_loss": "validation loss"}


# ---------------------------------------------------------------------- labels
def regime(row: Mapping[str, Any], with_dataset: bool = False) -> str:
    """A reader's name for a row's regime: 'SGD, scaled lr, at loss 0.03' / 'Adam, same lr, after 10 epochs'."""
    n = int(row["at"]) if row["compare_at"] == EPOCHS else None
    where = f"at loss {row['at']:g}" if n is None else f"after {n} epoch{'' if n == 1 else 's'}"
    text = f"{FAMILY_LABELS.get(row['optimizer'], row['optimizer'])}, {row['lr_rule']} lr, {where}"
    return f"{row['dataset']}: {text}" if with_dataset else text


def points(x: float | None, signed: bool = True) -> str:
    """An error (a fraction) in percentage points: '+1.2', '0.8'; '–' for None."""
    if x is None:
        return "–"
    return f"{100 * x:+.2g}" if signed else f"{100 * x:.2g}"


def figure_label(row: Mapping[str, Any], with_dataset: bool) -> str:
    """A row's regime on the headline figure's axis: 'SGD · scaled lr · loss 0.03'."""
    n = int(row["at"]) if row["compare_at"] == EPOCHS else None
    milestone = f"loss {row['at']:g}" if n is None else f"{n} epoch{'' if n == 1 else 's'}"
    text = f"{FAMILY_LABELS.get(row['optimizer'], row['optimizer'])} · {row['lr_rule']} lr · {milestone}"
    return f"{row['dataset']} · {text}" if with_dataset else text


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


# ---------------------------------------------------------------------- the answer table
def _ci_cell(d: Any) -> str:
    """'+1.2 (−0.3 to +2.7)' in points; '+1.2 (1 seed)' without an interval; '–' without a value."""
    if not d or d.get("mean") is None:
        return "–"
    if d.get("lo") is None:
        return f"{points(d['mean'])} (no CI)"
    return f"{points(d['mean'])} ({points(d['lo'])} to {points(d['hi'])})"


def _num_pair(d: Any, a: str, b: str) -> str:
    x, y = (d or {}).get(a), (d or {}).get(b)
    return f"{'–' if x is None else f'{x:.3g}'} / {'–' if y is None else f'{y:.3g}'}"


ANSWER_HEADER = ["regime", "SB → LB", "seeds (missing)", "test error SB / LB / LB+SAM (%)", "gap LB − SB (points)",
                 "SAM effect LB+SAM − LB (points)", "gap closed by SAM", "no gap larger than (points)",
                 "λ_max LB / LB+SAM", "train loss SB / LB", "steps SB / LB"]


def answer_cells(table: list[dict[str, Any]]) -> list[list[str]]:
    """The answer table's cells as a reader sees them (`ANSWER_HEADER` columns), one list per row: the
    one rendering that the report's HTML table and the README's Markdown table share."""
    many = len({r["dataset"] for r in table}) > 1
    rows = []
    for r in table:
        err = r["test_error"]
        closure = r["closure"]
        closed = "–" if closure is None else (
            f"{100 * closure['estimate']:.0f} %" + ("" if closure["lo"] is None else
                                                    f" ({100 * closure['lo']:.0f} to {100 * closure['hi']:.0f} %)"))
        rows.append([regime(r, many), f"{r['small_batch']} → {r['large_batch']}",
                     f"{r['n_seeds']} ({r['n_missing']})",
                     " / ".join("–" if err[g] is None else f"{100 * err[g]:.2f}" for g in ("sb", "lb", "lb_sam")),
                     _ci_cell(r["gap"]), _ci_cell(r["sam_effect"]), closed,
                     "–" if r["detectable"] is None else f"±{points(r['detectable'], False)}",
                     _num_pair(r[LAMBDA_KEY], "lb", "lb_sam"), _num_pair(r["train_loss"], "sb", "lb"),
                     _num_pair(r["steps"], "sb", "lb")])
    return rows


def answer_table_html(table: list[dict[str, Any]]) -> str:
    """The answer table as an HTML ``<table class='answer'>`` (one row per regime; an empty table says
    why it is empty)."""
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in ANSWER_HEADER) + "</tr>"
    caption = ("<caption>One row per regime (data set, optimizer, lr rule: same lr at every batch size or scaled "
               "with it; compared at the same training loss or after the same epochs). SB/LB: the "
               "smallest/largest batch size; base optimizer vs plain SAM. Test "
               "errors are means over seeds; gap and SAM effect are paired by seed, mean and t-based 95 % CI, in "
               "percentage points; the gap closure (share of the gap SAM closes, bootstrap 95 % CI) only where "
               "the gap's CI excludes 0; 'no gap larger than' is the gap CI's half-width. Missing: a run that "
               "did not reach the milestone or did not finish ok (diverged, collapsed), counted, not compared."
               "</caption>")
    if not table:
        body = (f"<tr><td class='regime' colspan='{len(ANSWER_HEADER)}'>No milestone snapshots in this study (its "
                "runs predate them): the answer table is empty until the study is re-run.</td></tr>")
        return f"<table class='answer'>{caption}{head}{body}</table>"
    rows = ["<tr>" + "".join(f"<td class='regime'>{html.escape(c)}</td>" if i == 0 else f"<td>{html.escape(c)}</td>"
                             for i, c in enumerate(cells)) + "</tr>" for cells in answer_cells(table)]
    return f"<table class='answer'>{caption}{head}{''.join(rows)}</table>"


def answer_table_markdown(table: list[dict[str, Any]]) -> str:
    """The answer table as a Markdown table (the README quotes the committed studies' this way, and a
    test checks that it is what their findings.json gives)."""
    lines = ["| " + " | ".join(ANSWER_HEADER) + " |", "|" + "---|" * len(ANSWER_HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in answer_cells(table)]
    return "\n".join(lines)


# ---------------------------------------------------------------------- sentences
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


SEED_CLAIM = "the large batch worse, and SAM at the large batch worse or sharper"


def _pair(d: Mapping[str, Any], a: str, b: str, digits: int = 3) -> str:
    x, y = d.get(a), d.get(b)
    return "n/a" if x is None or y is None else f"{x:.{digits}g} vs {y:.{digits}g}"


def _why(row: Mapping[str, Any], with_dataset: bool) -> str:
    """One reproducing regime with the numbers that explain it, at the point measured."""
    pts = points
    gap, sam = row["gap"], row["sam_effect"]
    lam = row[LAMBDA_KEY]
    parts = [f"gap {pts(gap['mean'])} points (CI {pts(gap['lo'])} to {pts(gap['hi'])})",
             f"SAM {pts(sam['mean'])} points"]
    if lam.get("lb") is not None and lam.get("lb_sam") is not None:
        parts.append(f"λ_max {lam['lb_sam']:.3g} with SAM vs {lam['lb']:.3g}")
    parts.append(f"where batch {row['large_batch']} has training loss {_pair(row['train_loss'], 'lb', 'sb')} and "
                 f"gradient norm {_pair(row['grad_norm'], 'lb', 'sb')} against batch {row['small_batch']}")
    return f"{regime(row, with_dataset)} ({'; '.join(parts)})"


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
        widths = sorted(points(r["detectable"], False) for r in no_gap if r["detectable"] is not None)
        span = widths[0] if len(set(widths)) == 1 else f"{min(float(w) for w in widths):g}–{max(float(w) for w in widths):g}"
        rest.append(f"in {len(no_gap)} the large batch is not significantly worse"
                    + (f" (no gap larger than ±{span} points)" if widths else ""))
    if sam_fine:
        rest.append(f"in {len(sam_fine)} it is, but SAM makes it neither worse nor sharper")
    if unmeasured:
        rest.append(f"in {len(unmeasured)} fewer than two seeds have both batch sizes at the milestone")
    lead = " Elsewhere: " if yes else " Of them: "
    return text + (lead + "; ".join(rest) + "." if rest else "")


def _methods(f: Mapping[str, Any]) -> dict[str, Method]:
    """label -> `Method` of the findings' ``methods`` (the fields `compute_findings` recorded), in order."""
    found = {label: Method.of(**fields) for label, fields in f.get("methods", {}).items()}
    return dict(sorted(found.items(), key=lambda item: item[1].rank()))


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
    methods, lines = _methods(f), []
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
    rules = f.get("stop_rules") or ["n/a"]
    counts = ", ".join(f"{v} {k}" for k, v in sorted(f.get("status_counts", {}).items()))
    lines = [f"{f.get('n_runs', 0)} runs ({counts}). Stop rule of the comparisons: {'; '.join(rules)}."]
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


def findings_text(f: Mapping[str, Any]) -> list[str]:
    """The findings as sentences (the report's Details), the direct answer first; every number comes from
    `samlib.study.findings.compute_findings`."""
    return (list(f.get("answer", [])) + _largest_batch_lines(f) + _sharpness_lines(f) + _lr_and_cost_lines(f)
            + _run_lines(f))


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
