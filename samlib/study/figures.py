"""The study's figures (seaborn / matplotlib): one public call per figure, and `make_figures`.

Each ``fig_*`` function takes the whole results table (`samlib.study.report.collect`, or results.csv
read back) and returns one matplotlib Figure, e.g. ``fig_loss(results, family="SGD")``;
``figure("fig1_sgd_loss", results, snapshots=snapshots)`` draws a figure of `FIGURES` by name, and
`make_figures` writes them all. The headline figure (`fig_answer`, ``fig0_answer``) draws the answer
table (`samlib.study.answer_table`): the gap and SAM's effect per regime. The seed study's figures
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

import numpy as np
import pandas as pd

from samlib import io
from samlib.measures import label as measure_label
from samlib.milestones import EPOCHS, LOSS
from samlib.study.answer_table import answer_table
from samlib.study.findings import cost_ratios
from samlib.study.plotting import (
    Style,
    auto_log_y,
    empty_panel,
    figure_function,
    finish,
    setup_matplotlib,
    line,
    log2_x,
    log_axis,
    mark_bad,
    panels,
)
from samlib.study.selections import (
    FAMILIES,
    FAMILY_LABELS,
    at_milestone,
    comparable_runs,
    comparable_snapshots,
    excluded,
    in_family,
    is_sam,
    lr_runs,
    lr_selection,
    main_runs,
    matched_runs,
    method_order,
    methods,
    reached_target,
    select,
)

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
    "fig10_sharpness_vs_loss": "Sharpness vs final train loss of every run: minima compared at equal "
    "train loss (sharpness falls as training converges, so compare vertically).",
}


_NO_MEASURE = [("sharpness", "sharpness")]  # the one panel of a sharpness figure when nothing was measured


def _vs_batch(plt, df: pd.DataFrame, ys: Sequence[tuple[str, str]], title: str, style: Style):
    palette, order = style.palette, style.order
    fig, axes = panels(plt, len(ys))
    bs_all = df["batch_size"].dropna().unique() if len(df) else []
    for ax, (y, label) in zip(axes, ys):
        if not len(df):
            empty_panel(ax)
            ax.set_title(label)
            continue
        line(ax, comparable_runs(df), y, palette, order)
        log2_x(ax, bs_all)
        if y in df:
            auto_log_y(ax, comparable_runs(df)[y].astype(float))
        note = mark_bad(ax, excluded(df), "batch_size", palette)
        ax.set_xlabel("batch size (log₂)")
        ax.set_ylabel(label)
        ax.set_title(label + (f"\n{note}" if note else ""), fontsize=10)
    finish(fig, axes, title)
    return fig


def _family(results: pd.DataFrame, name: str) -> pd.DataFrame:
    return in_family(main_runs(results), name)  # ValueError for a family that is not one


@figure_function
def fig_loss(plt, results: pd.DataFrame, family: str = "SGD", *, style: Style):
    """Train and test loss vs batch size of one optimizer family ("SGD" or "Adam") without / with SAM
    (runs of the comparisons; ✕: not compared)."""
    df = _family(results, family)
    return _vs_batch(plt, df, [("train_loss", "train loss"), ("test_loss", "test loss")],
                     f"{family} without / with SAM: loss vs batch size ({_rules(df)})", style)


@figure_function
def fig_sharpness(plt, results: pd.DataFrame, family: str = "SGD", *, style: Style):
    """Sharpness vs batch size of one optimizer family without / with SAM, one panel per measure."""
    df = _family(results, family)
    ys = [(m, measure_label(m)) for m in style.measures] or _NO_MEASURE
    return _vs_batch(plt, df, ys, f"{family} without / with SAM: sharpness vs batch size ({_rules(df)})", style)


def _rules(df: pd.DataFrame) -> str:
    rules = sorted(set(df["stop_rule"].dropna())) if len(df) else []
    return "stop rule: " + (", ".join(rules) if rules else "n/a")


@figure_function
def fig_lr_scaling(plt, df: pd.DataFrame, *, style: Style):
    """The best effective lr (by validation loss) vs batch size against the linear and sqrt rules;
    validation loss over the sweep."""
    import seaborn as sns

    palette, order = style.palette, style.order

    fig, axes = panels(plt, 2, width=5.2, height=3.8)
    sweep = lr_runs(df)
    best = lr_selection(df)
    ax = axes[0]
    if len(best):
        sns.lineplot(data=best, x="batch_size", y="lr", hue="method",
                     hue_order=[m for m in order if m in set(best["method"])], palette=palette, marker="o",
                     errorbar=("ci", 95), n_boot=1000, seed=0, err_style="bars", err_kws={"capsize": 3}, ax=ax)
        bss = np.array(sorted(best["batch_size"].unique()), dtype=float)
        ref_bs = bss[0]
        ref = best[best["batch_size"] == ref_bs]
        ref = select(ref, method_order(ref)[0])["lr"].mean()
        grid_bs = np.geomspace(bss[0], bss[-1], 50)
        ax.plot(grid_bs, ref * grid_bs / ref_bs, "k--", lw=1, label="linear scaling (lr ∝ B)")
        ax.plot(grid_bs, ref * np.sqrt(grid_bs / ref_bs), "k:", lw=1, label="sqrt scaling (lr ∝ √B)")
        log2_x(ax, bss)
        ax.set_yscale("log", base=2)
        ax.legend(fontsize=7)
        ax.set_xlabel("batch size (log₂)")
        ax.set_ylabel("best effective lr (log₂)")
    else:
        empty_panel(ax, "no lr-scaling runs")
    ax.set_title("best lr vs batch size")
    ax = axes[1]
    if len(sweep):
        ok = comparable_runs(sweep)
        ok = ok[np.isfinite(ok["val_loss"].astype(float))]
        if len(ok):
            sns.lineplot(data=ok.assign(B=ok["batch_size"].astype(int).astype(str)), x="lr", y="val_loss",
                         hue="B", hue_order=[str(b) for b in sorted(ok["batch_size"].astype(int).unique())],
                         palette="viridis", style="method", markers=True, errorbar=("ci", 95), n_boot=1000, seed=0,
                         err_style="bars", ax=ax)
            ax.set_xscale("log", base=2)
            auto_log_y(ax, ok["val_loss"].astype(float))
            ax.legend(fontsize=7, title="batch size / method", title_fontsize=7)
        note = mark_bad(ax, excluded(sweep), "lr", palette)
        ax.set_xlabel("effective lr (log₂)")
        ax.set_ylabel("validation loss")
    else:
        empty_panel(ax, "no lr-scaling runs")
        note = ""
    ax.set_title("validation loss over the lr sweep" + (f"\n{note}" if note else ""), fontsize=10)
    fig.suptitle(f"Learning-rate scaling ({_rules(sweep) if len(sweep) else 'no runs'})", fontsize=11)
    fig.tight_layout()
    return fig


@figure_function
def fig_runtime(plt, df: pd.DataFrame, *, style: Style):
    """Seconds per epoch vs batch size, and the SAM / base-optimizer cost ratio (runs of the comparisons)."""
    import seaborn as sns

    palette, order = style.palette, style.order

    runs = main_runs(df)
    fig, axes = panels(plt, 2, width=5.0)
    ax = axes[0]
    if len(runs):
        line(ax, comparable_runs(runs), "seconds_per_epoch", palette, order)
        log2_x(ax, runs["batch_size"].dropna().unique())
        log_axis(ax, "y")
        ax.set_xlabel("batch size (log₂)")
        ax.set_ylabel("seconds per epoch")
    else:
        empty_panel(ax)
    ax.set_title("training time per epoch")
    ax = axes[1]
    ratios = cost_ratios(df)
    if len(ratios):
        sns.lineplot(data=ratios, x="batch_size", y="ratio", hue="method",
                     hue_order=[m for m in order if m in set(ratios["method"])], palette=palette, marker="o",
                     errorbar=("ci", 95), n_boot=1000, seed=0, err_style="bars", err_kws={"capsize": 3}, ax=ax)
        ax.axhline(2.0, color="k", ls="--", lw=1, label="2× (two passes)")
        log2_x(ax, ratios["batch_size"].unique())
        ax.set_xlabel("batch size (log₂)")
        ax.set_ylabel("SAM / base seconds per epoch")
    else:
        empty_panel(ax, "no SAM run with a matching base run")
    ax.set_title("cost ratio SAM / base optimizer")
    finish(fig, axes, "Runtime (runs of the comparisons)")
    return fig


def _largest_sam_batch(df: pd.DataFrame) -> int | None:
    runs = main_runs(df)
    sam = in_family(runs[is_sam(runs)], "sgd")
    if not len(sam):
        sam = runs[is_sam(runs)]
    return int(sam["batch_size"].max()) if len(sam) else None


@figure_function
def fig_m_sharpness(plt, df: pd.DataFrame, *, style: Style):
    """m-sharpness at the largest SAM batch size: whole-batch vs micro-batch perturbations."""
    import seaborn as sns

    palette, measures = style.palette, style.measures

    bs = _largest_sam_batch(df)
    ys = [("test_loss", "test loss"), ("train_loss", "train loss")] + [(m, measure_label(m)) for m in measures]
    fig, axes = panels(plt, len(ys), width=3.3, height=3.6)
    runs = main_runs(df)
    if bs is not None:
        fam = runs[(runs["batch_size"] == bs)]
        opt = fam[is_sam(fam)]["optimizer"].mode()
        fam = fam[fam["optimizer"] == (opt.iloc[0] if len(opt) else "sgd")]
    else:
        fam = runs.iloc[0:0]
    # say what m is for each SAM bar: "SGD+SAM (m=B=512)" for the whole-batch perturbation
    shown = {m: m.label if m.is_base or m.m is not None else f"{m.label} (m=B={bs})" for m in method_order(fam)}
    methods_shown = list(shown.values())
    palette = {shown[m]: palette[m.label] for m in shown if m.label in palette}
    fam = fam.assign(method=[shown[m] for m in methods(fam)])
    for ax, (y, label) in zip(axes, ys):
        ok = comparable_runs(fam)
        ok = ok[np.isfinite(ok[y].astype(float))] if y in ok else ok.iloc[0:0]
        if len(ok):
            sns.barplot(data=ok, x="method", y=y, order=methods_shown, hue="method", hue_order=methods_shown,
                        palette=palette, errorbar=("ci", 95), n_boot=1000, seed=0, capsize=0.2, ax=ax, legend=False)
            state = np.random.get_state()  # seaborn jitters the points with numpy's global generator:
            np.random.seed(0)  # seeded here (and put back) so the same runs give the same figure
            try:
                sns.stripplot(data=ok, x="method", y=y, order=methods_shown, color="black", size=3, ax=ax)
            finally:
                np.random.set_state(state)
            ax.tick_params(axis="x", rotation=35, labelsize=7)
            bad = excluded(fam)
            if len(bad):
                ax.set_title(f"{label}\n({len(bad)} run(s) not ok: {', '.join(sorted(set(bad['status'])))})",
                             fontsize=8)
            else:
                ax.set_title(label)
        else:
            empty_panel(ax)
            ax.set_title(label)
        ax.set_xlabel("")
        ax.set_ylabel(label)
    title = f"m-sharpness at batch size {bs}" if bs else "m-sharpness (no SAM runs)"
    fig.suptitle(title + " (m: examples per SAM perturbation; no m = the whole batch)", fontsize=11)
    fig.tight_layout()
    return fig


@figure_function
def fig_generalization(plt, df: pd.DataFrame, *, style: Style):
    """Accuracy and generalization gaps vs batch size (runs of the comparisons)."""
    ys = [("train_accuracy", "train accuracy"), ("test_accuracy", "test accuracy"),
          ("loss_gap", "test − train loss"), ("accuracy_gap", "train − test accuracy")]
    return _vs_batch(plt, main_runs(df), ys, f"Generalization vs batch size ({_rules(main_runs(df))})", style)


@figure_function
def fig_matched(plt, df: pd.DataFrame, *, style: Style):
    """Sharpness at a matched training loss: the loss-target runs that reached their target."""
    palette, order, measures = style.palette, style.order, style.measures
    runs = matched_runs(df)
    reached = reached_target(df)
    not_reached = excluded(runs)
    ys = [("train_loss", "train loss reached")] + [(m, measure_label(m)) for m in measures]
    fig, axes = panels(plt, len(ys), width=3.8)
    for ax, (y, label) in zip(axes, ys):
        if len(reached):
            line(ax, reached, y, palette, order)
            auto_log_y(ax, reached[y].astype(float))
        else:
            empty_panel(ax, "no run reached its loss target")
        if len(runs):
            log2_x(ax, runs["batch_size"].dropna().unique())
        note = mark_bad(ax, not_reached, "batch_size", palette)
        ax.set_xlabel("batch size (log₂)")
        ax.set_ylabel(label)
        ax.set_title(label + (f"\n{note}" if note else ""), fontsize=10)
    targets = sorted(set(runs["target_loss"].dropna())) if len(runs) else []
    rule = ", ".join(f"{t:g}" for t in targets) or "none"
    finish(fig, axes, f"Sharpness at matched train loss (target_loss = {rule}; "
                       f"{len(reached)} of {len(runs)} runs reached it)")
    return fig


@figure_function
def fig_sharpness_vs_loss(plt, df: pd.DataFrame, *, style: Style):
    """Sharpness vs final train loss of every finished run."""
    import seaborn as sns

    palette, order, measures = style.palette, style.order, style.measures

    runs = comparable_runs(df)
    ys = [(m, measure_label(m)) for m in measures] or _NO_MEASURE
    fig, axes = panels(plt, len(ys), width=3.9)
    for ax, (y, label) in zip(axes, ys):
        d = runs[np.isfinite(runs[y].astype(float)) & np.isfinite(runs["train_loss"].astype(float))] if y in runs \
            else runs.iloc[0:0]
        if len(d):
            sns.scatterplot(data=d, x="train_loss", y=y, hue="method",
                            hue_order=[m for m in order if m in set(d["method"])], palette=palette,
                            size="batch_size", sizes=(15, 120), style="notebook", alpha=0.8, ax=ax)
            log_axis(ax, "x")
            auto_log_y(ax, d[y].astype(float))
        else:
            empty_panel(ax)
        ax.set_xlabel("final train loss (log)")
        ax.set_ylabel(label)
        ax.set_title(label)
    finish(fig, axes, "Sharpness vs train loss, every finished run")
    return fig


def _answer_label(row: dict[str, Any], with_dataset: bool) -> str:
    n = int(row["at"]) if row["compare_at"] == EPOCHS else None
    milestone = f"loss {row['at']:g}" if n is None else f"{n} epoch{'' if n == 1 else 's'}"
    text = f"{FAMILY_LABELS.get(row['optimizer'], row['optimizer'])} · {row['lr_rule']} lr · {milestone}"
    return f"{row['dataset']} · {text}" if with_dataset else text


def fig_answer(table: Sequence[dict[str, Any]], style: Style | None = None):
    """The headline figure: one point and 95 % CI bar per answer-table row (`answer_table.answer_table`),
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
    axes[0].set_yticklabels([_answer_label(r, many) for r in table], fontsize=8)
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
}
MATCHED_LOSS = "fig9_matched_loss"  # the figure the findings refer to for matched-loss sharpness


def number(name: str) -> int:
    """The figure's number in the report: its place in `FIGURES`, from 0 (Fig. 0, the headline figure,
    `ANSWER`), so Fig. 1–4 are the seed study's Fig. 1–4."""
    return FIGURES.index(name)


def figure(name: str, results: pd.DataFrame, style: Style | None = None, snapshots: pd.DataFrame | None = None,
           table: Sequence[dict[str, Any]] | None = None):
    """Draw the figure `name` of `FIGURES` from a results table (and the snapshots table, for the
    headline figure and the seed figures; `table`: its answer table, if at hand); returns the Figure."""
    if name == ANSWER:
        return fig_answer(table if table is not None else answer_table(snapshots), style)
    if name not in _MAKERS:
        raise ValueError(f"figure has value {name!r}; allowed: {', '.join(FIGURES)}")
    milestone = seed_milestone(snapshots) if name in SEED_FIGURES else None
    if milestone is not None:
        return _MAKERS[name](at_milestone(main_runs(snapshots), milestone), style=style or Style.of(results))
    return _MAKERS[name](results, style=style)


def make_figures(results: pd.DataFrame, out_dir: str | Path, snapshots: pd.DataFrame | None = None,
                 table: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
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
        fig = figure(name, results, style, snapshots=snapshots, table=table)
        for ext in ("png", "svg"):
            meta = {"Date": None} if ext == "svg" else None
            with matplotlib.rc_context({"svg.hashsalt": name}):
                io.atomic_write(out_dir / f"{name}.{ext}", lambda tmp, e=ext, md=meta: fig.savefig(
                    tmp, format=e, dpi=110, bbox_inches="tight", metadata=md))
        figures[name] = fig
    return figures
