"""The study's drawing kit, shared by the summary's figures (`samlib.study.figures`) and a cell's plots
(`samlib.study.cellview`): the seaborn theme, a `Style` (method order, a colour per method, the
measures) per results table, log axes with plain labels, empty panels, the ✕ marks of runs that did not
finish ok, and panels with one legend below.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from samlib.io import present as _present
from samlib.study.selections import comparable_runs, excluded, measures_in, method_order


def setup_matplotlib():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    return plt, sns


@dataclasses.dataclass(frozen=True)
class Style:
    """What every figure of one table shares: the method labels in `selections.method_order` (the
    order of their fields), a colour per label, the measures."""

    order: list[str]
    palette: dict[str, Any]
    measures: list[str]

    @classmethod
    def of(cls, results: pd.DataFrame) -> "Style":
        import seaborn as sns

        order = [m.label for m in method_order(results)] if len(results) else []
        colors = sns.color_palette("tab10", 10)
        return cls(order, {m: colors[i % 10] for i, m in enumerate(order)}, measures_in(results))


def figure_function(function: Callable[..., Any]) -> Callable[..., Any]:
    """A public figure: `style` defaults to the table's own; the Figure is closed in pyplot (a notebook
    shows it once, as the cell's value, and nothing accumulates in pyplot's figure list)."""

    @functools.wraps(function)
    def draw(results: pd.DataFrame, *args: Any, style: Style | None = None, **kwargs: Any):
        plt, _ = setup_matplotlib()
        fig = function(plt, results, *args, style=style or Style.of(results), **kwargs)
        plt.close(fig)
        return fig

    return draw


def log2_x(ax, values: Iterable[float]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    ticks = sorted({float(v) for v in values if _present(v) and v > 0})
    ax.set_xscale("log", base=2)
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        pad = 2 ** 0.3
        ax.set_xlim(ticks[0] / pad, ticks[-1] * pad)


def log_axis(ax, which: str = "y") -> None:
    """Log scale with plain tick labels (1, 2, 5 per decade) instead of crowded 3×10⁻¹ minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def auto_log_y(ax, values: pd.Series) -> None:
    v = values[np.isfinite(values)]
    if len(v) and (v > 0).all() and v.max() / v.min() > 30:
        log_axis(ax, "y")


def empty_panel(ax, text: str = "no runs for this panel") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def mark_bad(ax, bad: pd.DataFrame, x: str, palette: Mapping[str, Any]) -> str:
    """Draw ✕ at the top of `ax` (one row per method) for the runs that did not finish ok (diverged,
    failed, missing, target not reached); returns a note like '✕ 2 diverged' for the panel title."""
    import matplotlib.transforms as mtransforms

    if bad is None or not len(bad):
        return ""
    trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    methods = list(dict.fromkeys(bad["method"]))
    for (xv, method), group in bad.groupby([x, "method"], dropna=False):
        if not _present(xv):
            continue
        y = 0.95 - 0.07 * methods.index(method)
        ax.plot([xv], [y], marker="X", markersize=8, color=palette.get(method, "red"), markeredgecolor="black",
                transform=trans, clip_on=False, linestyle="none")
        if len(group) > 1:
            ax.annotate(f"{len(group)}", (xv, y), xycoords=trans, xytext=(5, -3), textcoords="offset points",
                        fontsize=7, color="0.2")
    counts = bad["status"].value_counts()
    return "✕ " + ", ".join(f"{n} {status}" for status, n in counts.items())


def line(ax, data: pd.DataFrame, y: str, palette, order, x: str = "batch_size", style: str | None = None) -> None:
    import seaborn as sns

    ok = data[np.isfinite(data[y].astype(float))] if len(data) and y in data else data.iloc[0:0]
    if not len(ok):
        empty_panel(ax, f"no finished runs with {y}")
        return
    sns.lineplot(data=ok, x=x, y=y, hue="method", hue_order=[m for m in order if m in set(ok["method"])],
                 palette=palette, style=style, markers=True, dashes=False if style is None else True,
                 marker="o" if style is None else None,
                 errorbar=("ci", 95), n_boot=1000, seed=0, err_style="bars", err_kws={"capsize": 3},
                 ax=ax)


def panels(plt, n: int, width: float = 4.2, height: float = 3.4, sharey: bool = False):
    fig, axes = plt.subplots(1, max(n, 1), figsize=(width * max(n, 1), height), sharey=sharey, squeeze=False)
    return fig, list(axes[0])


def finish(fig, axes, title: str, legend: bool = True) -> None:
    handles, labels = [], []
    for ax in axes:
        leg = ax.get_legend()
        if leg is not None:
            for h, t in zip(leg.legend_handles, [t.get_text() for t in leg.get_texts()]):
                if t not in labels:
                    handles.append(h)
                    labels.append(t)
            leg.remove()
    if legend and handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 6),
                   frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()


def vs_batch(plt, df: pd.DataFrame, ys: Sequence[tuple[str, str]], title: str, style: Style):
    """One panel per (column, label) of `ys` vs batch size (log₂): each method's mean and CI over its
    comparable runs, the others marked ✕."""
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


def rules_title(df: pd.DataFrame) -> str:
    """'stop rule: …' of a figure's title: the stop rules of the runs in `df`."""
    rules = sorted(set(df["stop_rule"].dropna())) if len(df) else []
    return "stop rule: " + (", ".join(rules) if rules else "n/a")


NO_MEASURE = [("sharpness", "sharpness")]  #: the one panel of a sharpness figure when nothing was measured
