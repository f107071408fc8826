"""The study's answer in words: every label, sentence and table cell that says `samlib.study.answer`'s
numbers, in one place.

- Labels: `regime` (a row's regime, 'SGD, scaled lr, at loss 0.03'), `figure_label` (the same for the
  headline figure's axis), `points` (an error in percentage points).
- The answer table as a reader sees it: `answer_cells` (`ANSWER_HEADER` columns), the one rendering
  shared by `answer_table_html` (the report), `answer_table_markdown` (the docs) and
  `answer_rows_markdown` (the README's compact table: one row per regime).
- Sentences: `sentences` (the gap closure on final weights), `seed_result` (where the seed study's
  result reproduces) and `headline` (the report's paragraph); the Details bullets are
  `samlib.study.details`'.

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
from samlib.milestones import EPOCHS, LOSS
from samlib.study.answer import LAMBDA_KEY
from samlib.study.selections import FAMILIES, FAMILY_LABELS, PLAIN_SAM, Method
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
                 "gap, CI over seeds × test images", "SAM effect LB+SAM − LB (points)", "gap closed by SAM", "no gap larger than (points)",
                 "gap p (Holm)", "detectable at 80 % power (points)", "ln L_LB/L_SB", "λ_max LB / LB+SAM",
                 "train loss SB / LB", "steps SB / LB"]


def _p(p: float | None) -> str:
    """A p-value: '0.016', '<0.001'; '–' for None."""
    return "–" if p is None else "<0.001" if p < 0.001 else f"{p:.2g}"


def _signed(x: float | None) -> str:
    return "–" if x is None else f"{x:+.3f}"


def _closure(c: Mapping[str, Any] | None) -> str:
    """'94 % (60 to 130 %)'; 'unbounded' CI where Fieller's set is not an interval; '–' without one."""
    if c is None or c["estimate"] is None:
        return "–"
    ci = "CI unbounded" if c["lo"] is None else f"{100 * c['lo']:.0f} to {100 * c['hi']:.0f} %"
    return f"{100 * c['estimate']:.0f} % ({ci})"


def answer_cells(table: list[dict[str, Any]]) -> list[list[str]]:
    """The answer table's cells as a reader sees them (`ANSWER_HEADER` columns), one list per row: the
    one rendering that the report's HTML table and the README's Markdown table share."""
    many = len({r["dataset"] for r in table}) > 1
    rows = []
    for r in table:
        err = r["test_error"]
        rows.append([regime(r, many), f"{r['small_batch']} → {r['large_batch']}",
                     f"{r['n_seeds']} ({r['n_missing']})",
                     " / ".join("–" if err[g] is None else f"{100 * err[g]:.2f}" for g in ("sb", "lb", "lb_sam")),
                     _ci_cell(r["gap"]), _ci_cell(r.get("gap_two_way")), _ci_cell(r["sam_effect"]),
                     _closure(r["closure"]),
                     "–" if r["upper"] is None else points(r["upper"]), _p(r["holm_p"]),
                     "–" if r["mde"] is None else points(r["mde"], False), _signed(r["mismatch"]),
                     _num_pair(r[LAMBDA_KEY], "lb", "lb_sam"), _num_pair(r["train_loss"], "sb", "lb"),
                     _num_pair(r["steps"], "sb", "lb")])
    return rows


TUNING_ONLY = ("This is a tuning study: it compares no methods, it chooses each method's learning rate at each "
               "batch size on the validation split (the details list every choice), for a study that compares "
               "them.")


def answer_table_html(table: list[dict[str, Any]], tuning_only: bool = False) -> str:
    """The answer table as an HTML ``<table class='answer'>`` (one row per regime; an empty table says
    why it is empty)."""
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in ANSWER_HEADER) + "</tr>"
    caption = ("<caption>One row per regime (data set, optimizer, lr rule: same lr at every batch size or scaled "
               "with it; compared at the same training loss or after the same epochs). SB/LB: the "
               "smallest/largest batch size; base optimizer vs plain SAM. Test "
               "errors are means over seeds; gap and SAM effect are paired by seed, mean and t-based 95 % CI, in "
               "percentage points (the t-CIs cover the seeds; where the runs recorded their test predictions a second "
               "gap CI covers seeds × test images, a two-way bootstrap, and bounds 'no gap larger than'); the gap closure "
               "(share of the gap SAM closes, Fieller 95 % CI) only where both the gap and SAM's effect are "
               "significant; 'no gap larger than' is the gap CI's upper limit; the gap's p is adjusted by Holm's "
               "method over the data set's rows; 'detectable' is the gap a paired t-test finds at 80 % power with "
               "these seeds; ln L_LB/L_SB: how far apart the compared training losses are. Missing: a run that "
               "did not reach the milestone or did not finish ok (diverged, collapsed), counted, not compared."
               "</caption>")
    if not table:
        why = TUNING_ONLY if tuning_only else ("No milestone snapshots in this study (its runs predate them): the "
                                               "answer table is empty until the study is re-run.")
        body = f"<tr><td class='regime' colspan='{len(ANSWER_HEADER)}'>{html.escape(why)}</td></tr>"
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


#: a compact column's name -> the full answer table's column (`ANSWER_HEADER`) whose cell it quotes
ANSWER_COLUMNS = {"batches": "SB → LB", "seeds": "seeds (missing)", "test_error": "test error SB / LB / LB+SAM (%)",
                  "gap": "gap LB − SB (points)", "gap_two_way": "gap, CI over seeds × test images",
                  "sam_effect": "SAM effect LB+SAM − LB (points)",
                  "closure": "gap closed by SAM", "upper": "no gap larger than (points)",
                  "holm_p": "gap p (Holm)", "mde": "detectable at 80 % power (points)", "mismatch": "ln L_LB/L_SB",
                  LAMBDA_KEY: "λ_max LB / LB+SAM", "train_loss": "train loss SB / LB", "steps": "steps SB / LB"}
#: its header, short
ANSWER_LABELS = {"batches": "SB → LB", "seeds": "seeds (missing)", "test_error": "test error SB / LB / LB+SAM",
                 "gap": "gap", "gap_two_way": "gap (seeds × images CI)", "sam_effect": "SAM effect", "closure": "closed by SAM",
                 "upper": "no gap larger than", "holm_p": "gap p (Holm)", "mde": "detectable", "mismatch": "ln L_LB/L_SB",
                 LAMBDA_KEY: "λ_max LB / LB+SAM",
                 "train_loss": "train loss SB / LB", "steps": "steps SB / LB"}
ANSWER_UNITS = {"test_error": " (%)", "gap": " (points)", "gap_two_way": " (points)", "sam_effect": " (points)", "upper": " (points)",
                "mde": " (points)"}
KINDS = {EPOCHS: "same epochs", LOSS: "same loss"}  #: a milestone kind, in a header


def answer_rows_markdown(table: list[dict], columns: list[str]) -> str:
    """A compact answer table as Markdown: one row per regime (data set, optimizer, lr rule) and pair of
    batch sizes of the answer `table`, in its order, one column per entry of `columns`:

    - ``regime``: 'MNIST (mnist5k): SGD, same lr' (', batch 1024 vs 32' added where the regime compares
      several large batches with its small one, as the ``tuned`` rule does);
    - ``at@KIND`` (KIND ``epochs`` or ``loss``): the regime's last milestone of that kind, the one
      quoted by the columns ``NAME@KIND`` (the most epochs; the lowest loss, nearest to interpolation:
      a table lists a regime's milestones in the order training reaches them);
    - ``NAME@KIND``: the full answer table's cell (`answer_cells`) of column NAME (`ANSWER_COLUMNS`:
      ``gap``, ``sam_effect``, ``closure``, ``upper``, ``holm_p``, ...) at that milestone.

    A regime without a milestone of that kind gets '–'."""
    regimes: dict[tuple, dict[str, tuple[dict, list[str]]]] = {}
    for row, cells in zip(table, answer_cells(table)):
        key = (row["dataset"], row["optimizer"], row["lr_rule"], row["small_batch"], row["large_batch"])
        regimes.setdefault(key, {})[row["compare_at"]] = (row, cells)  # the last milestone of a kind wins
    sizes: dict[tuple, int] = {}  # a regime compared at several large batches names each row's
    for key in regimes:
        sizes[key[:3]] = sizes.get(key[:3], 0) + 1
    header, rows = [], [[] for _ in regimes]
    for column in columns:
        name, _, kind = column.partition("@")
        if name == "regime" and not kind:
            header.append("regime")
            for out, (dataset, family, rule, small, large) in zip(rows, regimes):
                batches = f", batch {large:g} vs {small:g}" if sizes[(dataset, family, rule)] > 1 else ""
                out.append(f"{dataset}: {FAMILY_LABELS[family]}, {rule} lr{batches}")
            continue
        assert kind in KINDS, f"answer-rows column {column!r}: NAME@KIND with KIND one of {', '.join(KINDS)}"
        assert name == "at" or name in ANSWER_COLUMNS, \
            f"answer-rows column {column!r}: NAME one of regime, at, {', '.join(ANSWER_COLUMNS)}"
        header.append(("epochs" if kind == EPOCHS else "loss") if name == "at" else
                      f"{ANSWER_LABELS[name]}, {KINDS[kind]}{ANSWER_UNITS.get(name, '')}")
        for out, milestones in zip(rows, regimes.values()):
            if kind not in milestones:
                out.append("–")
                continue
            row, cells = milestones[kind]
            out.append(f"{row['at']:g}" if name == "at" else cells[ANSWER_HEADER.index(ANSWER_COLUMNS[name])])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in out) + " |" for out in rows]
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
        bounds = sorted(100 * r["upper"] for r in no_gap if r["upper"] is not None)
        span = (f"{bounds[0]:+.2g}" if len(set(bounds)) == 1 else f"{bounds[0]:+.2g} to {bounds[-1]:+.2g}") if bounds else ""
        rest.append(f"in {len(no_gap)} the large batch is not significantly worse after Holm's correction"
                    + (f" (the data exclude gaps larger than {span} points, the CIs' upper limits)" if bounds else ""))
    if sam_fine:
        rest.append(f"in {len(sam_fine)} it is, but SAM makes it neither worse nor sharper")
    if unmeasured:
        rest.append(f"in {len(unmeasured)} fewer than two seeds have both batch sizes at the milestone")
    lead = " Elsewhere: " if yes else " Of them: "
    return text + (lead + "; ".join(rest) + "." if rest else "")


def methods_of(f: Mapping[str, Any]) -> dict[str, Method]:
    """label -> `Method` of the findings' ``methods`` (the fields `compute_findings` recorded), in order."""
    found = {label: Method.of(**fields) for label, fields in f.get("methods", {}).items()}
    return dict(sorted(found.items(), key=lambda item: item[1].rank()))


def headline(f: Mapping[str, Any], matched_figure: int | None = None) -> str:
    """The report's paragraph: where the seed study's result reproduces (``seed_result``; or that the
    study has no snapshots, so no answer table), then a few main numbers (each computed in
    `compute_findings`) in words the findings' bullets (`details.findings_text`) do not repeat;
    `matched_figure`: the number of the matched-loss figure, if the reader has it."""
    parts = []
    tuning_only = not f.get("seed_result") and "answer_table" in f and not f["answer_table"] and bool(f.get("tuning"))
    if f.get("seed_result"):
        parts.append(f["seed_result"])
    elif tuning_only:
        parts.append(TUNING_ONLY)
    elif "answer_table" in f and not f["answer_table"]:
        parts.append("This study's runs have no milestone snapshots (they predate them), so its answer table is "
                     "empty until it is re-run; the details below compare each run where it stopped.")
    missing = sum(r.get("n_missing", 0) for r in f.get("answer_table", []))
    if missing:
        parts.append(f"{missing} snapshot(s) of the table's runs are missing (the run did not reach the milestone "
                     "or did not finish ok) and are counted, not compared.")
    trends = f.get("sharpness_trend", {})
    # the SGD-family base optimizer the study trained (plain or momentum SGD), preferring one with a trend
    bases = [m for m in methods_of(f).values() if m.is_base and m.optimizer in FAMILIES["sgd"]]
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
    if tuning_only:  # it has no comparisons whose runs could miss their target
        return " ".join(parts)
    parts.append(f"{len(left)} run(s) of the comparisons did not reach their target or did not finish and are "
                 "listed, not compared" + (f" (Fig. {matched_figure} shows the training loss each reached)."
                                           if matched_figure else ".") if left else
                 "Every run of the comparisons reached its target.")
    return " ".join(parts)
