"""Tuning inside a study: each method at each batch size gets its own learning rate, chosen on the
validation split from a log-spaced grid that extends itself (Shallue et al. 2019: an untuned large
batch measures the lr, not the batch).

A tuning cell (notebook ``tuning``) is one batch size. Its grid names the methods (``sam``, ``m``,
``optimizer`` ...) and a starting ``lr`` list; `tune_cell` trains every (method, lr, seed) run, then, per
method, asks `curve.next_lr` for the next lr of the half-decade grid (…, 0.01, 0.0316, 0.1, 0.316, …)
until the best is interior or bounded by an lr that failed, or `max_lrs` were tried. A run's score is
its validation loss where it stopped (the runs stop at their loss milestones: every lr is scored at
the same training loss); a run that diverged, collapsed or did not reach its milestones by its cap
failed, and a failed lr bounds the grid like a worse one. Every lr is run with every seed of the
cell (at least two) and scored by their mean.

`tuning_table(results)` reads the choices back from a study's results table: one entry per (data
set, optimizer, SAM mode, m, batch size) with the grid (each lr's mean validation loss and error over
its seeds, and how many failed) and the choice (`curve.chosen_lr`). findings.json's ``tuning`` is it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from samlib.config import SharpnessSettings
from samlib.io import present
from samlib.rundir import settings_of
from samlib.study import layout
from samlib.study.curve import chosen_lr, next_lr
from samlib.study.grid import Grid, cell_runs, expand_grid
from samlib.study.selections import TUNING_NOTEBOOK

MAX_LRS = 8  #: a method's grid stops growing after this many lrs, settled or not (then said so)
METHOD_KEYS = ("dataset", "optimizer", "sam", "m", "batch_size")  #: what a tuned lr belongs to


def half_decade(lr: float) -> float:
    """The nearest value of the half-decade grid 10^(k/2), to 3 significant digits (0.0316, 0.1, 0.316)."""
    return float(f"{10 ** (round(2 * math.log10(lr)) / 2):.3g}")


def score(record: Mapping[str, Any]) -> float | None:
    """A tuning run's score: its validation loss where it stopped, if it finished ok and reached all its
    loss milestones (`converged` not False); None for a failed lr (diverged, collapsed, not reached)."""
    ok = record.get("status") == layout.OK and record.get("converged") is not False
    value = record.get("val_loss")
    return float(value) if ok and present(value) and math.isfinite(float(value)) else None


def _mean_scores(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The mean score over an lr's seeds; None if any seed failed (an lr that fails once is not chosen)."""
    scores = [score(r) for r in rows]
    return None if not scores or any(s is None for s in scores) else float(np.mean(scores))


def tune_cell(run_root: str | Path, batch_size: int, seeds: Sequence[int], base: Mapping[str, Any],
              grid: Grid = None, sharpness: SharpnessSettings | Mapping[str, Any] | None = None, data=None,
              max_lrs: int = MAX_LRS, log: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Train the tuning cell's grid, then extend each method's lr grid until its choice is settled
    (module doc); one row per run (`tables.run_record` plus ``action`` and ``point``), resumable like
    `cell.run_cell` (a run folder already complete is not retrained)."""
    from samlib.study.cell import run_configs

    if len(seeds) < 2:
        raise ValueError(f"tuning needs at least 2 seeds per lr, got {list(seeds)!r}")
    settings, cache, rows = settings_of(sharpness), {}, []

    def run(point_grid: Grid) -> None:
        configs = [config for _, _, config in cell_runs(base, batch_size, seeds, point_grid, run_root)]
        rows.extend(run_configs(configs, TUNING_NOTEBOOK, batch_size, settings, data, cache))

    run(grid)
    for method in _methods_of(grid):
        while True:
            tried = _tried(rows, method)
            lr = next_lr(tried)
            if lr is None or len(tried) >= max_lrs:
                break
            run({**{k: [v] for k, v in method.items()}, "lr": [half_decade(lr)]})
        if log is not None:
            log(_choice_line(method, _tried(rows, method), max_lrs))
    return pd.DataFrame(rows)


def _methods_of(grid: Grid) -> list[dict[str, Any]]:
    """The grid's points without their lr, each once, in order: the methods a cell tunes."""
    out: list[dict[str, Any]] = []
    for point in expand_grid(grid):
        method = {k: v for k, v in point.items() if k != "lr"}
        if method not in out:
            out.append(method)
    return out


def _tried(rows: Sequence[Mapping[str, Any]], method: Mapping[str, Any]) -> dict[float, float | None]:
    """lr → mean validation loss over seeds (None: failed) of the rows of one method."""
    by_lr: dict[float, list[Mapping[str, Any]]] = {}
    for r in rows:
        point = layout.point_label(str(r["run"]))
        if all(f"{k}=" + layout.fmt_value(v) in point.split(",") for k, v in method.items()):
            by_lr.setdefault(float(r["lr"]), []).append(r)
    return {lr: _mean_scores(rs) for lr, rs in by_lr.items()}


def _choice_line(method: Mapping[str, Any], tried: Mapping[float, Any], max_lrs: int) -> str:
    choice = chosen_lr(tried)
    name = ",".join(f"{k}={v}" for k, v in method.items()) or "(base)"
    grid = ", ".join(f"{lr:g}: {'✕' if v is None else f'{v:.4f}'}" for lr, v in sorted(tried.items()))
    how = ("interior" if choice["interior"] else "bounded by a failed lr" if choice["bounded_by_failure"]
           else f"at the grid's edge after {max_lrs} lrs" if len(tried) >= max_lrs else "at the grid's edge")
    return f"{name}: lr {choice['lr']:g} ({how}); validation loss by lr: {grid}" if choice["lr"] else \
        f"{name}: every lr failed ({grid})"


def tuning_table(results: pd.DataFrame) -> list[dict[str, Any]]:
    """The tuning runs of a results table, one entry per (data set, optimizer, SAM mode, m, batch size):
    ``grid`` (per lr: mean validation loss and error over its seeds, ``seeds``, and ``seeds_out``: the seeds
    that diverged, collapsed or missed the milestone), ``choice``
    (`curve.chosen_lr`: lr, its validation loss, interior / bounded_by_failure / at_edge). Each grid entry
    also has the mean ``steps`` its seeds took to the tuning milestone, so a reader sees what the choice
    costs in speed (the lr is chosen by validation loss, not by speed)."""
    runs = results[results["notebook"] == TUNING_NOTEBOOK] if len(results) else results
    out = []
    if not len(runs):
        return out
    keys = [runs[k].map(lambda v: str(v) if present(v) else "") for k in METHOD_KEYS]
    for _, g in runs.groupby(keys, sort=True):
        grid, tried = [], {}
        for lr, at in g.groupby(g["lr"].astype(float)):
            records = at.to_dict("records")
            failed = sum(score(r) is None for r in records)
            tried[float(lr)] = _mean_scores(records)
            grid.append({"lr": float(lr), "seeds": len(records), "seeds_out": failed,
                         "val_loss": tried[float(lr)],
                         "val_error": None if failed else float(1 - at["val_accuracy"].astype(float).mean()),
                         "steps": None if failed else float(at["steps"].astype(float).mean())})
        first = g.iloc[0]
        out.append({"dataset": first["dataset"], "optimizer": first["optimizer"], "sam": first["sam"],
                    "m": None if not present(first["m"]) else int(first["m"]), "batch_size": int(first["batch_size"]),
                    "grid": grid, "choice": chosen_lr(tried)})
    return sorted(out, key=lambda t: (str(t["dataset"]), t["optimizer"], t["sam"], t["m"] or 0, t["batch_size"]))


def choices_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """`tuning_table` as a table for a notebook: one row per method and batch size, the chosen lr, why it
    is settled, and the grid (lr: mean validation loss, or ✕ where a seed diverged, collapsed or missed)."""
    from samlib.study.selections import method_label

    rows = []
    for t in tuning_table(runs):
        c = t["choice"]
        how = "interior" if c["interior"] else "bounded by a failed lr" if c["bounded_by_failure"] else "at the edge"
        rows.append({"method": method_label(t["optimizer"], t["sam"], t["m"]), "batch_size": t["batch_size"],
                     "lr": c["lr"], "settled": how,
                     "grid": ", ".join(f"{g['lr']:g}: " + ("✕" if g["val_loss"] is None else f"{g['val_loss']:.4f}")
                                       for g in t["grid"])})
    return pd.DataFrame(rows, columns=["method", "batch_size", "lr", "settled", "grid"])


# ---------------------------------------------------------------------- a study that uses the choices
def choices_of(study_dir: str | Path) -> dict[tuple, float]:
    """(dataset, optimizer, sam, m, batch size) → the tuned lr, from a tuning study's findings.json
    (``tuning``); {} when it has none. Entries whose grid never settled (every lr failed) are left out."""
    from samlib import io

    out = {}
    for t in io.read_json_dict(Path(study_dir) / layout.FINDINGS).get("tuning", []):
        if t["choice"]["lr"] is not None:
            out[(t["dataset"], t["optimizer"], t["sam"], t["m"], t["batch_size"])] = float(t["choice"]["lr"])
    return out


def tuned_grid(choices: Mapping[tuple, float], base: Mapping[str, Any], grid: Grid, batch_size: int) -> list[dict]:
    """A notebook's grid at one batch size with each point's tuned lr as a one-value ``lr`` axis (so a
    run's folder names its lr, and the notebook builds the very configs planned); a `ValueError` naming
    the first method without a tuned lr at this batch size."""
    from samlib.config import Config

    out = []
    for point in expand_grid(grid):
        if "lr" in point:
            raise ValueError("a grid with an lr axis cannot take its lr from a tuning study")
        c = Config.from_dict({**base, **point, "batch_size": batch_size})
        key = (c.dataset, c.optimizer, c.sam, c.m, batch_size)
        if key not in choices:
            raise ValueError(f"no tuned lr for dataset {c.dataset}, optimizer {c.optimizer}, sam {c.sam}, m {c.m} "
                             f"at batch size {batch_size} (tuned: {sorted(choices, key=str) or 'none'})")
        out.append({**{k: [v] for k, v in point.items()}, "lr": [choices[key]]})
    return out
