"""What a grid notebook shows of its cell (the `samlib.study.cell.run_cell` table): a runtime and
sharpness table, learning curves, and for the lr-scaling notebook the lr sweep. Nothing is trained or
written here."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from samlib import measures
from samlib.study import layout, selections
from samlib.study.plotting import empty_panel, log_axis


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runtime, result and sharpness of each run, for display."""
    if not len(runs):
        return pd.DataFrame()
    keys = measures.order(c for c in runs.columns if measures.is_measure(c))
    cols = ["point", "seed", "status", "stop_reason", "steps", "lr", "train_loss", "test_loss", "test_accuracy",
            "wall_seconds", "seconds_per_epoch", "sharpness_seconds"] + keys
    table = runs[[c for c in cols if c in runs.columns]].copy()
    return table.rename(columns={"wall_seconds": "train+eval s", "seconds_per_epoch": "s/epoch",
                                 "sharpness_seconds": "sharpness s"})


def _new_figure(n: int, width: float = 5.0, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n, height), layout="constrained")
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


def plot_histories(runs: pd.DataFrame, x: str = "steps"):
    """Learning curves of a cell's runs: train loss (epoch mean, dropout on) and the validation loss
    after each epoch (runs without a validation split: the test loss) vs optimizer steps, one line per
    grid point, mean ± 95 % CI over seeds. Returns the Figure."""
    import seaborn as sns

    frames = []
    for _, r in runs.iterrows():
        path = Path(r["run_dir"]) / layout.HISTORY
        if path.is_file():
            h = pd.read_csv(path)
            if len(h):
                frames.append(h.assign(point=r.get("point", layout.point_label(Path(r["run_dir"]).name)), seed=r["seed"]))
    fig, axes = _new_figure(2)
    if not frames:
        for ax in axes:
            empty_panel(ax, "no history yet")
        return fig
    hist = pd.concat(frames, ignore_index=True)
    bs = runs["batch_size"].dropna().unique()
    held_out = ("val_loss", "validation loss") if "val_loss" in hist else ("test_loss", "test loss")
    for ax, (col, label) in zip(axes, [("loss", "train loss (epoch mean)"), held_out]):
        if col not in hist:
            empty_panel(ax, f"no {col}")
            continue
        sns.lineplot(data=hist, x=x, y=col, hue="point", marker="o", errorbar=("ci", 95), n_boot=1000, seed=0, ax=ax)
        log_axis(ax, "y")
        ax.set_title(label + (f", batch size {int(bs[0])}" if len(bs) == 1 else ""))
        ax.set_xlabel("optimizer steps" if x == "steps" else x)
    return fig


def lr_sweep(runs: pd.DataFrame) -> pd.DataFrame:
    """The lr sweep of one cell: per (method, effective lr) the mean validation/train loss over seeds,
    the rules that gave that lr, ``chosen_by`` and ``best``.

    The best lr is chosen by the report's one rule (`selections.best_lr`): each seed picks the lr of
    its lowest **validation** loss (the test split chooses nothing). ``chosen_by`` counts the seeds that
    picked each lr, and ``best`` marks, per method, the lr most seeds picked (a tie goes to the lower
    mean validation loss). The report and Fig. 5 quote the per-seed choices themselves (their mean
    over seeds), so where the seeds disagree no single row is the report's number."""
    if not len(runs):
        return pd.DataFrame()
    d = runs.assign(lr=runs["lr"].astype(float).round(10))
    chosen = selections.best_lr(d)
    rows = []
    for method, of_method in selections.by_method(d):
        picks = selections.select(chosen, method)["lr"]
        these = [{"method": method.label, "lr": lr, "rules": ",".join(sorted(set(g["lr_scaling"]))),
                  "val_loss": g["val_loss"].mean(), "train_loss": g["train_loss"].mean(),
                  "val_accuracy": g["val_accuracy"].mean(), "steps": g["steps"].mean(),
                  "not_ok": int((g["status"] != layout.OK).sum()), "chosen_by": int((picks == lr).sum()),
                  "best": False}
                 for lr, g in of_method.groupby("lr")]
        most = max(r["chosen_by"] for r in these)
        if most:
            top = [r for r in these if r["chosen_by"] == most]
            min(top, key=lambda r: r["val_loss"])["best"] = True
        rows += these
    table = pd.DataFrame(rows)
    return table


def plot_lr_sweep(runs: pd.DataFrame):
    """Validation and training loss vs effective lr in one cell, per method."""
    import seaborn as sns

    fig, axes = _new_figure(2)
    ok = runs[(runs["status"] == layout.OK)] if len(runs) else runs
    for ax, col in zip(axes, ["val_loss", "train_loss"]):
        if len(ok):
            sns.lineplot(data=ok, x="lr", y=col, hue="method", marker="o", errorbar=("ci", 95), n_boot=1000,
                         seed=0, ax=ax)
            ax.set_xscale("log", base=2)
            log_axis(ax, "y")
        else:
            empty_panel(ax, "no finished runs")
        ax.set_xlabel("effective lr (log₂)")
        ax.set_title(f"{col.replace('_', ' ')} vs lr"
                     + (f", batch size {int(runs['batch_size'].iloc[0])}" if len(runs) else ""))
    return fig
