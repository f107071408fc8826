"""One study cell, as the notebooks run it: train its runs, measure their sharpness, show them.

A cell is one (notebook, batch size); its runs are exactly ``grid.cell_configs(base, batch_size,
seeds, grid, run_root)``. `run_cell` goes through them in order and, for each run:

1. trains it with `samlib.train.train_and_evaluate` unless `train.is_complete` says the folder already
   holds a finished run of the same config (ok or diverged);
2. measures its sharpness unless metrics.json already holds a measurement made with the same settings:
   the trained network (or, on resume, the one loaded from ``model.weights.h5``) is measured with
   `samlib.sharpness.measure` on a seeded subset of the training set, the same subset for every run
   of the study, and the numbers are merged into metrics.json atomically (`io.update_json`).

So a cell killed between training and measuring measures that run on resume without retraining it.

Loss-target runs beside a step budget (a grid axis ``target_loss: [null, T]`` with ``steps`` set): the
target is checked every step against the smoothed train loss (`train.SmoothedLoss`), so when the
target-free twin of a run (same config, same seed, ``target_loss: null``) never had a smoothed loss
<= T (its metrics' ``loss_smoothed_min`` > T) before its step budget ran out, the loss-target run is
the very same computation (training is deterministic for a config and seed).
It is then not trained again: the twin's files are copied (metrics.json says ``reused_from``) and the
run is reported as "target not reached".
A diverged run is not measured (its weights are not finite): its sharpness keys are written as null
with ``sharpness_status: "skipped: diverged"``. A run whose training raises is recorded as
``status: "failed"`` with the error and the cell goes on with the next run; the study runner then
reports the cell as failed (one of its runs is not complete) and the summary lists the run.

Sharpness settings (the params file's ``sharpness:`` mapping; `SHARPNESS_DEFAULTS` fills the rest):
``subset`` training examples measured on (0: all), ``seed`` (subset choice and the measures' random
draws), ``measures`` (keskar, lambda_max, trace, sam), ``epsilons`` (Keskar box sizes), ``max_iter``
(L-BFGS-B iterations), ``iters`` and ``tol`` (power iteration), ``samples`` (Hutchinson),
``subspace_dim`` (Keskar in a random subspace), ``rho`` (SAM sharpness radius), ``batch_size``;
``notebooks``: per-notebook overrides, e.g. ``{lr_scaling: {measures: [sam]}}`` (the notebook is the
name of ``run_root``'s grandparent folder, as the study runner lays cells out).
"""

from __future__ import annotations

import json
import math
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from samlib import io
from samlib.study import report
from samlib.config import Config
from samlib.study.grid import cell_configs, expand_grid

SHARPNESS_DEFAULTS: dict[str, Any] = {
    "subset": 1000,
    "seed": 0,
    "measures": ["keskar", "lambda_max", "sam"],
    "epsilons": [1e-3, 5e-4],
    "max_iter": 5,
    "iters": 20,
    "tol": 1e-3,
    "samples": 20,
    "subspace_dim": None,
    "rho": 0.05,
    "batch_size": 1000,
}
_NOTEBOOK_OVERRIDES = "notebooks"
_FLOAT_KEYS = ("tol", "rho")
_INT_KEYS = ("subset", "seed", "max_iter", "iters", "samples", "batch_size")


# ============================================================================ sharpness settings
def sharpness_settings(sharpness: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`SHARPNESS_DEFAULTS` updated with `sharpness`, checked and in a JSON-stable form.

    Raises ValueError naming the key for an unknown key or a value of the wrong kind (YAML reads
    ``1e-3`` as a string: write ``1.0e-3``; numeric strings are accepted here anyway).
    """
    settings = dict(SHARPNESS_DEFAULTS)
    given = dict(sharpness or {})
    given.pop(_NOTEBOOK_OVERRIDES, None)
    for key, value in given.items():
        if key not in SHARPNESS_DEFAULTS:
            raise ValueError(f"unknown sharpness setting {key!r} (value {value!r}); allowed: "
                             f"{', '.join(SHARPNESS_DEFAULTS)}")
        settings[key] = value
    try:
        for key in _FLOAT_KEYS:
            settings[key] = float(settings[key])
        for key in _INT_KEYS:
            if isinstance(settings[key], bool) or float(settings[key]) != int(float(settings[key])):
                raise ValueError(key)
            settings[key] = int(float(settings[key]))
        eps = settings["epsilons"]
        settings["epsilons"] = [float(e) for e in (eps if isinstance(eps, (list, tuple)) else [eps])]
        measures = settings["measures"]
        settings["measures"] = [str(m) for m in ([measures] if isinstance(measures, str) else measures)]
        if settings["subspace_dim"] is not None:
            settings["subspace_dim"] = int(settings["subspace_dim"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"sharpness setting has a value of the wrong kind ({err}); settings: {settings}") from None
    if settings["subset"] < 0:
        raise ValueError(f"sharpness setting 'subset' has value {settings['subset']}; allowed: an integer >= 0")
    return json.loads(json.dumps(settings))


def settings_for(sharpness: Mapping[str, Any] | None, notebook: str | None) -> dict[str, Any]:
    """The checked settings for `notebook`: `sharpness` with its ``notebooks[notebook]`` overrides."""
    given = dict(sharpness or {})
    overrides = given.pop(_NOTEBOOK_OVERRIDES, None) or {}
    if not isinstance(overrides, Mapping):
        raise ValueError(f"sharpness setting 'notebooks' has value {overrides!r}; allowed: a mapping of "
                         "notebook name -> settings")
    return sharpness_settings({**given, **dict(overrides.get(notebook) or {})})


def is_measured(run_dir: str | Path, settings: Mapping[str, Any]) -> bool:
    """metrics.json holds a sharpness measurement (or a recorded skip) made with exactly `settings`."""
    try:
        metrics = io.read_json(Path(run_dir) / "metrics.json")
    except (OSError, ValueError):
        return False
    return metrics.get("sharpness_settings") == sharpness_settings(settings) and "sharpness_status" in metrics


def sharpness_subset(x: np.ndarray, y: np.ndarray, settings: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The seeded training subset every run is measured on (as ``python -m samlib sharpness`` picks it)."""
    from samlib.sharpness import subset

    return subset(x, y, int(settings["subset"]), int(settings["seed"]))


def load_network(run_dir: str | Path, data=None):
    """The trained network of a finished run (config.json + model.weights.h5), built on `data`."""
    from samlib import train

    return train.load_run(run_dir, data)[1]


def measure_run(run_dir: str | Path, sharpness: Mapping[str, Any] | None = None, data=None, model=None) -> dict:
    """Measure one finished run and merge the numbers into its metrics.json; returns what was merged.

    `model`: the trained network if at hand (else loaded from the folder); `data`: its data set.
    """
    from samlib import data as data_lib
    from samlib import sharpness as sharp
    from samlib import train

    run_dir = Path(run_dir)
    settings = sharpness_settings(sharpness)
    metrics = io.read_json(run_dir / "metrics.json")
    config = Config.from_dict(io.read_json(run_dir / "config.json"))
    data = data if data is not None else data_lib.load(config.dataset, config.data_dir)
    extra = {"sharpness_settings": settings, "n_train": int(len(data.x_train))}
    if metrics.get("status") == "diverged" or not all(
        report._present(metrics.get(k)) for k in ("train_loss", "test_loss")
    ):
        keys = _expected_keys(settings)
        values = {**{k: None for k in keys}, **extra, "sharpness_status": "skipped: diverged"}
        io.update_json(run_dir / "metrics.json", **values)
        return values
    model = model if model is not None else load_network(run_dir, data)
    x, y = sharpness_subset(data.x_train, data.y_train, settings)
    start = time.perf_counter()
    values = sharp.measure(
        model, train.make_loss(), x, y, measures=settings["measures"], epsilons=tuple(settings["epsilons"]),
        subspace_dim=settings["subspace_dim"], max_iter=settings["max_iter"], iters=settings["iters"],
        tol=settings["tol"], samples=settings["samples"], rho=settings["rho"], seed=settings["seed"],
        batch_size=settings["batch_size"],
    )
    values.update(extra, sharpness_subset=int(len(x)), sharpness_seed=settings["seed"],
                  sharpness_seconds=time.perf_counter() - start, sharpness_status="ok")
    io.update_json(run_dir / "metrics.json", **values)
    return values


def _expected_keys(settings: Mapping[str, Any]) -> list[str]:
    """The value keys `sharpness.measure` returns for `settings` (for a skipped run's nulls)."""
    from samlib.sharpness import measure_keys

    return measure_keys(settings["measures"], settings["epsilons"], settings.get("subspace_dim"))


# ============================================================================ a cell
def plan(run_root: str | Path, batch_size: int, seeds: Sequence[int], base: Mapping[str, Any],
         grid: Mapping[str, Sequence[Any]] | None = None) -> pd.DataFrame:
    """The cell's runs as a table (no paths, nothing run): run folder name and the values that vary."""
    configs = cell_configs(base, batch_size, seeds, grid, run_root)
    rows = []
    for c in configs:
        rows.append({
            "run": Path(c.run_dir).name, "optimizer": c.optimizer, "sam": c.sam,
            "rho": f"{c.rho:g}" if c.sam != "none" else "-",
            "m": ("batch" if c.m is None else str(c.m)) if c.sam != "none" else "-",
            "lr": f"{c.scaled_lr:g}", "stop rule": report.stop_rule(c.to_dict()), "seed": str(c.seed),
        })
    return pd.DataFrame(rows)


def describe_cell(run_root: str | Path, batch_size: int, seeds: Sequence[int], base: Mapping[str, Any],
                  grid: Mapping[str, Sequence[Any]] | None = None) -> str:
    """A deterministic text of what the cell will run (for the notebooks' checked output)."""
    points = expand_grid(grid)
    table = plan(run_root, batch_size, seeds, base, grid)
    head = (f"batch size {batch_size}: {len(points)} grid point(s) x {len(seeds)} seed(s) = {len(table)} run(s) "
            f"on {base.get('dataset', 'mnist5k')}")
    return head + "\n" + table.to_string(index=False, na_rep="-")


def run_cell(
    run_root: str | Path,
    batch_size: int,
    seeds: Sequence[int],
    base: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]] | None = None,
    sharpness: Mapping[str, Any] | None = None,
    data=None,
    log: Callable[[str], None] | None = print,
) -> pd.DataFrame:
    """Train and measure every run of the cell that is not done yet (module doc); one row per run.

    Rows are `report.run_record` of each folder plus ``action`` (what was done now: trained,
    measured, skipped, failed) and ``point`` (the grid values, e.g. ``m=32``).
    """
    import keras

    from samlib import data as data_lib
    from samlib import train

    notebook = Path(run_root).resolve().parent.name
    settings = settings_for(sharpness, notebook)
    configs = cell_configs(base, batch_size, seeds, grid, run_root)
    twins = _twins(configs)
    cache: dict[tuple, Any] = {}
    rows = []
    for config in configs:
        key = (config.dataset, config.data_dir)
        if key not in cache:
            cache[key] = data if data is not None else data_lib.load(*key)
        run_dir = Path(config.run_dir)
        actions, start = [], time.perf_counter()
        model = None
        try:
            if not train.is_complete(run_dir, config):
                twin = twins.get(config.run_dir)
                if twin is not None and _reuse_twin(config, twin):
                    actions.append(f"copied from {twin.name} (target not reachable before the budget)")
                else:
                    model = train.train_and_evaluate(config, cache[key]).model
                    actions.append("trained")
        except Exception as err:  # a failing run is recorded and the cell goes on
            io.update_json(run_dir / "metrics.json", status="failed", error=f"{type(err).__name__}: {err}",
                           traceback=traceback.format_exc(limit=5))
            actions.append("failed")
        if "failed" not in actions and not is_measured(run_dir, settings):
            try:
                measure_run(run_dir, settings, data=cache[key], model=model)
                actions.append("measured")
            except Exception as err:
                io.update_json(run_dir / "metrics.json", sharpness_error=f"{type(err).__name__}: {err}")
                actions.append("sharpness failed")
        del model
        keras.backend.clear_session(free_memory=False)  # the gc of free_memory=True costs ~0.2 s a run
        row = report.run_record(run_dir, notebook, batch_size)
        row["action"] = "+".join(actions) or "skipped (complete)"
        row["point"] = _point_label(run_dir.name)
        rows.append(row)
        if log is not None:
            log(_log_line(row, time.perf_counter() - start))
    df = pd.DataFrame(rows)
    failed = df[df["status"] != report.OK] if len(df) else df
    if log is not None and len(failed):
        log(f"{len(failed)} of {len(df)} runs not ok: " + ", ".join(f"{r} ({s})" for r, s in
                                                                   zip(failed["run"], failed["status"])))
    return df


def _twins(configs: Sequence[Config]) -> dict[str, Path]:
    """run_dir of each loss-target run with a step budget -> run_dir of its target-free twin in the cell."""
    def key(c: Config) -> str:
        d = c.to_dict()
        for k in ("run_dir", "target_loss", "verbose"):
            d.pop(k)
        return json.dumps(d, sort_keys=True)

    free = {key(c): Path(c.run_dir) for c in configs if c.target_loss is None}
    return {c.run_dir: free[key(c)] for c in configs
            if c.target_loss is not None and c.steps is not None and key(c) in free}


def _reuse_twin(config: Config, twin: Path) -> bool:
    """Copy a finished twin's run into `config.run_dir` if the loss target could not have stopped the
    run before the twin stopped (module doc); False (nothing written) otherwise."""
    from samlib import train

    try:
        twin_config = Config.from_dict(io.read_json(twin / "config.json"))
        metrics = io.read_json(twin / "metrics.json")
    except (OSError, ValueError):
        return False
    if not train.is_complete(twin, twin_config) or twin_config.replace(target_loss=config.target_loss,
                                                                        run_dir=config.run_dir) != config:
        return False
    lowest = metrics.get("loss_smoothed_min")  # absent in runs made before the per-step check
    if metrics.get("stop_reason") not in ("steps", "diverged") or lowest is None or lowest <= config.target_loss:
        return False
    run_dir = Path(config.run_dir)
    io.write_json(run_dir / "config.json", config.to_dict())
    io.write_json(run_dir / "metrics.json", {"status": "running"})
    for name in ("history.csv", train.WEIGHTS):
        io.atomic_write(run_dir / name, lambda tmp, n=name: shutil.copyfile(twin / n, tmp))
    io.write_json(run_dir / "metrics.json", {**metrics, "reused_from": twin.name})  # last: marks it complete
    return True


def _point_label(name: str) -> str:
    import re

    return re.sub(r",?seed=\d+$", "", name) or "(base)"


def _log_line(row: Mapping[str, Any], seconds: float) -> str:
    sharp = " ".join(f"{k}={row[k]:.3g}" for k in row if report.is_measure(k) and report._present(row[k]))
    return (f"{row['run']}: {row['action']} in {seconds:.1f} s | {row['status']}, {row['stop_reason']} after "
            f"{row['steps']} steps | train loss {row['train_loss']:.4f} test loss {row['test_loss']:.4f} "
            f"test acc {row['test_accuracy']:.4f}" + (f" | {sharp}" if sharp else ""))


def load_cell(run_root: str | Path) -> pd.DataFrame:
    """The rows of a cell's run folders as they are on disk (nothing is run)."""
    run_root = Path(run_root)
    rows = []
    for run in sorted(p for p in run_root.iterdir() if p.is_dir()) if run_root.is_dir() else []:
        if (run / "config.json").is_file():
            row = report.run_record(run, run_root.parent.name, int(run_root.name) if run_root.name.isdigit() else None)
            row["point"] = _point_label(run.name)
            rows.append(row)
    return pd.DataFrame(rows)


# ============================================================================ showing a cell
def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runtime, result and sharpness of each run, for display."""
    if not len(runs):
        return pd.DataFrame()
    measures = [c for c in runs.columns if report.is_measure(c)]
    cols = ["point", "seed", "status", "stop_reason", "steps", "lr", "train_loss", "test_loss", "test_accuracy",
            "wall_seconds", "seconds_per_epoch", "sharpness_seconds"] + measures
    table = runs[[c for c in cols if c in runs.columns]].copy()
    return table.rename(columns={"wall_seconds": "train+eval s", "seconds_per_epoch": "s/epoch",
                                 "sharpness_seconds": "sharpness s"})


def _new_figure(n: int, width: float = 5.0, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n, height), layout="constrained")
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


def plot_histories(runs: pd.DataFrame, x: str = "steps"):
    """Learning curves of a cell's runs: train loss (epoch mean, dropout on) and test loss per epoch
    vs optimizer steps, one line per grid point, mean ± 95 % CI over seeds. Returns the Figure."""
    import seaborn as sns

    frames = []
    for _, r in runs.iterrows():
        path = Path(r["run_dir"]) / "history.csv"
        if path.is_file():
            h = pd.read_csv(path)
            if len(h):
                frames.append(h.assign(point=r.get("point", _point_label(Path(r["run_dir"]).name)), seed=r["seed"]))
    fig, axes = _new_figure(2)
    if not frames:
        for ax in axes:
            report._empty(ax, "no history yet")
        return fig
    hist = pd.concat(frames, ignore_index=True)
    bs = runs["batch_size"].dropna().unique()
    for ax, (col, label) in zip(axes, [("loss", "train loss (epoch mean)"), ("test_loss", "test loss")]):
        if col not in hist:
            report._empty(ax, f"no {col}")
            continue
        sns.lineplot(data=hist, x=x, y=col, hue="point", marker="o", errorbar=("ci", 95), n_boot=1000, seed=0, ax=ax)
        report._log_axis(ax, "y")
        ax.set_title(label + (f", batch size {int(bs[0])}" if len(bs) == 1 else ""))
        ax.set_xlabel("optimizer steps" if x == "steps" else x)
    return fig


def lr_sweep(runs: pd.DataFrame) -> pd.DataFrame:
    """The lr sweep of one cell: per (method, effective lr) the mean test/train loss over seeds, the rules
    that gave that lr, the best lr per method (lowest mean test loss) and the linear-rule lr."""
    if not len(runs):
        return pd.DataFrame()
    d = runs.assign(lr=runs["lr"].astype(float).round(10))
    table = d.groupby(["method", "lr"], as_index=False).agg(
        rules=("lr_scaling", lambda s: ",".join(sorted(set(s)))),
        test_loss=("test_loss", "mean"), train_loss=("train_loss", "mean"), test_accuracy=("test_accuracy", "mean"),
        steps=("steps", "mean"), not_ok=("status", lambda s: int((s != report.OK).sum())),
    )
    table["best"] = False
    for method, g in table.groupby("method"):
        if g["test_loss"].notna().any():
            table.loc[g["test_loss"].idxmin(), "best"] = True
    linear = d[d["lr_scaling"] == "linear"]["lr"]
    table["linear rule lr"] = float(linear.iloc[0]) if len(linear) else math.nan
    return table


def plot_lr_sweep(runs: pd.DataFrame):
    """Test loss vs effective lr in one cell, per method, with the linear-scaling lr marked."""
    import seaborn as sns

    fig, axes = _new_figure(2)
    ok = runs[(runs["status"] == report.OK)] if len(runs) else runs
    for ax, col in zip(axes, ["test_loss", "train_loss"]):
        if len(ok):
            sns.lineplot(data=ok, x="lr", y=col, hue="method", marker="o", errorbar=("ci", 95), n_boot=1000,
                         seed=0, ax=ax)
            ax.set_xscale("log", base=2)
            report._log_axis(ax, "y")
        else:
            report._empty(ax, "no finished runs")
        linear = runs[runs["lr_scaling"] == "linear"]["lr"] if len(runs) else []
        if len(linear):
            ax.axvline(float(linear.iloc[0]), color="k", ls="--", lw=1, label="linear rule")
            ax.legend(fontsize=8)
        ax.set_xlabel("effective lr (log₂)")
        ax.set_title(f"{col.replace('_', ' ')} vs lr"
                     + (f", batch size {int(runs['batch_size'].iloc[0])}" if len(runs) else ""))
    return fig


# ============================================================================ a demo study
def demo_study(study_dir: str | Path, log: Callable[[str], None] | None = None) -> Path:
    """A tiny real study in ``study_dir/runs`` (the runner's layout): SGD and SGD+SAM (whole batch and
    m=16) at batch sizes 32 and 256, two seeds, 5 steps each (no lr sweep, no Adam: those figures say
    so). For running the summary notebook on its own; about half a minute on two CPU cores."""
    study_dir = Path(study_dir)
    base = {"dataset": "mnist5k", "steps": 5, "lr": 0.1, "verbose": 0}
    sharpness = {"subset": 128, "max_iter": 1, "iters": 3, "tol": 1e-2}
    cells = {
        "baseline": ({}, {}),
        "sam_sgd": ({"sam": "sam"}, {"m": [None, 16]}),
    }
    for bs in (32, 256):
        for name, (nb_base, grid) in cells.items():
            run_cell(study_dir / "runs" / name / str(bs), bs, [0, 1], {**base, **nb_base}, grid, sharpness, log=log)
    return study_dir


__all__ = [
    "SHARPNESS_DEFAULTS", "sharpness_settings", "is_measured", "sharpness_subset", "load_network", "measure_run",
    "plan", "describe_cell", "run_cell", "load_cell", "cell_table", "plot_histories", "lr_sweep", "plot_lr_sweep",
    "demo_study", "settings_for",
]
