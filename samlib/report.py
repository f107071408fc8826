"""The study's summary: everything here is read from what the runs wrote; nothing is trained.

`collect(study_dir)` gathers one row per run (``runs/<notebook>/<batch_size>/<run>/`` with
``config.json``, ``metrics.json``, ``history.csv``, as `samlib.train` and `samlib.experiment` write
them), plus a row for every run that ``study.json`` planned but nobody wrote (status ``missing``).
`make_report(study_dir)` writes from that table:

    results.csv        one row per run (see `COLUMNS`), diverged / failed / missing runs included
    figures/*.png|svg  the figures of `FIGURES`, every one mean ± 95 % CI over seeds
    findings.json      the numbers of the findings paragraph (mean, t-based 95 % CI, n)
    report.html        figures (embedded), the parameters and stop rules that made them, findings

Statistics. Figures use seaborn's bootstrap CI (``errorbar=("ci", 95)``, 1,000 resamples, seed 0)
over seeds. The findings use the t-based interval mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (s with ddof=1; no
interval for n < 2), computed by `mean_ci`. Diverged runs (non-finite loss) never enter a mean; they
are drawn as ✕ at the top of the panel where they belong and listed in the report.

This module does not import TensorFlow (except `ensure_study`, which may have to train a demo).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io as _io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from samlib import io

# --------------------------------------------------------------------------------------- constants
RUN_FILES = ("config.json", "metrics.json", "history.csv")
N_TRAIN = {"mnist5k": 4000, "mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000}
LR_NOTEBOOK = "lr_scaling"
SGD_FAMILY = ("sgd", "momentum")
ADAM_FAMILY = ("adam", "adamw")
OK = "ok"
MEASURE_LABELS = {
    "lambda_max": "Hessian λ_max",
    "hessian_trace": "Hessian trace",
    "sam_sharpness": "SAM sharpness f(w+ε̂)−f(w)",
}
FIGURES = (
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
CAPTIONS = {
    "fig1_sgd_loss": "Train and test loss vs batch size, SGD without / with SAM (step-budget runs).",
    "fig2_sgd_sharpness": "Sharpness vs batch size, SGD without / with SAM (one panel per measure; "
    "y-axes not shared).",
    "fig3_adam_loss": "Train and test loss vs batch size, Adam without / with SAM.",
    "fig4_adam_sharpness": "Sharpness vs batch size, Adam without / with SAM.",
    "fig5_lr_scaling": "Learning-rate scaling: the best effective lr (lowest test loss, chosen per seed) "
    "vs batch size against the linear- and square-root-scaling lines through the smallest batch's "
    "best lr (left); test loss over the lr sweep (right).",
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
COLUMNS = [
    "notebook", "run", "method", "optimizer", "sam", "rho", "m", "batch_size", "lr", "lr_base",
    "lr_scaling", "base_batch_size", "warmup_epochs", "seed", "epochs", "steps", "steps_budget",
    "epochs_max", "target_loss", "stop_rule", "stop_reason", "status", "train_loss", "test_loss",
    "train_accuracy", "test_accuracy", "loss_gap", "accuracy_gap",
]  # then the sharpness measures, then TAIL
TAIL = [
    "wall_seconds", "train_seconds", "step_seconds", "seconds_per_epoch", "samples_per_second",
    "sharpness_seconds", "sharpness_subset", "dataset", "n_train", "reused_from", "error", "run_dir",
]
_OPT = {"sgd": "SGD", "momentum": "SGD+momentum", "adam": "Adam", "adamw": "AdamW"}
_SAM = {"sam": "SAM", "asam": "ASAM", "looksam": "LookSAM"}


# ============================================================================ one run
def is_measure(key: str) -> bool:
    """A sharpness value key of `samlib.sharpness.measure` (not its timing or iteration count)."""
    return bool(re.fullmatch(r"keskar_[0-9.e+-]+(_p\d+)?|lambda_max|hessian_trace|sam_sharpness", key))


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


def method_label(optimizer: str, sam: str, m: Any = None) -> str:
    """'SGD', 'SGD+SAM', 'SGD+SAM (m=32)', 'Adam+ASAM', ... (m as configured; None = whole batch)."""
    label = _OPT.get(optimizer, str(optimizer))
    if sam in (None, "none") or (isinstance(sam, float) and math.isnan(sam)):
        return label
    label += "+" + _SAM.get(sam, str(sam))
    if _present(m):
        label += f" (m={int(m)})"
    return label


def stop_rule(config: Mapping[str, Any]) -> str:
    """How a run was told to stop: 'steps=64', 'target_loss=0.5 (cap 64 steps)', 'epochs=5'."""
    steps, target, epochs = config.get("steps"), config.get("target_loss"), config.get("epochs")
    if _present(target):
        cap = f"cap {int(steps)} steps" if _present(steps) else f"cap {int(epochs)} epochs"
        return f"target_loss={float(target):g} ({cap})"
    if _present(steps):
        return f"steps={int(steps)}"
    return f"epochs={epochs}"


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _step_seconds(history: pd.DataFrame | None, metrics: Mapping[str, Any]) -> float:
    """Seconds per optimizer step, from epochs after the first (which includes graph tracing) when
    the run has more than one epoch; else the whole training time over the steps."""
    if history is not None and len(history) >= 2 and {"epoch_seconds", "steps"} <= set(history):
        steps = float(history["steps"].iloc[-1] - history["steps"].iloc[0])
        if steps > 0:
            return float(history["epoch_seconds"].iloc[1:].sum()) / steps
    seconds, steps = _num(metrics.get("train_seconds")), _num(metrics.get("steps"))
    return seconds / steps if steps and steps > 0 else math.nan


def run_record(run_dir: str | Path, notebook: str | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """One run folder as a flat dict of the `COLUMNS` (+ any sharpness measures it holds).

    Missing or unreadable files never raise: a folder without metrics.json is status ``missing``, one
    whose metrics still say ``running`` is ``incomplete`` (killed, or still training).
    """
    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json")
    metrics = _read_json(run_dir / "metrics.json")
    history = None
    if (run_dir / "history.csv").is_file():
        try:
            history = pd.read_csv(run_dir / "history.csv")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            history = None
    status = metrics.get("status") if metrics else "missing"
    if status == "running":
        status = "incomplete"
    bs = config.get("batch_size", batch_size)
    lr_base = config.get("lr")
    lr_eff = metrics.get("lr_effective")
    if not _present(lr_eff) and lr_base is not None and bs:
        ratio = bs / config.get("base_batch_size", 128)
        scale = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}
        lr_eff = lr_base * scale.get(config.get("lr_scaling", "none"), 1.0)
    dataset = config.get("dataset")
    n_train = metrics.get("n_train") or N_TRAIN.get(dataset)
    step_s = _step_seconds(history, metrics)
    per_epoch = step_s * math.ceil(n_train / bs) if n_train and bs and math.isfinite(step_s) else math.nan
    row: dict[str, Any] = {
        "notebook": notebook if notebook is not None else run_dir.parent.parent.name,
        "run": run_dir.name,
        "method": method_label(config.get("optimizer", "?"), config.get("sam", "none"), config.get("m")),
        "optimizer": config.get("optimizer"),
        "sam": config.get("sam"),
        "rho": config.get("rho"),
        "m": config.get("m"),
        "batch_size": bs,
        "lr": lr_eff,
        "lr_base": lr_base,
        "lr_scaling": config.get("lr_scaling"),
        "base_batch_size": config.get("base_batch_size"),
        "warmup_epochs": config.get("warmup_epochs"),
        "seed": config.get("seed", _seed_from_name(run_dir.name)),
        "epochs": metrics.get("epochs_run"),
        "steps": metrics.get("steps"),
        "steps_budget": config.get("steps"),
        "epochs_max": config.get("epochs"),
        "target_loss": config.get("target_loss"),
        "stop_rule": stop_rule(config) if config else None,
        "stop_reason": metrics.get("stop_reason"),
        "status": status,
        "train_loss": _num(metrics.get("train_loss")),
        "test_loss": _num(metrics.get("test_loss")),
        "train_accuracy": _num(metrics.get("train_accuracy")),
        "test_accuracy": _num(metrics.get("test_accuracy")),
        "wall_seconds": _num(metrics.get("wall_seconds")),
        "train_seconds": _num(metrics.get("train_seconds")),
        "step_seconds": step_s,
        "seconds_per_epoch": per_epoch,
        "samples_per_second": _num(metrics.get("samples_per_second")),
        "sharpness_seconds": _num(metrics.get("sharpness_seconds")),
        "sharpness_subset": metrics.get("sharpness_subset"),
        "dataset": dataset,
        "n_train": n_train,
        "reused_from": metrics.get("reused_from"),
        "error": metrics.get("error") or metrics.get("sharpness_error"),
        "run_dir": str(run_dir),
    }
    row["loss_gap"] = row["test_loss"] - row["train_loss"]
    row["accuracy_gap"] = row["train_accuracy"] - row["test_accuracy"]
    for key, value in metrics.items():
        if is_measure(key):
            row[key] = _num(value)
    return row


def _seed_from_name(name: str) -> int | None:
    match = re.search(r"seed=(\d+)$", name)
    return int(match.group(1)) if match else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = io.read_json(path)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# ============================================================================ the whole study
def run_dirs(study_dir: str | Path) -> list[Path]:
    """Every run folder under ``study_dir/runs/<notebook>/<batch_size>/`` holding any run file."""
    root = Path(study_dir) / "runs"
    if not root.is_dir():
        return []
    found = []
    for nb in sorted(p for p in root.iterdir() if p.is_dir()):
        for cell in sorted(p for p in nb.iterdir() if p.is_dir()):
            for run in sorted(p for p in cell.iterdir() if p.is_dir()):
                if any((run / f).exists() for f in RUN_FILES):
                    found.append(run)
    return found


def read_study(study_dir: str | Path) -> dict[str, Any]:
    """``study.json`` as the runner wrote it ({} when absent, e.g. for a notebook's own runs)."""
    return _read_json(Path(study_dir) / "study.json")


def collect(study_dir: str | Path) -> pd.DataFrame:
    """One row per run of the study, in `COLUMNS` order then the sharpness measures then `TAIL`.

    Runs that ``study.json`` planned but that have no folder get a row with status ``missing``; every
    row also has ``cell_status`` (the runner's status.json of its cell: ok / failed / running).
    """
    study_dir = Path(study_dir)
    rows = []
    seen: set[str] = set()
    for run in run_dirs(study_dir):
        nb, bs = run.parent.parent.name, run.parent.name
        rows.append(run_record(run, nb, int(bs) if bs.isdigit() else None))
        seen.add(str(run.resolve()))
    for cell in read_study(study_dir).get("cells", []):
        for planned in cell.get("runs", []):
            # where the run lives now (the study folder may have been moved since study.json was written)
            path = study_dir / "runs" / cell["notebook"] / str(cell["batch_size"]) / Path(planned["run_dir"]).name
            if str(path.resolve()) in seen:
                continue
            row = run_record(path, cell["notebook"], cell["batch_size"])
            study = read_study(study_dir)
            base = {**study.get("base", {}), **study.get("notebooks", {}).get(cell["notebook"], {}).get("base", {}),
                    **planned.get("point", {})}
            row.update(seed=planned.get("seed"), batch_size=cell["batch_size"], optimizer=base.get("optimizer", "sgd"),
                       sam=base.get("sam", "none"), m=base.get("m"), rho=base.get("rho", 0.05))
            row["method"] = method_label(row["optimizer"], row["sam"], row["m"])
            row["stop_rule"] = stop_rule(base)
            row["target_loss"] = base.get("target_loss")
            rows.append(row)
    measures = _measure_order(k for r in rows for k in r if is_measure(k))
    columns = COLUMNS + measures + TAIL
    df = pd.DataFrame(rows, columns=columns + ["cell_status"])
    df["cell_status"] = [_cell_status(Path(r)) for r in df["run_dir"]]
    if len(df):
        df = df.sort_values(["notebook", "batch_size", "run"], kind="stable").reset_index(drop=True)
    return df


def _cell_status(run_dir: Path) -> str | None:
    return _read_json(run_dir.parent / "status.json").get("status")


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


def family(df: pd.DataFrame, optimizers: Sequence[str]) -> pd.DataFrame:
    return df[df["optimizer"].isin(optimizers)]


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == OK]


def _method_order(methods: Iterable[str]) -> list[str]:
    def rank(m: str) -> tuple:
        base = m.split("+")[0]
        fam = list(_OPT.values()).index(base) if base in _OPT.values() else 9
        has_m = "(m=" in m
        mval = int(re.search(r"m=(\d+)", m).group(1)) if has_m else 0
        return (fam, "+" in m, -mval if has_m else -10**9, m)

    return sorted(set(methods), key=rank)


# ============================================================================ figures
def _setup_matplotlib():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    return plt, sns


def _palette(methods: Sequence[str]) -> dict[str, Any]:
    import seaborn as sns

    colors = sns.color_palette("tab10", 10)
    return {m: colors[i % 10] for i, m in enumerate(methods)}


def _log2_x(ax, values: Iterable[float]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    ticks = sorted({float(v) for v in values if _present(v) and v > 0})
    ax.set_xscale("log", base=2)
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        pad = 2 ** 0.3
        ax.set_xlim(ticks[0] / pad, ticks[-1] * pad)


def _log_axis(ax, which: str = "y") -> None:
    """Log scale with plain tick labels (1, 2, 5 per decade) instead of crowded 3×10⁻¹ minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _auto_log_y(ax, values: pd.Series) -> None:
    v = values[np.isfinite(values)]
    if len(v) and (v > 0).all() and v.max() / v.min() > 30:
        _log_axis(ax, "y")


def _empty(ax, text: str = "no runs for this panel") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _mark_bad(ax, bad: pd.DataFrame, x: str, palette: Mapping[str, Any]) -> str:
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


def _line(ax, data: pd.DataFrame, y: str, palette, order, x: str = "batch_size", style: str | None = None) -> None:
    import seaborn as sns

    ok = data[np.isfinite(data[y].astype(float))] if len(data) and y in data else data.iloc[0:0]
    if not len(ok):
        _empty(ax, f"no finished runs with {y}")
        return
    sns.lineplot(data=ok, x=x, y=y, hue="method", hue_order=[m for m in order if m in set(ok["method"])],
                 palette=palette, style=style, markers=True, dashes=False if style is None else True,
                 marker="o" if style is None else None,
                 errorbar=("ci", 95), n_boot=1000, seed=0, err_style="bars", err_kws={"capsize": 3},
                 ax=ax)


def _panels(plt, n: int, width: float = 4.2, height: float = 3.4, sharey: bool = False):
    fig, axes = plt.subplots(1, max(n, 1), figsize=(width * max(n, 1), height), sharey=sharey, squeeze=False)
    return fig, list(axes[0])


def _finish(fig, axes, title: str, legend: bool = True) -> None:
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


def _vs_batch(plt, df: pd.DataFrame, ys: Sequence[tuple[str, str]], title: str, palette, order):
    fig, axes = _panels(plt, len(ys))
    bs_all = df["batch_size"].dropna().unique() if len(df) else []
    for ax, (y, label) in zip(axes, ys):
        if not len(df):
            _empty(ax)
            ax.set_title(label)
            continue
        _line(ax, _ok(df), y, palette, order)
        _log2_x(ax, bs_all)
        if y in df:
            _auto_log_y(ax, _ok(df)[y].astype(float))
        note = _mark_bad(ax, df[df["status"] != OK], "batch_size", palette)
        ax.set_xlabel("batch size (log₂)")
        ax.set_ylabel(label)
        ax.set_title(label + (f"\n{note}" if note else ""), fontsize=10)
    _finish(fig, axes, title)
    return fig


def fig_loss(plt, df: pd.DataFrame, family_name: str, palette, order):
    return _vs_batch(plt, df, [("train_loss", "train loss"), ("test_loss", "test loss")],
                     f"{family_name}: loss vs batch size ({_rules(df)})", palette, order)


def fig_sharpness(plt, df: pd.DataFrame, measures: Sequence[str], family_name: str, palette, order):
    ys = [(m, measure_label(m)) for m in measures] or [("sam_sharpness", "sharpness")]
    return _vs_batch(plt, df, ys, f"{family_name}: sharpness vs batch size ({_rules(df)})", palette, order)


def _rules(df: pd.DataFrame) -> str:
    rules = sorted(set(df["stop_rule"].dropna())) if len(df) else []
    return "stop rule: " + (", ".join(rules) if rules else "n/a")


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


def fig_lr_scaling(plt, df: pd.DataFrame, palette, order):
    import seaborn as sns

    fig, axes = _panels(plt, 2, width=5.2, height=3.8)
    sweep = df[df["notebook"] == LR_NOTEBOOK]
    best = best_lr(df)
    ax = axes[0]
    if len(best):
        sns.lineplot(data=best, x="batch_size", y="lr", hue="method",
                     hue_order=[m for m in order if m in set(best["method"])], palette=palette, marker="o",
                     errorbar=("ci", 95), n_boot=1000, seed=0, err_style="bars", err_kws={"capsize": 3}, ax=ax)
        bss = np.array(sorted(best["batch_size"].unique()), dtype=float)
        ref_bs = bss[0]
        ref = best[best["batch_size"] == ref_bs]
        ref = ref[ref["method"] == _method_order(ref["method"])[0]]["lr"].mean()
        grid_bs = np.geomspace(bss[0], bss[-1], 50)
        ax.plot(grid_bs, ref * grid_bs / ref_bs, "k--", lw=1, label="linear scaling (lr ∝ B)")
        ax.plot(grid_bs, ref * np.sqrt(grid_bs / ref_bs), "k:", lw=1, label="sqrt scaling (lr ∝ √B)")
        _log2_x(ax, bss)
        ax.set_yscale("log", base=2)
        ax.legend(fontsize=7)
        ax.set_xlabel("batch size (log₂)")
        ax.set_ylabel("best effective lr (log₂)")
    else:
        _empty(ax, "no lr-scaling runs")
    ax.set_title("best lr vs batch size")
    ax = axes[1]
    if len(sweep):
        ok = _ok(sweep)
        ok = ok[np.isfinite(ok["test_loss"].astype(float))]
        if len(ok):
            sns.lineplot(data=ok.assign(B=ok["batch_size"].astype(int).astype(str)), x="lr", y="test_loss",
                         hue="B", hue_order=[str(b) for b in sorted(ok["batch_size"].astype(int).unique())],
                         palette="viridis", style="method", markers=True, errorbar=("ci", 95), n_boot=1000, seed=0,
                         err_style="bars", ax=ax)
            ax.set_xscale("log", base=2)
            _auto_log_y(ax, ok["test_loss"].astype(float))
            ax.legend(fontsize=7, title="batch size / method", title_fontsize=7)
        note = _mark_bad(ax, sweep[sweep["status"] != OK], "lr", palette)
        ax.set_xlabel("effective lr (log₂)")
        ax.set_ylabel("test loss")
    else:
        _empty(ax, "no lr-scaling runs")
        note = ""
    ax.set_title("test loss over the lr sweep" + (f"\n{note}" if note else ""), fontsize=10)
    fig.suptitle(f"Learning-rate scaling ({_rules(sweep) if len(sweep) else 'no runs'})", fontsize=11)
    fig.tight_layout()
    return fig


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


def fig_runtime(plt, df: pd.DataFrame, palette, order):
    import seaborn as sns

    runs = main_runs(df)
    fig, axes = _panels(plt, 2, width=5.0)
    ax = axes[0]
    if len(runs):
        _line(ax, _ok(runs), "seconds_per_epoch", palette, order)
        _log2_x(ax, runs["batch_size"].dropna().unique())
        _log_axis(ax, "y")
        ax.set_xlabel("batch size (log₂)")
        ax.set_ylabel("seconds per epoch")
    else:
        _empty(ax)
    ax.set_title("training time per epoch")
    ax = axes[1]
    ratios = cost_ratios(df)
    if len(ratios):
        sns.lineplot(data=ratios, x="batch_size", y="ratio", hue="method",
                     hue_order=[m for m in order if m in set(ratios["method"])], palette=palette, marker="o",
                     errorbar=("ci", 95), n_boot=1000, seed=0, err_style="bars", err_kws={"capsize": 3}, ax=ax)
        ax.axhline(2.0, color="k", ls="--", lw=1, label="2× (two passes)")
        _log2_x(ax, ratios["batch_size"].unique())
        ax.set_xlabel("batch size (log₂)")
        ax.set_ylabel("SAM / base seconds per epoch")
    else:
        _empty(ax, "no SAM run with a matching base run")
    ax.set_title("cost ratio SAM / base optimizer")
    _finish(fig, axes, "Runtime (step-budget runs)")
    return fig


def _largest_sam_batch(df: pd.DataFrame) -> int | None:
    sam = main_runs(df)
    sam = sam[(sam["sam"] != "none") & sam["optimizer"].isin(SGD_FAMILY)]
    if not len(sam):
        sam = main_runs(df)[main_runs(df)["sam"] != "none"]
    return int(sam["batch_size"].max()) if len(sam) else None


def fig_m_sharpness(plt, df: pd.DataFrame, measures: Sequence[str], palette, order):
    import seaborn as sns

    bs = _largest_sam_batch(df)
    ys = [("test_loss", "test loss"), ("train_loss", "train loss")] + [(m, measure_label(m)) for m in measures]
    fig, axes = _panels(plt, len(ys), width=3.3, height=3.6)
    runs = main_runs(df)
    if bs is not None:
        fam = runs[(runs["batch_size"] == bs)]
        opt = fam[fam["sam"] != "none"]["optimizer"].mode()
        fam = fam[fam["optimizer"] == (opt.iloc[0] if len(opt) else "sgd")]
    else:
        fam = runs.iloc[0:0]
    # say what m is for each SAM bar: "SGD+SAM (m=B=512)" for the whole-batch perturbation
    def whole(m: str) -> str:
        return f"{m} (m=B={bs})" if "+" in m and "(m=" not in m else m

    methods = [whole(m) for m in order if m in set(fam["method"])]
    fam = fam.assign(method=[whole(m) for m in fam["method"]])
    palette = {whole(m): c for m, c in palette.items()}
    for ax, (y, label) in zip(axes, ys):
        ok = _ok(fam)
        ok = ok[np.isfinite(ok[y].astype(float))] if y in ok else ok.iloc[0:0]
        if len(ok):
            sns.barplot(data=ok, x="method", y=y, order=methods, hue="method", hue_order=methods, palette=palette,
                        errorbar=("ci", 95), n_boot=1000, seed=0, capsize=0.2, ax=ax, legend=False)
            sns.stripplot(data=ok, x="method", y=y, order=methods, color="black", size=3, ax=ax)
            ax.tick_params(axis="x", rotation=35, labelsize=7)
            bad = fam[fam["status"] != OK]
            if len(bad):
                ax.set_title(f"{label}\n({len(bad)} run(s) not ok: {', '.join(sorted(set(bad['status'])))})",
                             fontsize=8)
            else:
                ax.set_title(label)
        else:
            _empty(ax)
            ax.set_title(label)
        ax.set_xlabel("")
        ax.set_ylabel(label)
    title = f"m-sharpness at batch size {bs}" if bs else "m-sharpness (no SAM runs)"
    fig.suptitle(title + " (m: examples per SAM perturbation; no m = the whole batch)", fontsize=11)
    fig.tight_layout()
    return fig


def fig_generalization(plt, df: pd.DataFrame, palette, order):
    ys = [("train_accuracy", "train accuracy"), ("test_accuracy", "test accuracy"),
          ("loss_gap", "test − train loss"), ("accuracy_gap", "train − test accuracy")]
    return _vs_batch(plt, main_runs(df), ys, f"Generalization vs batch size ({_rules(main_runs(df))})",
                     palette, order)


def fig_matched(plt, df: pd.DataFrame, measures: Sequence[str], palette, order):
    runs = matched_runs(df)
    reached = runs[(runs["status"] == OK) & (runs["stop_reason"] == "target_loss")]
    not_reached = runs[~runs.index.isin(reached.index)].copy()
    not_reached["status"] = [s if s != OK else "target not reached" for s in not_reached["status"]]
    ys = [("train_loss", "train loss reached")] + [(m, measure_label(m)) for m in measures]
    fig, axes = _panels(plt, len(ys), width=3.8)
    for ax, (y, label) in zip(axes, ys):
        if len(reached):
            _line(ax, reached, y, palette, order)
            _auto_log_y(ax, reached[y].astype(float))
        else:
            _empty(ax, "no run reached its loss target")
        if len(runs):
            _log2_x(ax, runs["batch_size"].dropna().unique())
        note = _mark_bad(ax, not_reached, "batch_size", palette)
        ax.set_xlabel("batch size (log₂)")
        ax.set_ylabel(label)
        ax.set_title(label + (f"\n{note}" if note else ""), fontsize=10)
    targets = sorted(set(runs["target_loss"].dropna())) if len(runs) else []
    rule = ", ".join(f"{t:g}" for t in targets) or "none"
    _finish(fig, axes, f"Sharpness at matched train loss (target_loss = {rule}; "
                       f"{len(reached)} of {len(runs)} runs reached it)")
    return fig


def fig_sharpness_vs_loss(plt, df: pd.DataFrame, measures: Sequence[str], palette, order):
    import seaborn as sns

    runs = _ok(df)
    ys = [(m, measure_label(m)) for m in measures] or [("sam_sharpness", "sharpness")]
    fig, axes = _panels(plt, len(ys), width=3.9)
    for ax, (y, label) in zip(axes, ys):
        d = runs[np.isfinite(runs[y].astype(float)) & np.isfinite(runs["train_loss"].astype(float))] if y in runs \
            else runs.iloc[0:0]
        if len(d):
            sns.scatterplot(data=d, x="train_loss", y=y, hue="method",
                            hue_order=[m for m in order if m in set(d["method"])], palette=palette,
                            size="batch_size", sizes=(15, 120), style="notebook", alpha=0.8, ax=ax)
            _log_axis(ax, "x")
            _auto_log_y(ax, d[y].astype(float))
        else:
            _empty(ax)
        ax.set_xlabel("final train loss (log)")
        ax.set_ylabel(label)
        ax.set_title(label)
    _finish(fig, axes, "Sharpness vs train loss, every finished run")
    return fig


def make_figures(df: pd.DataFrame, out_dir: str | Path, close: bool = True) -> dict[str, Any]:
    """Every figure of `FIGURES` as ``out_dir/<name>.png`` and ``.svg``; returns name -> Figure."""
    plt, _ = _setup_matplotlib()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = _method_order(df["method"].dropna()) if len(df) else []
    palette = _palette(order)
    measures = measures_in(df)
    main = main_runs(df)
    sgd, adam = family(main, SGD_FAMILY), family(main, ADAM_FAMILY)
    makers = {
        "fig1_sgd_loss": lambda: fig_loss(plt, sgd, "SGD without / with SAM", palette, order),
        "fig2_sgd_sharpness": lambda: fig_sharpness(plt, sgd, measures, "SGD without / with SAM", palette, order),
        "fig3_adam_loss": lambda: fig_loss(plt, adam, "Adam without / with SAM", palette, order),
        "fig4_adam_sharpness": lambda: fig_sharpness(plt, adam, measures, "Adam without / with SAM", palette,
                                                     order),
        "fig5_lr_scaling": lambda: fig_lr_scaling(plt, df, palette, order),
        "fig6_runtime": lambda: fig_runtime(plt, df, palette, order),
        "fig7_m_sharpness": lambda: fig_m_sharpness(plt, df, measures, palette, order),
        "fig8_generalization": lambda: fig_generalization(plt, df, palette, order),
        "fig9_matched_loss": lambda: fig_matched(plt, df, measures, palette, order),
        "fig10_sharpness_vs_loss": lambda: fig_sharpness_vs_loss(plt, df, measures, palette, order),
    }
    figures = {}
    for name in FIGURES:
        fig = makers[name]()
        for ext in ("png", "svg"):
            io.atomic_write(out_dir / f"{name}.{ext}",
                            lambda tmp, e=ext: fig.savefig(tmp, format=e, dpi=110, bbox_inches="tight"))
        figures[name] = fig
        if close:
            plt.close(fig)
    return figures


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
    reached = matched[(matched["status"] == OK) & (matched["stop_reason"] == "target_loss")]
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


def headline(f: Mapping[str, Any]) -> str:
    """A short paragraph of the main numbers (each computed in `compute_findings`)."""
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
                     + (f" (compared at batch size {m['batch_size']} in Fig. 9)." if m.get("methods") else "."))
    bad = f.get("not_ok", [])
    parts.append(f"{len(bad)} of {f.get('n_runs', 0)} runs did not finish ok." if bad else
                 f"All {f.get('n_runs', 0)} runs finished ok.")
    return " ".join(parts)


def _overlap(a: Mapping[str, float], b: Mapping[str, float]) -> bool | None:
    if not (np.isfinite(a["lo"]) and np.isfinite(b["lo"])):
        return None
    return bool(a["lo"] <= b["hi"] and b["lo"] <= a["hi"])


# ============================================================================ the report
@dataclasses.dataclass
class Report:
    study_dir: Path
    results: pd.DataFrame
    figures: dict[str, Path]  # name -> png
    findings: dict[str, Any]
    text: list[str]
    html: Path

    @property
    def files(self) -> list[str]:
        """Everything the report wrote, relative to the study folder, sorted."""
        names = [f"figures/{n}.{e}" for n in self.figures for e in ("png", "svg")]
        return sorted(names + ["findings.json", "report.html", "results.csv"])

    def _repr_html_(self) -> str:
        return _html_body(self, embed=True)


def make_report(study_dir: str | Path) -> Report:
    """Write results.csv, figures/, findings.json and report.html for `study_dir` (module doc)."""
    study_dir = Path(study_dir)
    df = collect(study_dir)
    io.write_text(study_dir / "results.csv", df.to_csv(index=False))
    make_figures(df, study_dir / "figures")
    findings = compute_findings(df)
    text = findings_text(findings)
    io.write_json(study_dir / "findings.json", {**findings, "headline": headline(findings), "text": text})
    figures = {name: study_dir / "figures" / f"{name}.png" for name in FIGURES}
    rep = Report(study_dir, df, figures, findings, text, study_dir / "report.html")
    io.write_text(rep.html, "<!doctype html>\n<html><head><meta charset='utf-8'>"
                  f"<title>SAM study: {html.escape(study_dir.name)}</title>{_CSS}</head><body>"
                  + _html_body(rep, embed=True) + "</body></html>\n")
    return rep


_CSS = """<style>
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}
figure{margin:1.5em 0}figcaption{font-size:13px;color:#444}img{max-width:100%}
.findings li{margin:.3em 0}
</style>"""


def _html_body(rep: Report, embed: bool = True) -> str:
    study = read_study(rep.study_dir)
    params = {k: study[k] for k in ("study", "description", "seeds", "base", "sharpness", "notebooks", "summary")
              if k in study}
    parts = [f"<h1>Does SAM rescue large-batch training? — study <code>{html.escape(rep.study_dir.name)}</code></h1>"]
    if study.get("description"):
        parts.append(f"<p>{html.escape(study['description'])}</p>")
    parts.append(f"<h2>Findings</h2><p>{html.escape(headline(rep.findings))}</p><h3>Details</h3>"
                 "<ul class='findings'>" + "".join(f"<li>{html.escape(t)}</li>" for t in rep.text) + "</ul>")
    parts.append("<p><small>Findings: mean and t-based 95 % CI over seeds (mean ± t·s/√n). Figures: mean and "
                 "seaborn bootstrap 95 % CI over seeds. Diverged or failed runs are never averaged; they are "
                 "marked ✕ in the figures and listed below.</small></p>")
    parts.append("<h2>Parameters</h2>")
    rules = sorted(set(rep.results["stop_rule"].dropna())) if len(rep.results) else []
    parts.append("<p>Stop rules used: " + html.escape("; ".join(rules) or "n/a")
                 + ". A <code>steps=N</code> rule is a step budget: every batch size takes the same number of "
                 "optimizer steps (Hoffer et al. 2017), so large batches are not merely under-trained; a "
                 "<code>target_loss</code> rule stops at the first epoch whose mean training loss is at or below "
                 "the target (matched training loss).</p>")
    if params:
        parts.append(f"<p>Params file: <code>{html.escape(str(study.get('params_file', '')))}</code></p>")
        parts.append("<pre>" + html.escape(yaml.safe_dump(params, sort_keys=False, width=110)) + "</pre>")
    else:
        parts.append("<p>No study.json in this folder (not made by the study runner): the configurations are "
                     "those in results.csv.</p>")
    parts.append("<h2>Figures</h2>")
    for name, png in rep.figures.items():
        if embed and png.is_file():
            src = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
        else:
            src = f"figures/{name}.png"
        parts.append(f"<figure><img src='{src}' alt='{name}'><figcaption><b>{name}</b>: "
                     f"{html.escape(CAPTIONS.get(name, ''))} (<a href='figures/{name}.svg'>svg</a>)</figcaption>"
                     "</figure>")
    bad = rep.results[rep.results["status"] != OK] if len(rep.results) else rep.results
    parts.append(f"<h2>Runs not ok ({len(bad)})</h2>")
    if len(bad):
        cols = ["notebook", "batch_size", "run", "status", "stop_reason", "train_loss", "error"]
        parts.append(bad[cols].to_html(index=False, na_rep="", escape=True))
    else:
        parts.append("<p>none</p>")
    parts.append(f"<p>One row per run: <a href='results.csv'>results.csv</a> ({len(rep.results)} rows).</p>")
    return "\n".join(parts)


# ============================================================================ notebook helper
def ensure_study(study_dir: str | Path) -> str:
    """`study_dir` as is when it holds a study (study.json or any run); otherwise train a tiny demo
    study there (`samlib.experiment.demo_study`: two seeds, batch sizes 32 and 256, SGD with and without
    SAM, a few steps; about half a minute) so that the summary notebook runs on its own. A folder the study runner made always has study.json, so a real
    study is never touched."""
    study_dir = Path(study_dir)
    if (study_dir / "study.json").is_file() or run_dirs(study_dir):
        return str(study_dir)
    from samlib import experiment  # imports TensorFlow

    experiment.demo_study(study_dir)
    return str(study_dir)
