"""The batch-size curve drawn (`curve.curve_table`): steps to a loss milestone vs batch size on log-log
axes against perfect scaling (Shallue et al. 2019; McCandlish et al. 2018), and test error and λ_max at
that matched loss vs batch size; one panel per lr rule, one line per method, with and without SAM. And
the remedies at matched cost (`remedies.remedies_table`): test error vs gradient evaluations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from samlib import measures
from samlib.study.plotting import Style, empty_panel, figure_function, log2_x, log_axis


def _lowest(table: list[dict]) -> str | None:
    """The lowest loss milestone of the curve table (the one nearest to interpolation)."""
    ats = sorted({float(e["milestone"].split("=")[1]) for e in table})
    return f"loss={ats[0]:g}" if ats else None


@figure_function
def fig_steps_vs_batch(plt, snapshots: pd.DataFrame, *, style: Style):
    """Steps to the lowest loss milestone vs batch size per method (mean and t-CI over seeds), log-log,
    one panel per lr rule; dotted: perfect scaling from the method's smallest batch (steps ∝ 1/B);
    dashed: the fit S(B) = S_min·(1 + B_crit/B) where the curve has enough batch sizes."""
    from samlib.study.curve import curve_table

    table = curve_table(snapshots)
    milestone = _lowest(table)
    rules = sorted({e["lr_rule"] for e in table}) or ["(none)"]
    fig, axes = plt.subplots(1, len(rules), figsize=(4.6 * len(rules), 3.8), squeeze=False)
    for ax, rule in zip(axes[0], rules):
        entries = [e for e in table if e["lr_rule"] == rule and e["milestone"] == milestone]
        if not entries:
            empty_panel(ax)
            continue
        for e in entries:
            pts = [p for p in e["points"] if p["steps"]["mean"] is not None]
            if not pts:  # no batch size of this method reached the milestone yet (a study part-way)
                continue
            b = np.array([p["batch_size"] for p in pts], dtype=float)
            bars = [_errorbar(p["steps"]) for p in pts]  # (mean, [[below], [above]]) per batch size
            s = np.array([mean for mean, _ in bars], dtype=float)
            err = np.hstack([np.array(below_above, dtype=float) for _, below_above in bars])
            color = style.palette.get(e["method"], "0.3")
            ax.errorbar(b, s, yerr=err, fmt="o-", color=color, capsize=3, label=e["method"])
            ax.plot(b, s[0] * b[0] / b, ":", color=color, lw=1)
            if e["fit"] and e["fit"]["s_min"] is not None:
                grid = np.geomspace(b.min(), b.max(), 50)
                ax.plot(grid, e["fit"]["s_min"] * (1 + e["fit"]["b_crit"] / grid), "--", color=color, lw=1)
        ax.set_xscale("log", base=2)
        log_axis(ax, "y")
        ax.set_xlabel("batch size (log₂)")
        ax.set_ylabel(f"steps to {milestone}")
        ax.set_title(f"{rule} lr", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("Steps to the same training loss vs batch size (dotted: perfect scaling)", fontsize=11)
    fig.tight_layout()
    return fig


@figure_function
def fig_matched_vs_batch(plt, snapshots: pd.DataFrame, *, style: Style):
    """Test error (top) and λ_max (bottom) at the lowest loss milestone vs batch size, per method (mean
    and 95 % CI over seeds), one column per lr rule: is the large batch worse, or sharper, at the same
    training loss, with and without SAM?"""
    import seaborn as sns

    from samlib.study import selections

    lam = measures.REGISTRY[measures.LAMBDA_MAX].keys(None)[0]
    runs = selections.main_runs(snapshots) if len(snapshots) else snapshots
    runs = runs[selections.comparable_snapshots(runs) & (runs["kind"] == "loss")] if len(runs) else runs
    milestone = f"loss={runs['at'].astype(float).min():g}" if len(runs) else None
    runs = runs[runs["milestone"] == milestone] if len(runs) else runs
    runs = runs.assign(lr_rule=selections.own_lr_rules(runs),
                       method=[m.label for m in selections.methods(runs)]) if len(runs) else runs
    rules = sorted(set(runs["lr_rule"])) if len(runs) else ["(none)"]
    # + 2.2 in for the legend outside the last panel, so that the batch sizes' labels do not overlap
    fig, axes = plt.subplots(2, len(rules), figsize=(4.6 * len(rules) + 2.2, 6.6), squeeze=False)
    for j, rule in enumerate(rules):
        d = runs[runs["lr_rule"] == rule] if len(runs) else runs
        for i, (y, label) in enumerate((("test_error", "test error"), (lam, "Hessian λ_max"))):
            ax = axes[i][j]
            if not len(d) or y not in d or not d[y].notna().any():
                empty_panel(ax)
                continue
            sns.lineplot(data=d, x="batch_size", y=y, hue="method", palette=style.palette, marker="o",
                         hue_order=[m for m in style.order if m in set(d["method"])], errorbar=("ci", 95),
                         n_boot=1000, seed=0, ax=ax, legend=(i == 0 and j == len(rules) - 1))
            if ax.get_legend() is not None:
                sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
            log2_x(ax, d["batch_size"].unique())
            ax.set_ylabel(label)
            ax.set_title(f"{rule} lr, at {milestone}", fontsize=10)
    fig.suptitle("At the same training loss: test error and λ_max vs batch size", fontsize=11)
    fig.tight_layout()
    return fig



def _errorbar(ci: dict, scale: float = 1.0) -> tuple[float, list[list[float]]]:
    """(mean, [[below], [above]]) of a ``{mean, lo, hi}`` interval times `scale`; no bar without a CI."""
    mean = scale * ci["mean"]
    lo, hi = (mean, mean) if ci["lo"] is None else (scale * ci["lo"], scale * ci["hi"])
    return mean, [[mean - lo], [hi - mean]]


@figure_function
def fig_remedies(plt, snapshots: pd.DataFrame, *, style: Style):
    """The remedies at matched cost (`remedies.remedies_table`): test error at the largest batch size vs
    gradient evaluations to the lowest loss milestone, one point per method with t-based 95 % CIs in both
    directions, log x, one panel per data set; ★ the reference (tuned SGD at the smallest batch). Runs that
    missed the milestone are counted in their method's label, and a method none of whose runs reached it is
    named under the panel (shown, never averaged)."""
    from samlib.study.remedies import at_largest, has_remedies, missed, remedies_table

    table = remedies_table(snapshots)
    datasets = list(dict.fromkeys(r["dataset"] for r in table)) if has_remedies(table) else ["(none)"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.4 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows, ref = at_largest(table, dataset)
        shown = [r for r in [*(r for r in rows if not r["reference"]), *([ref] if ref else [])]
                 if r["grad_evals"]["mean"] is not None and r["test_error"]["mean"] is not None]
        if not shown or all(r["reference"] for r in shown):
            empty_panel(ax, "no tuned method at the largest batch size reached the milestone" if rows else
                        "no tuned methods besides the reference in this study")
            continue
        for r in shown:
            (x, xerr), (y, yerr) = _errorbar(r["grad_evals"]), _errorbar(r["test_error"], 100.0)
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="*" if r["reference"] else "o",
                        color="k" if r["reference"] else style.palette.get(r["method"], "0.3"), capsize=3,
                        markersize=10 if r["reference"] else 6,
                        label=f"{r['method']}, batch {r['batch_size']}" + (" (reference)" if r["reference"] else "")
                        + (f" ({missed(r)})" if r["n_missing"] else ""))
        absent = [f"{r['method']}, batch {r['batch_size']} ({missed(r)})" for r in rows
                  if r not in shown and not r["reference"]]
        if absent:
            ax.text(0.0, -0.2, "not shown: " + "; ".join(absent), transform=ax.transAxes, fontsize=7, va="top")
        ax.set_xscale("log")
        ax.set_xlabel(f"gradient evaluations to {shown[0]['milestone']} (log)")
        ax.set_ylabel(f"test error at {shown[0]['milestone']} (%)")
        ax.set_title(f"{dataset}, batch {rows[0]['batch_size']}", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("Remedies at matched cost (tuned lr, 95 % CIs)", fontsize=11)
    fig.tight_layout()
    return fig
