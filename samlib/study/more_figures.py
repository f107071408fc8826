"""The report's further figures (Fig. 5–10 of `samlib.study.figures.FIGURES`): lr scaling, runtime,
m-sharpness, generalization, sharpness at a matched loss and sharpness vs loss. Each takes the whole
results table and returns one matplotlib Figure (`plotting.figure_function`); `figures.figure` draws
them by name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from samlib.measures import label as measure_label
from samlib.study.answer import cost_ratios
from samlib.study.plotting import (
    NO_MEASURE,
    Style,
    auto_log_y,
    empty_panel,
    figure_function,
    finish,
    line,
    log2_x,
    log_axis,
    mark_bad,
    panels,
    rules_title,
    vs_batch,
)
from samlib.study.selections import (
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
    target_of,
)


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
    fig.suptitle(f"Learning-rate scaling ({rules_title(sweep) if len(sweep) else 'no runs'})", fontsize=11)
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
    return vs_batch(plt, main_runs(df), ys, f"Generalization vs batch size ({rules_title(main_runs(df))})", style)


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
    targets = sorted({target_of(r) for r in runs["stop_rule"]} - {None}) if len(runs) else []
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
    ys = [(m, measure_label(m)) for m in measures] or NO_MEASURE
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


@figure_function
def fig_sharpness_vs_error(plt, snapshots: pd.DataFrame, *, style: Style, predictors: list | None = None):
    """Is a sharper minimum a worse one? Each sharpness measure (rows: λ_max first where measured) vs test
    error at each loss milestone (columns), every main run's comparable snapshot a point, with Kendall's
    τ and its bootstrap CI in the panel's title: `predictors`, findings.json's
    ``sharpness_vs_generalization`` if at hand (so the figure quotes the findings' very numbers), else
    `answer.sharpness_vs_generalization` of `snapshots`."""
    import seaborn as sns

    from samlib.study.answer import sharpness_vs_generalization

    entries = predictors if predictors is not None else sharpness_vs_generalization(snapshots)
    taus = {(r["milestone"], r["measure"]): r for r in entries if r["target"] == "test_error"}
    runs = main_runs(snapshots) if len(snapshots) else snapshots
    runs = runs[comparable_snapshots(runs) & (runs["kind"] == "loss")] if len(runs) else runs
    milestones = sorted({m for m, _ in taus}, key=lambda m: -float(m.split("=")[1]))
    measures = [m for m in style.measures if any(k == m for _, k in taus)] or ["weight_norm"]
    fig, axes = plt.subplots(len(measures), max(len(milestones), 1), figsize=(4.2 * max(len(milestones), 1),
                             3.4 * len(measures)), squeeze=False)
    for i, measure in enumerate(measures):
        for j, milestone in enumerate(milestones or [None]):
            ax = axes[i][j]
            tau = taus.get((milestone, measure))
            d = runs[(runs["milestone"] == milestone)] if milestone else runs.iloc[0:0]
            d = d[np.isfinite(d[measure].astype(float))] if measure in d else d.iloc[0:0]
            if tau is None or not len(d):
                empty_panel(ax)
                continue
            d = d.assign(method=[m.label for m in methods(d)])
            sns.scatterplot(data=d, x=measure, y="test_error", hue="method", palette=style.palette,
                            hue_order=[m for m in style.order if m in set(d["method"])], size="batch_size",
                            sizes=(15, 120), alpha=0.8, ax=ax, legend=(i == 0 and j == len(milestones) - 1))
            if ax.get_legend() is not None:
                sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
            log_axis(ax, "x")
            ci = "" if tau["lo"] is None else f" ({tau['lo']:+.2f} to {tau['hi']:+.2f})"
            value = "undefined" if tau["tau"] is None else f"{tau['tau']:+.2f}{ci}"
            ax.set_title(f"{milestone}: τ = {value}, {tau['n_runs']} runs", fontsize=9)
            ax.set_xlabel(f"{measure_label(measure)} (log)")
            ax.set_ylabel("test error")
    fig.suptitle("Sharpness vs test error at the same training loss (Kendall τ, bootstrap 95 % CI)", fontsize=11)
    fig.tight_layout()
    return fig
