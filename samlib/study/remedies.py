"""The remedies at matched cost (issue 22): every tuned method against tuned SGD at the small batch.

Is SAM the remedy to reach for at a large batch, or LARS, LAMB, LookSAM? SAM costs two gradient
evaluations a step, so the methods are set side by side at matched training loss and by their cost to
reach it. From the snapshots table (one row per (run, milestone), `tables.snapshot_records`),
`remedies_table`: one row per (data set, milestone, method, batch size) of the main runs
(`selections.main_runs`) on the ``tuned`` lr rule (``lr_tuned`` true: each method at each batch size at
its own tuned lr; `selections.own_lr_rules`), every method found (methods are data: a `selections.Method`
of the row's fields, labelled by `samlib.optimizers.method_label`):

- identity: ``dataset`` (`selections.dataset_label`), ``milestone`` ('loss=0.03' or 'evals=600'), ``kind``
  (``loss``: matched training loss; ``evals``: matched gradient evaluations, the same compute), ``at``,
  ``method`` (the label), ``optimizer``, ``sam``, ``m``, ``batch_size``, ``lr`` (the runs' lr; null if
  they differ), ``reference`` (true for the reference row itself).
- counts: ``n_runs`` (snapshot rows), ``n_seeds`` (seeds that reached the milestone and finished ok,
  `selections.comparable_snapshots`), ``n_missing`` (the others: counted, never averaged).
- cost: ``grad_evals_per_step`` (`samlib.cost.grad_evals_per_step`: 1 for a base optimizer, 2 for SAM, ASAM,
  m-SAM, 1 + 1/k for LookSAM, its k the run's ``looksam_k``), ``steps`` and ``grad_evals`` (steps ×
  evaluations per step) to the milestone, and ``seconds``: steps × the run's steady-state seconds per
  step (``step_seconds``: training alone, its checks and snapshots not counted; CPU seconds where each run
  has one core, as in a study run with ``--threads 1``), each ``{mean, lo, hi, n}``: mean and t-based 95 %
  CI over seeds (`stats.mean_ci`).
- ``test_error`` at the milestone ``{mean, lo, hi, n}``; ``train_loss`` (the mean).
- against the reference, ``reference_method`` at ``reference_batch``: the tuned base optimizer of the
  SGD family (`selections.FAMILIES`, the first in `selections.method_order`) without SAM, same data set
  and milestone; at a loss milestone at the smallest batch size of the data set's tuned runs (the
  large-batch gap), at an evaluations milestone at the row's own batch size (what the same compute buys
  at that batch: SGD spends SAM's budget on twice the steps). ``gap``: method −
  reference test error paired by seed, ``{mean, lo, hi, n}`` (`stats.paired_difference`); ``p`` its
  paired t-test and ``holm_p`` that p adjusted by Holm's method (`stats.holm`) over every tested row of
  the data set's table (one family of tests, as in the answer table); ``gap_two_way``: where both
  recorded their per-test-image predictions, the gap with a CI over seeds × test images
  (`answer.two_way_gap`); ``mismatch``: ln(L_method / L_reference) of the mean training losses at the
  snapshot (`answer`'s), how far apart the compared minima are; ``snapshot_mismatch``: the mean over the
  row's runs of each snapshot's own ln(milestone / loss) where recorded. The reference row has no gap.

Errors are fractions (0.012 = 1.2 points). `remedies_lines` says the largest batch size of each data
set in words (the report's Details), `remedies_html` draws the table for the report. No TensorFlow.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from samlib.io import present
from samlib.milestones import EVALS, LOSS
from samlib.study import selections, stats
from samlib.study.answer import per_seed, two_way_gap
from samlib.study.answer_text import points
from samlib.cost import grad_evals_per_step

KEYS = ["dataset", "milestone", "kind", "at", "method", "optimizer", "sam", "m", "batch_size", "lr", "reference", "n_runs",
        "n_seeds", "n_missing", "grad_evals_per_step", "steps", "grad_evals", "seconds", "test_error", "train_loss",
        "reference_method", "reference_batch", "gap", "gap_two_way", "p", "holm_p", "mismatch", "snapshot_mismatch"]


def tuned_snapshots(snapshots: pd.DataFrame | None) -> pd.DataFrame:
    """The loss- and evaluations-milestone rows of the main runs on the tuned lr rule, with
    ``evals_per_step`` (`grad_evals_per_step` of the row's SAM mode), ``grad_evals`` (step × that),
    ``seconds`` (step × ``step_seconds``) and ``comparable`` (`selections.comparable_snapshots`)."""
    if snapshots is None or not len(snapshots) or "milestone" not in snapshots:
        return pd.DataFrame()
    runs = selections.main_runs(snapshots)
    runs = runs[runs["kind"].isin([LOSS, EVALS])] if len(runs) else runs
    if not len(runs):
        return pd.DataFrame()
    runs = runs[np.array([r == selections.TUNED_LR for r in selections.own_lr_rules(runs)], dtype=bool)]
    if not len(runs):
        return pd.DataFrame()
    k = runs["looksam_k"] if "looksam_k" in runs else [None] * len(runs)
    evals = [grad_evals_per_step(s, v) for s, v in zip(runs["sam"], k)]
    steps = pd.to_numeric(runs["step"], errors="coerce")
    step_seconds = pd.to_numeric(runs["step_seconds"], errors="coerce") if "step_seconds" in runs else math.nan
    return runs.assign(evals_per_step=evals, grad_evals=steps * evals, seconds=steps * step_seconds,
                       comparable=selections.comparable_snapshots(runs))


def reference_method(runs: pd.DataFrame) -> tuple[selections.Method | None, int | None]:
    """(the reference method, its batch size) of one data set's tuned runs: the first SGD-family base
    optimizer (`selections.method_order`) with runs at the smallest batch size; (None, smallest) without."""
    sizes = sorted({int(b) for b in runs["batch_size"] if present(b)})
    if not sizes:
        return None, None
    at = runs[runs["batch_size"] == sizes[0]]
    bases = [m for m in selections.method_order(at) if m.is_base and m.optimizer in selections.FAMILIES["sgd"]]
    return (bases[0] if bases else None), sizes[0]


def _ci(values: Mapping[int, float]) -> dict[str, Any]:
    ci = stats.mean_ci(list(values.values()))
    return {"mean": stats.value(ci["mean"]), "lo": stats.value(ci["lo"]), "hi": stats.value(ci["hi"]), "n": ci["n"]}


def _lr(rows: pd.DataFrame) -> float | None:
    lrs = {float(v) for v in rows["lr"] if present(v)}
    return lrs.pop() if len(lrs) == 1 else None


def remedy_row(rows: pd.DataFrame, ref: pd.DataFrame | None) -> dict[str, Any]:
    """The numbers of one (data set, milestone, method, batch size) from its snapshot rows (`rows`,
    from `tuned_snapshots`) against the reference's rows `ref` (None: the row is the reference, or
    there is none); identity keys are the caller's (module doc)."""
    used = rows[rows["comparable"]]
    err = per_seed(used, "test_error")
    out: dict[str, Any] = {"lr": _lr(rows), "n_runs": int(len(rows)), "n_seeds": len(err),
                           "n_missing": int(len(rows) - len(used)),
                           "grad_evals_per_step": float(rows["evals_per_step"].iloc[0]),
                           "steps": _ci(per_seed(used, "step")), "grad_evals": _ci(per_seed(used, "grad_evals")),
                           "seconds": _ci(per_seed(used, "seconds")),
                           "test_error": _ci(err), "train_loss": _ci(per_seed(used, "train_loss"))["mean"],
                           "gap": None, "gap_two_way": None, "p": None, "holm_p": None, "mismatch": None}
    mism = list(per_seed(used, "mismatch").values())
    out["snapshot_mismatch"] = stats.value(np.mean(mism)) if mism else None
    if ref is None:
        return out
    ref_used = ref[ref["comparable"]]
    gap = stats.paired_difference(err, per_seed(ref_used, "test_error"))
    out["gap"] = {"mean": stats.value(gap["mean"]), "lo": stats.value(gap["lo"]), "hi": stats.value(gap["hi"]),
                  "n": int(gap["n"])}
    out["p"] = stats.value(gap["p"])
    out["gap_two_way"] = two_way_gap(used, ref_used)
    ref_loss = _ci(per_seed(ref_used, "train_loss"))["mean"]
    loss = out["train_loss"]  # as the answer table's mismatch: ln of the mean training losses' ratio
    out["mismatch"] = stats.value(math.log(loss / ref_loss)) if loss and ref_loss and loss > 0 and ref_loss > 0 else None
    return out


def _milestones(runs: pd.DataFrame) -> list[tuple[str, float]]:
    """(kind, at) of the loss milestones from the largest down (the order training reaches them), then of
    the evaluations milestones from the smallest up."""
    ats = {(str(k), float(a)) for k, a in zip(runs["kind"], runs["at"]) if present(a)}
    return ([m for m in sorted(ats, key=lambda m: -m[1]) if m[0] == LOSS]
            + [m for m in sorted(ats, key=lambda m: m[1]) if m[0] == EVALS])


def _dataset_rows(runs: pd.DataFrame, dataset: Any) -> list[dict[str, Any]]:
    """The rows of one data set (module doc), milestones as `_milestones` orders them, then methods in
    `selections.method_order`, then batch sizes ascending."""
    ref_method, smallest = reference_method(runs)
    out = []
    for kind, at in _milestones(runs):
        snaps = runs[(runs["kind"] == kind) & (runs["at"].astype(float) == at)]
        name = f"loss={at:g}" if kind == LOSS else f"evals={int(at)}"
        for method, of_method in selections.by_method(snaps):
            for bs, rows in of_method.groupby("batch_size", sort=True):
                ref_batch = smallest if kind == LOSS else int(bs)  # the gap, or the same compute at this batch
                ref = (selections.select(snaps[snaps["batch_size"] == ref_batch], ref_method)
                       if ref_method is not None else None)
                ref = ref if ref is not None and len(ref) else None
                is_ref = method == ref_method and int(bs) == ref_batch
                entry = {"dataset": selections.dataset_label(dataset), "milestone": name, "kind": kind, "at": at,
                         "method": method.label, **method.fields(), "batch_size": int(bs), "reference": is_ref,
                         "reference_method": ref_method.label if ref_method else None,
                         "reference_batch": ref_batch if ref_method else None}
                entry.update(remedy_row(rows, None if is_ref else ref))
                out.append({k: entry[k] for k in KEYS})
    return out


def remedies_table(snapshots: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The remedies table (module doc) of a snapshots table: a list of rows ordered by data set,
    milestone, method and batch size, ``holm_p`` adjusted over each data set's tested rows. Empty for a
    study without tuned runs at a loss milestone."""
    runs = tuned_snapshots(snapshots)
    table: list[dict[str, Any]] = []
    if not len(runs):
        return table
    for dataset in sorted({d for d in runs["dataset"] if present(d)}, key=str):
        rows = _dataset_rows(runs[runs["dataset"] == dataset], dataset)
        for r, adjusted in zip(rows, stats.holm([r["p"] for r in rows])):
            r["holm_p"] = stats.value(adjusted)
        table += rows
    return table


def has_remedies(table: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the table holds a row besides the reference (else it says nothing about remedies)."""
    return any(not r["reference"] for r in table)


def at_largest(table: Sequence[Mapping[str, Any]], dataset: str) -> tuple[list[dict], dict | None]:
    """(the rows of `dataset` at its largest batch size and lowest loss milestone, the reference row at
    that milestone or None): what the Details line and the figure show."""
    rows = [r for r in table if r["dataset"] == dataset and r["kind"] == LOSS]
    if not rows:
        return [], None
    at, largest = min(r["at"] for r in rows), max(r["batch_size"] for r in rows)
    ref = next((r for r in rows if r["reference"] and r["at"] == at), None)
    return [dict(r) for r in rows if r["at"] == at and r["batch_size"] == largest], ref


# ---------------------------------------------------------------------- words and a table
def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _count(ci: Mapping[str, Any] | None) -> str:
    """'12,340 (95 % CI 11,020–13,660)'; 'n/a' without a value."""
    if not ci or ci.get("mean") is None:
        return "n/a"
    return _num(ci["mean"]) + ("" if ci.get("lo") is None else f" (95 % CI {_num(ci['lo'])} to {_num(ci['hi'])})")


def _pct(ci: Mapping[str, Any] | None) -> str:
    """A test error in percent with its CI: '2.10 % (1.90–2.30)'; 'n/a' without a value."""
    if not ci or ci.get("mean") is None:
        return "n/a"
    return f"{100 * ci['mean']:.2f} %" + ("" if ci.get("lo") is None else
                                          f" ({100 * ci['lo']:.2f}–{100 * ci['hi']:.2f})")


def _gap(r: Mapping[str, Any]) -> str:
    g = r.get("gap")
    if not g or g.get("mean") is None:
        return "–"
    ci = "no CI" if g.get("lo") is None else f"{points(g['lo'])} to {points(g['hi'])}"
    p = "" if r.get("holm_p") is None else f", Holm p {r['holm_p']:.2g}"
    return f"{points(g['mean'])} points ({ci}{p})"


def _seconds(ci: Mapping[str, Any] | None) -> str:
    return "" if not ci or ci.get("mean") is None else f", {_num(ci['mean'])} s"


def _method_text(r: Mapping[str, Any]) -> str:
    lr = "" if r["lr"] is None else f" (lr {r['lr']:g})"
    missing = f" [{r['n_missing']} of {r['n_runs']} runs missing]" if r["n_missing"] else ""
    if r["kind"] == EVALS:
        return (f"{r['method']}{lr}: test error {_pct(r['test_error'])} at training loss {r['train_loss']:.3g}"
                + ("" if r["reference"] else f", against {r['reference_method']} {_gap(r)}") + missing)
    return (f"{r['method']}{lr}: {_count(r['grad_evals'])} gradient evaluations{_seconds(r['seconds'])}, test error "
            f"{_pct(r['test_error'])}, gap {_gap(r)}{missing}")


def _evals_lines(table: Sequence[Mapping[str, Any]], dataset: str) -> list[str]:
    """One sentence per evaluations milestone of `dataset` at its largest batch size: what each method's
    test error is after the same gradient evaluations, against tuned SGD at that batch."""
    rows = [r for r in table if r["dataset"] == dataset and r["kind"] == EVALS]
    if not rows:
        return []
    largest = max(r["batch_size"] for r in rows)
    lines = []
    for name in dict.fromkeys(r["milestone"] for r in rows):
        at = [r for r in rows if r["milestone"] == name and r["batch_size"] == largest]
        if len(at) > 1:
            lines.append(f"At the same compute, {int(at[0]['at']):,} gradient evaluations, batch {largest} on {dataset} "
                         f"(paired by seed, t-based 95 % CI): " + "; ".join(_method_text(r) for r in at) + ".")
    return lines


def remedies_lines(table: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per data set: at its largest batch size and lowest loss milestone, each method's
    gradient evaluations, test error and gap to the reference; none where the table holds only the
    reference (`has_remedies`)."""
    if not has_remedies(table):
        return []
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in table):
        rows, ref = at_largest(table, dataset)
        if not rows or not any(not r["reference"] for r in rows):
            continue
        parts = [_method_text(r) for r in rows]
        against = (f"against {ref['method']} at batch {ref['batch_size']} ({_count(ref['grad_evals'])} gradient "
                   f"evaluations, test error {_pct(ref['test_error'])}), paired by seed, t-based 95 % CI"
                   if ref else "no reference run at the smallest batch size")
        lines.append(f"Remedies at batch {rows[0]['batch_size']} on {dataset}, to {rows[0]['milestone']} (each "
                     f"method at its tuned lr; {against}): " + "; ".join(parts) + ".")
        lines += _evals_lines(table, dataset)
    return lines


ROWS_HEADER = ["data set", "method", "lr", "gradient evaluations to {loss}", "test error at {loss} (%)",
               "gap to {ref} (points, Holm p)", "test error at {evals} evaluations (%)",
               "against {base} at the same compute (points, Holm p)"]


def _short_pct(ci: Mapping[str, Any] | None) -> str:
    """'2.10 (1.90–2.30)'; '–' without a value."""
    if not ci or ci.get("mean") is None:
        return "–"
    return f"{100 * ci['mean']:.2f}" + ("" if ci.get("lo") is None else f" ({100 * ci['lo']:.2f}–{100 * ci['hi']:.2f})")


def _short_count(ci: Mapping[str, Any] | None) -> str:
    """'1,367 (1,260–1,473)'; 'n/a' without a value."""
    if not ci or ci.get("mean") is None:
        return "n/a"
    return _num(ci["mean"]) + ("" if ci.get("lo") is None else f" ({_num(ci['lo'])}–{_num(ci['hi'])})")


def missed(r: Mapping[str, Any]) -> str:
    """'2 of 5 missed it': a remedies row's runs that did not reach its milestone (shown, never averaged);
    '' for none. The README's rows and Fig. 14 say it in these words."""
    return f"{r['n_missing']} of {r['n_runs']} missed it" if r["n_missing"] else ""


def _short_missing(r: Mapping[str, Any]) -> str:
    """'; 2 of 5 missed it' (`missed`); '' for none."""
    return f"; {missed(r)}" if r["n_missing"] else ""


def _short_gap(r: Mapping[str, Any] | None) -> str:
    """'+0.28 (−0.1 to +0.6), 1' : the paired gap, its t-based CI and Holm p; '–' for none."""
    g = None if r is None else r.get("gap")
    if not g or g.get("mean") is None:
        return "–"
    ci = "" if g.get("lo") is None else f" ({points(g['lo'])} to {points(g['hi'])})"
    return f"{points(g['mean'])}{ci}" + ("" if r.get("holm_p") is None else f", {r['holm_p']:.2g}")


def remedies_rows_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    """The remedies table's key rows as Markdown, one table per data set (the README quotes them;
    tests/test_readme.py checks the quote against the committed findings.json): the reference row and every
    method at the largest batch size, at the lowest loss milestone (gradient evaluations to it, test error,
    the gap to the reference) and at the first evaluations milestone (test error after that compute, against
    the reference method at the same batch). Errors in percent, gaps in points, t-based 95 % CIs over
    paired seeds, Holm-adjusted p over the data set's table; a method whose runs missed the milestone says
    how many (they are shown, never averaged)."""
    tables = []
    for dataset in dict.fromkeys(r["dataset"] for r in table if r["kind"] == LOSS):
        rows, ref = at_largest(table, dataset)
        evals_at = next((r["at"] for r in table if r["dataset"] == dataset and r["kind"] == EVALS), None)
        evals = {(r["method"], r["batch_size"]): r for r in table
                 if r["dataset"] == dataset and r["kind"] == EVALS and r["at"] == evals_at}
        base = next((r["reference_method"] for r in evals.values() if r["reference_method"]), "the reference")
        names = {"loss": rows[0]["milestone"].replace("=", " "), "base": base,
                 "ref": f"{ref['method']} at batch {ref['batch_size']}" if ref else "the reference",
                 "evals": "–" if evals_at is None else f"{int(evals_at):,}"}
        out = ["| " + " | ".join(h.format(**names) for h in ROWS_HEADER) + " |", "|" + "---|" * len(ROWS_HEADER)]
        for r in ([ref] if ref else []) + [r for r in rows if not r["reference"]]:
            e = evals.get((r["method"], r["batch_size"]))
            cells = [dataset, f"{r['method']}, batch {r['batch_size']}", "–" if r["lr"] is None else f"{r['lr']:g}",
                     _short_count(r["grad_evals"]) + _short_missing(r),
                     _short_pct(r["test_error"]), "reference" if r["reference"] else _short_gap(r),
                     _short_pct(e["test_error"]) if e else "–", "–" if e is None or e["reference"] else _short_gap(e)]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        tables.append("\n".join(out))
    return "\n\n".join(tables)


REMEDIES_HEADER = ["data set", "milestone", "method", "batch", "lr", "seeds (missing)", "grad evals / step",
                   "gradient evaluations", "training seconds", "test error (%)", "reference", "gap to reference (points)",
                   "gap, CI over seeds × test images", "gap p (Holm)", "ln L/L_ref"]


def _cells(r: Mapping[str, Any]) -> list[str]:
    two = r.get("gap_two_way")
    return [r["dataset"], r["milestone"], r["method"] + (" (reference)" if r["reference"] else ""),
            str(r["batch_size"]), "–" if r["lr"] is None else f"{r['lr']:g}", f"{r['n_seeds']} ({r['n_missing']})",
            f"{r['grad_evals_per_step']:.3g}", _count(r["grad_evals"]), _count(r["seconds"]), _pct(r["test_error"]),
            "–" if r["reference_method"] is None else f"{r['reference_method']} at {r['reference_batch']}",
            _gap(r) if not r["reference"] else "–",
            "–" if not two else f"{points(two['mean'])} ({points(two['lo'])} to {points(two['hi'])})",
            "–" if r["holm_p"] is None else f"{r['holm_p']:.2g}",
            "–" if r["mismatch"] is None else f"{r['mismatch']:+.3f}"]


def remedies_html(table: Sequence[Mapping[str, Any]]) -> str:
    """The remedies table as an HTML ``<table class='answer remedies'>``; '' for an empty table."""
    if not table:
        return ""
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in REMEDIES_HEADER) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in table)
    ref = next((r for r in table if r["reference"]), None)
    caption = ("<caption>Every method on the tuned lr rule at each batch size and milestone: gradient "
               "evaluations to the milestone (steps × evaluations per step), training seconds (steps × the run's "
               "steady-state seconds a step) and test error there, mean and t-based 95 % CI over seeds. At a loss "
               "milestone the gap is to " + (html.escape(f"{ref['method']} at batch {ref['batch_size']}")
                                              if ref else "the reference") +
               " (the large-batch gap); at an evaluations milestone (the same compute) to "
               + (html.escape(ref["method"]) if ref else "the reference method") +
               " at the row's own batch size. Gaps are paired by seed, their p adjusted by Holm's method over the "
               "data set's table. Runs that did not reach the milestone are counted as missing, never averaged.</caption>")
    return f"<table class='answer remedies'>{head}{body}{caption}</table>"
