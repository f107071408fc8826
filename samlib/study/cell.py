"""One study cell, as the grid notebooks run it: train its runs, measure their sharpness, resume.

A cell is one (notebook, batch size); its runs are exactly ``grid.cell_configs(base, batch_size,
seeds, grid, run_root)``. `run_cell` goes through them in order and, for each run:

1. trains it with `samlib.train.train_and_evaluate` unless `layout.is_complete` says the folder
   already holds a finished run of the same config (ok or diverged);
2. measures its sharpness (`measure_run`, from `samlib.rundir`) unless `layout.is_measured` says metrics.json holds
   a measurement made with the same `SharpnessSettings`: the trained network (or, on resume, the one
   loaded from the weights file) is measured with `samlib.sharpness.measure` on a seeded subset of the
   training split, the same subset for every run of the study, and the numbers are merged into
   metrics.json atomically. ``python -m samlib sharpness RUN`` does the very same, so a run it
   measured is not measured again by a cell with the same settings.

So a cell killed between training and measuring measures that run on resume without retraining it.

A diverged run is not measured (its weights are not finite): its sharpness keys are written as null
with ``sharpness_status`` `layout.SHARPNESS_SKIPPED`. A run whose training raises is recorded as
`layout.FAILED` with the error and the cell goes on with the next run; the study runner then reports
the cell as failed (one of its runs is not complete) and the summary lists the run.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from samlib import io
from samlib.io import present
from samlib.measures import is_measure
from samlib.config import Config, SharpnessSettings
from samlib.rundir import measure_run, settings_of  # noqa: F401  (measure_run: part of this module's API)
from samlib.study import layout, tables
from samlib.study.grid import Grid, cell_configs, expand_grid


# ============================================================================ a cell
def plan(run_root: str | Path, batch_size: int, seeds: Sequence[int], base: Mapping[str, Any],
         grid: Grid = None) -> pd.DataFrame:
    """The cell's runs as a table (nothing run): run folder name and the values that vary."""
    rows = []
    for c in cell_configs(base, batch_size, seeds, grid, run_root):
        rows.append({
            "run": Path(c.run_dir).name, "optimizer": c.optimizer, "sam": c.sam,
            "rho": f"{c.rho:g}" if c.sam != "none" else "-",
            "m": ("batch" if c.m is None else str(c.m)) if c.sam != "none" else "-",
            "lr": f"{c.scaled_lr:g}", "stop rule": tables.stop_rule(c.to_dict()), "seed": str(c.seed),
        })
    return pd.DataFrame(rows)


def describe_cell(run_root: str | Path, batch_size: int, seeds: Sequence[int], base: Mapping[str, Any],
                  grid: Grid = None) -> str:
    """A deterministic text of what the cell will run (for the notebooks' checked output)."""
    points = expand_grid(grid)
    table = plan(run_root, batch_size, seeds, base, grid)
    head = (f"batch size {batch_size}: {len(points)} grid point(s) x {len(seeds)} seed(s) = {len(table)} run(s) "
            f"on {base.get('dataset', Config.dataset)}")
    return head + "\n" + table.to_string(index=False, na_rep="-")


def run_cell(
    run_root: str | Path,
    batch_size: int,
    seeds: Sequence[int],
    base: Mapping[str, Any],
    grid: Grid = None,
    sharpness: SharpnessSettings | Mapping[str, Any] | None = None,
    data=None,
    log: Callable[[str], None] | None = print,
) -> pd.DataFrame:
    """Train and measure every run of the cell that is not done yet (module doc); one row per run.

    `sharpness`: the settings every run is measured with (a mapping of `SharpnessSettings` keys, or
    the settings; default: `SharpnessSettings()`). `data`: one data set for every run (default: each
    run's `samlib.train.load_data`). Rows are `tables.run_record` of each folder plus ``action``
    (what was done now: trained, measured, skipped, failed) and ``point`` (grid values, e.g. ``m=32``).
    """
    configs = cell_configs(base, batch_size, seeds, grid, run_root)
    rows = run_configs(configs, layout.notebook_of(run_root), batch_size, settings_of(sharpness), data, log=log)
    df = pd.DataFrame(rows)
    failed = df[df["status"] != layout.OK] if len(df) else df
    if log is not None and len(failed):
        log(f"{len(failed)} of {len(df)} runs not ok: " + ", ".join(f"{r} ({s})" for r, s in
                                                                   zip(failed["run"], failed["status"])))
    return df


def run_configs(configs: Sequence[Config], notebook: str, batch_size: int, settings: SharpnessSettings,
                data=None, cache: dict[tuple, Any] | None = None,
                log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train and measure each of `configs` in order (`train_and_measure`), each data set loaded once
    (`data` for all of them, else each config's `samlib.train.load_data`, kept in `cache`, which a caller
    may share between calls); one row per run: `tables.run_record` plus ``action`` (what was done now)
    and ``point`` (its grid values), and a `log` line per run if given."""
    from samlib import train

    cache = {} if cache is None else cache
    rows = []
    for config in configs:
        key = (config.dataset, config.data_dir, config.val_fraction, config.train_subset)
        if key not in cache:
            cache[key] = data if data is not None else train.load_data(config)
        run_dir, start = Path(config.run_dir), time.perf_counter()
        actions = train_and_measure(config, cache[key], settings)
        row = {**tables.run_record(run_dir, notebook, batch_size),
               "action": "+".join(actions) or f"{layout.SKIPPED} (complete)", "point": layout.point_label(run_dir.name)}
        rows.append(row)
        if log is not None:
            log(_log_line(row, time.perf_counter() - start))
    return rows


def train_and_measure(config: Config, data: Any, settings: SharpnessSettings) -> list[str]:
    """Train one run unless it is complete, then measure it unless it is measured; what was done
    (trained, measured, failed, sharpness failed). A failing run is recorded in its metrics.json and
    the cell goes on."""
    import keras

    from samlib import train

    run_dir, actions, model = Path(config.run_dir), [], None
    try:
        if not layout.is_complete(run_dir, config):
            model = train.train_and_evaluate(config, data).model
            actions.append("trained")
    except Exception as err:
        io.update_json(run_dir / layout.METRICS, status=layout.FAILED, error=f"{type(err).__name__}: {err}",
                       traceback=traceback.format_exc(limit=5))
        actions.append(layout.FAILED)
    if layout.FAILED not in actions and not layout.is_measured(run_dir, settings):
        try:
            measure_run(run_dir, settings, data=data, model=model)
            actions.append("measured")
        except Exception as err:
            io.update_json(run_dir / layout.METRICS, sharpness_error=f"{type(err).__name__}: {err}")
            actions.append("sharpness failed")
    del model
    # free the finished run's models and traced functions now: this gc costs 0.2-0.8 s a run, while
    # left to a later automatic gc (three SAM runs' worth, at once) it took ~10 s, and up to 50 s in
    # a study's notebook (measured), as TF's function finalizers slow down with what is still alive
    keras.backend.clear_session(free_memory=True)
    return actions


def _log_line(row: Mapping[str, Any], seconds: float) -> str:
    sharp = " ".join(f"{k}={row[k]:.3g}" for k in row if is_measure(k) and present(row[k]))
    return (f"{row['run']}: {row['action']} in {seconds:.1f} s | {row['status']}, {row['stop_reason']} after "
            f"{row['steps']} steps | train loss {row['train_loss']:.4f} test loss {row['test_loss']:.4f} "
            f"test acc {row['test_accuracy']:.4f}" + (f" | {sharp}" if sharp else ""))


# ============================================================================ a demo study
def demo_study(study_dir: str | Path, log: Callable[[str], None] | None = None) -> Path:
    """A tiny real study in ``study_dir`` (the runner's layout): SGD and SGD+SAM (whole batch and
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
            run_cell(layout.cell_dir(study_dir, name, bs), bs, [0, 1], {**base, **nb_base}, grid, sharpness, log=log)
    return study_dir
