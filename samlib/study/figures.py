"""The study's figures (seaborn / matplotlib): one public call per figure, and `make_figures`.

Each ``fig_*`` function takes the whole results table (`samlib.study.tables.collect`, or results.csv
read back) and returns one matplotlib Figure, e.g. ``fig_loss(results, family="SGD")``;
``figure("fig1_sgd_loss", results, snapshots=snapshots)`` draws a figure of `FIGURES` by name, and
`make_figures` writes them all. Fig. 0–4 (the answer and the seed study's figures) are drawn here,
the report's "more figures" (Fig. 5–10) in `samlib.study.more_figures`. The headline figure (`fig_answer`, ``fig0_answer``) draws the answer
table (`samlib.study.answer`): the gap and SAM's effect per regime. The seed study's figures
(`SEED_FIGURES`, Fig. 1–4) are drawn from the snapshots table at `seed_milestone` (the smallest loss
milestone the runs reached) when the study has snapshots, else from each run's final stop. Colours and method order come from a `Style` of the table (pass one `Style` to several
calls to keep a method's colour across figures drawn from different subsets). The figures are not
left open in pyplot: a notebook shows each once, as the value of its cell.

Every line is mean ± seaborn's bootstrap 95 % CI (``errorbar=("ci", 95)``, 1,000 resamples, seed 0)
over seeds; diverged runs never enter a mean and are drawn as ✕ at the top of their panel.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from samlib import io
from samlib.measures import label as measure_label
from samlib.milestones import EPOCHS, LOSS
from samlib.study.answer import answer_table
from samlib.study.answer_text import figure_label
from samlib.study.curve_figures import fig_matched_vs_batch, fig_remedies, fig_steps_vs_batch
from samlib.study.more_figures import (
    fig_generalization,
    fig_lr_scaling,
    fig_m_sharpness,
    fig_matched,
    fig_runtime,
    fig_sharpness_vs_error,
    fig_sharpness_vs_loss,
)
from samlib.study.plotting import (
    NO_MEASURE,
    Style,
    empty_panel,
    figure_function,
    panels,
    rules_title,
    setup_matplotlib,
    vs_batch,
)
from samlib.study.selections import FAMILIES, at_milestone, comparable_snapshots, in_family, main_runs

# --------------------------------------------------------------------------------------- constants
FIGURES = (
    "fig0_answer",
    "fig1_sgd_loss",
    "fig2_sgd_sharpness",
    "fig3_adam_loss",
    "fig4_adam_sharpness",
    "fig5_lr_scaling",
    "fig6_runtime",
    "fig7_m_sharpness",
    "fig8_generalization",
    "fig9_matched_loss",
    "fig10_sharpness_vs_loss",
    "fig11_sharpness_vs_error",
    "fig12_steps_vs_batch",
    "fig13_matched_vs_batch",
    "fig14_remedies",
)
ANSWER = "fig0_answer"  #: the headline figure: the answer table drawn
SEED_FIGURES = ("fig1_sgd_loss", "fig2_sgd_sharpness", "fig3_adam_loss", "fig4_adam_sharpness")
#: the optimizer family (`selections.FAMILIES`) a figure is about; a report leaves out those of a family
#: the study did not train (their files are still written)
FIGURE_FAMILY = {"fig1_sgd_loss": "sgd", "fig2_sgd_sharpness": "sgd", "fig3_adam_loss": "adam",
                 "fig4_adam_sharpness": "adam"}
CAPTIONS = {
    "fig0_answer": "The answer, regime by regime (one row of the answer table each): the large-batch gap "
    "(LB − SB test error, paired by seed) and SAM's effect at the large batch (LB+SAM − LB), in percentage "
    "points, mean and t-based 95 % CI; ● compared at the same training loss, ■ after the same epochs; no bar: "
    "fewer than two seeds.",
    "fig1_sgd_loss": "Train and test loss vs batch size, SGD without / with SAM, at the smallest loss milestone "
    "the runs reached (the title names it; a study without snapshots: where each run stopped, at its loss "
    "target). ✕: runs that did not reach it or did not finish ok, shown but not averaged.",
    "fig2_sgd_sharpness": "Sharpness vs batch size at the same training loss (the milestone of Fig. 1), SGD "
    "without / with SAM (one panel per measure; y-axes not shared).",
    "fig3_adam_loss": "Train and test loss vs batch size, Adam without / with SAM (at the milestone of Fig. 1).",
    "fig4_adam_sharpness": "Sharpness vs batch size, Adam without / with SAM (at the milestone of Fig. 1).",
    "fig5_lr_scaling": "Learning-rate scaling: the best effective lr (lowest validation loss, chosen per "
    "seed) vs batch size against the linear- and square-root-scaling lines through the smallest batch's "
    "best lr (left); validation loss over the lr sweep (right).",
    "fig6_runtime": "Training time per epoch (steady state, first epoch's tracing excluded where a run "
    "has more than one epoch) and the SAM / base-optimizer cost ratio per seed, vs batch size.",
    "fig7_m_sharpness": "m-sharpness at the largest batch size: SAM whose perturbation is computed on "
    "the whole batch vs on micro-batches of m examples, with the base optimizer for reference.",
    "fig8_generalization": "Accuracy and generalization gap (test − train loss, train − test accuracy) "
    "vs batch size.",
    "fig9_matched_loss": "Sharpness at a matched training loss: runs trained to the same target loss "
    "(first panel: the train loss each actually reached). Runs that did not reach the target are "
    "marked ✕.",
    "fig11_sharpness_vs_error": "Is a sharper minimum a worse one? Each sharpness measure vs test error at each "
    "loss milestone, every main run's snapshot a point (all methods, batch sizes and lr rules), with Kendall's τ "
    "and its bootstrap 95 % CI over the runs; findings.json's sharpness_vs_generalization also has τ against the "
    "generalization gap and the granulated τ (within one hyperparameter's changes).",
    "fig12_steps_vs_batch": "The batch-size curve: steps to the lowest loss milestone vs batch size, per method "
    "and lr rule (mean and t-based 95 % CI over seeds), log-log; dotted: perfect scaling from the method's smallest "
    "batch (steps halve as the batch doubles); dashed: S(B) = S_min·(1 + B_crit/B) fitted where the curve has three "
    "or more batch sizes (findings.json's curve: B_crit with a Fieller CI, gradient evaluations, B_simple).",
    "fig13_matched_vs_batch": "Test error and Hessian λ_max at the lowest loss milestone vs batch size, per method "
    "and lr rule, mean and 95 % CI over seeds: the large batch at the same training loss, with and without SAM.",
    "fig14_remedies": "The remedies at matched cost: test error at the largest batch size vs gradient evaluations "
    "to the lowest loss milestone (steps × evaluations per step: 2 for SAM, 1 + 1/k for LookSAM), one point per "
    "method on the tuned lr rule, t-based 95 % CIs over seeds in both directions, log x; ★ the reference, tuned SGD "
    "at the smallest batch (findings.json's remedies: the gap to it paired by seed, Holm-adjusted). Runs that missed "
    "the milestone are counted in the legend, and a method none of whose runs reached it is named under the panel. "
    "Empty in a study without tuned methods besides the reference.",
    "fig10_sharpness_vs_loss": "Sharpness vs final train loss of every run: minima compared at equal "
    "train loss (sharpness falls as training converges, so compare vertically).",
}




def _family(results: pd.DataFrame, name: str) -> pd.DataFrame:
    return in_family(main_runs(results), name)  # ValueError for a family that is not one


@figure_function
def fig_loss(plt, results: pd.DataFrame, family: str = "SGD", *, style: Style):
    """Train and test loss vs batch size of one optimizer family ("SGD" or "Adam") without / with SAM
    (runs of the comparisons; ✕: not compared)."""
    df = _family(results, family)
    return vs_batch(plt, df, [("train_loss", "train loss"), ("test_loss", "test loss")],
                     f"{family} without / with SAM: loss vs batch size ({rules_title(df)})", style)


@figure_function
def fig_sharpness(plt, results: pd.DataFrame, family: str = "SGD", *, style: Style):
    """Sharpness vs batch size of one optimizer family without / with SAM, one panel per measure."""
    df = _family(results, family)
    ys = [(m, measure_label(m)) for m in style.measures] or NO_MEASURE
    return vs_batch(plt, df, ys, f"{family} without / with SAM: sharpness vs batch size ({rules_title(df)})", style)


def fig_answer(table: Sequence[dict[str, Any]], style: Style | None = None):
    """The headline figure: one point and 95 % CI bar per answer-table row (`answer.answer_table`),
    the gap (LB − SB test error) in the left panel, SAM's effect (LB+SAM − LB) in the right, in
    percentage points; rows grouped by optimizer family and lr rule, ● at a loss, ■ after epochs."""
    plt, _ = setup_matplotlib()
    table = list(table)
    if not table:
        fig, axes = panels(plt, 1, width=7.0, height=2.2)
        empty_panel(axes[0], "no milestone snapshots in this study: the answer table is empty until it is re-run")
        fig.suptitle("The answer: large-batch gap and SAM's effect per regime", fontsize=11)
        fig.tight_layout()
        plt.close(fig)
        return fig
    many = len({r["dataset"] for r in table}) > 1
    height = 1.6 + 0.32 * len(table)
    fig, axes = plt.subplots(1, 2, figsize=(11.0, height), sharey=True, squeeze=False)
    axes = list(axes[0])
    colors = {f: f"C{i}" for i, f in enumerate(FAMILIES)}
    ys = list(range(len(table)))[::-1]
    for ax, key, title in ((axes[0], "gap", "gap: LB − SB test error (points)"),
                           (axes[1], "sam_effect", "SAM at LB: LB+SAM − LB test error (points)")):
        for y, row in zip(ys, table):
            d = row[key]
            if d["mean"] is None:
                continue
            mean = 100 * d["mean"]
            err = None if d["lo"] is None else [[mean - 100 * d["lo"]], [100 * d["hi"] - mean]]
            ax.errorbar([mean], [y], xerr=err, fmt="o" if row["compare_at"] == LOSS else "s",
                        color=colors.get(row["optimizer"], "0.3"), capsize=3, markersize=5)
        ax.axvline(0.0, color="k", lw=0.8)
        for i in range(1, len(table)):  # a line between groups of (data set, optimizer, lr rule)
            a, b = table[i - 1], table[i]
            if (a["dataset"], a["optimizer"], a["lr_rule"]) != (b["dataset"], b["optimizer"], b["lr_rule"]):
                ax.axhline(ys[i] + 0.5, color="0.7", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("percentage points")
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([figure_label(r, many) for r in table], fontsize=8)
    axes[0].set_ylim(-0.7, len(table) - 0.3)
    fig.suptitle("The answer: large-batch gap and SAM's effect per regime (mean, 95 % CI over seeds)", fontsize=11)
    fig.tight_layout()
    plt.close(fig)
    return fig


def seed_milestone(snapshots: pd.DataFrame | None) -> str | None:
    """The milestone the seed figures are drawn at: the smallest loss milestone (the same training loss,
    the comparison the study is about) among those that runs reached at the most batch sizes (every
    batch size, where one is), else the largest epoch milestone so chosen; None without snapshots."""
    if snapshots is None or not len(snapshots):
        return None
    reached = main_runs(snapshots)
    reached = reached[comparable_snapshots(reached)]
    for kind, last in ((LOSS, False), (EPOCHS, True)):
        of_kind = reached[reached["kind"] == kind]
        if len(of_kind):
            cover = {float(at): g["batch_size"].nunique() for at, g in of_kind.groupby(of_kind["at"].astype(float))}
            best = max(cover.values())
            at = (max if last else min)(a for a, n in cover.items() if n == best)
            return str(of_kind[of_kind["at"].astype(float) == at]["milestone"].iloc[0])
    return None


_MAKERS: dict[str, Callable[..., Any]] = {
    "fig1_sgd_loss": functools.partial(fig_loss, family="SGD"),
    "fig2_sgd_sharpness": functools.partial(fig_sharpness, family="SGD"),
    "fig3_adam_loss": functools.partial(fig_loss, family="Adam"),
    "fig4_adam_sharpness": functools.partial(fig_sharpness, family="Adam"),
    "fig5_lr_scaling": fig_lr_scaling,
    "fig6_runtime": fig_runtime,
    "fig7_m_sharpness": fig_m_sharpness,
    "fig8_generalization": fig_generalization,
    "fig9_matched_loss": fig_matched,
    "fig10_sharpness_vs_loss": fig_sharpness_vs_loss,
    "fig11_sharpness_vs_error": fig_sharpness_vs_error,
    "fig12_steps_vs_batch": fig_steps_vs_batch,
    "fig13_matched_vs_batch": fig_matched_vs_batch,
    "fig14_remedies": fig_remedies,
}
#: drawn from the snapshots table alone
SNAPSHOT_FIGURES = ("fig11_sharpness_vs_error", "fig12_steps_vs_batch", "fig13_matched_vs_batch", "fig14_remedies")
REMEDIES = "fig14_remedies"  #: the figure of findings.json's remedies
PREDICTORS = "fig11_sharpness_vs_error"  #: the figure of findings.json's sharpness_vs_generalization
MATCHED_LOSS = "fig9_matched_loss"  # the figure the findings refer to for matched-loss sharpness


def number(name: str) -> int:
    """The figure's number in the report: its place in `FIGURES`, from 0 (Fig. 0, the headline figure,
    `ANSWER`), so Fig. 1–4 are the seed study's Fig. 1–4."""
    return FIGURES.index(name)


def figure(name: str, results: pd.DataFrame, style: Style | None = None, snapshots: pd.DataFrame | None = None,
           table: Sequence[dict[str, Any]] | None = None, predictors: list | None = None):
    """Draw the figure `name` of `FIGURES` from a results table (and the snapshots table, for the
    headline figure, the seed figures and `SNAPSHOT_FIGURES`; `table`: its answer table, `predictors`:
    its sharpness_vs_generalization, if at hand); returns the Figure."""
    if name == ANSWER:
        return fig_answer(table if table is not None else answer_table(snapshots), style)
    if name not in _MAKERS:
        raise ValueError(f"figure has value {name!r}; allowed: {', '.join(FIGURES)}")
    if name in SNAPSHOT_FIGURES:
        extra = {"predictors": predictors} if name == PREDICTORS else {}
        return _MAKERS[name](snapshots if snapshots is not None else pd.DataFrame(), style=style or Style.of(results),
                             **extra)
    milestone = seed_milestone(snapshots) if name in SEED_FIGURES else None
    if milestone is not None:
        return _MAKERS[name](at_milestone(main_runs(snapshots), milestone), style=style or Style.of(results))
    return _MAKERS[name](results, style=style)


def make_figures(results: pd.DataFrame, out_dir: str | Path, snapshots: pd.DataFrame | None = None,
                 table: Sequence[dict[str, Any]] | None = None, predictors: list | None = None) -> dict[str, Any]:
    """Every figure of `FIGURES` as ``out_dir/<name>.png`` and ``.svg``; returns name -> Figure. The same
    tables give the same files (the svg has no date and fixed ids), so a rewritten report of unchanged
    runs changes no figure."""
    import matplotlib

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    style = Style.of(results)
    table = list(table) if table is not None else answer_table(snapshots)
    figures = {}
    for name in FIGURES:
        fig = figure(name, results, style, snapshots=snapshots, table=table, predictors=predictors)
        for ext in ("png", "svg"):
            meta = {"Date": None} if ext == "svg" else None
            with matplotlib.rc_context({"svg.hashsalt": name}):
                io.atomic_write(out_dir / f"{name}.{ext}", lambda tmp, e=ext, md=meta: fig.savefig(
                    tmp, format=e, dpi=110, bbox_inches="tight", metadata=md))
        figures[name] = fig
    return figures
