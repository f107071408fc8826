"""Tuning inside a study: each method at each batch size gets its own learning rate, chosen on the
validation split from a log-spaced grid that extends itself (Shallue et al. 2019: an untuned large
batch measures the lr, not the batch).

A tuning cell (notebook ``tuning``) is one batch size. Its grid names the methods (``sam``, ``m``,
``optimizer`` ...) and a starting ``lr`` list; `tune_cell` trains every (method, lr, seed) run, then, per
method, asks `curve.next_lr` for the next lr of the half-decade grid (…, 0.01, 0.0316, 0.1, 0.316, …)
until the choice is interior or bounded by an lr that failed, or `max_lrs` were tried. A run's score
is its validation loss where it stopped (the runs stop at their loss milestones: every lr is scored at
the same training loss); a run that diverged, collapsed or did not reach its milestones by its cap
failed, and a failed lr bounds the grid like a worse one. Every lr is run with every seed of the
cell (at least two) and scored by their mean.

The choice weighs speed (Shallue et al. 2019 tune for the fewest steps to a validation target): of
the lrs whose mean validation loss is within the seeds' noise of the lowest, the one that reached the
milestone in the fewest steps. The noise is `seed_noise`: the seeds' standard deviation of the
validation loss, pooled over the method's lrs that did not fail, and at least `NOISE_FLOOR` (5 %) of the
lowest validation loss. (At a matched training loss the
validation loss is nearly flat in the lr — the MNIST tuning study found the two best lrs within the
seeds' difference in 9 of 12 cells — so the loss alone chose by the seeds' draw.)

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

#: the tolerance's floor, relative to the lowest validation loss: two seeds' standard deviation is itself
#: a noisy estimate (the MNIST tuning study's median seed difference was 4 % of the validation loss)
NOISE_FLOOR = 0.05
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


def _mean_steps(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The mean steps an lr's seeds took to the tuning milestone; None if any seed failed."""
    ok = [score(r) is not None and present(r.get("steps")) for r in rows]
    return float(np.mean([float(r["steps"]) for r in rows])) if rows and all(ok) else None


def seed_noise(by_lr: Mapping[float, Sequence[Mapping[str, Any]]]) -> float:
    """The seeds' standard deviation of the validation loss, pooled over the lrs none of whose seeds
    failed (the square root of the mean of their sample variances, weighted by degrees of freedom);
    0 when no lr has two scored seeds."""
    ss, dof = 0.0, 0
    for rows in by_lr.values():
        scores = [score(r) for r in rows]
        if len(scores) >= 2 and all(v is not None for v in scores):
            ss += float(np.var(scores, ddof=1)) * (len(scores) - 1)
            dof += len(scores) - 1
    return math.sqrt(ss / dof) if dof else 0.0


def _rule_inputs(by_lr: Mapping[float, Sequence[Mapping[str, Any]]]) -> tuple[dict, dict, float]:
    """(lr → mean validation loss, lr → mean steps, tolerance) of one method's runs grouped by lr: what
    `curve.chosen_lr` and `curve.next_lr` take; the tolerance is the seeds' pooled noise with its floor."""
    losses = {lr: _mean_scores(rs) for lr, rs in by_lr.items()}
    lowest = min((v for v in losses.values() if v is not None), default=0.0)
    return losses, {lr: _mean_steps(rs) for lr, rs in by_lr.items()}, max(seed_noise(by_lr), NOISE_FLOOR * lowest)


def choose(by_lr: Mapping[float, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """`curve.chosen_lr` on one method's runs grouped by lr: mean validation loss and steps per lr, and
    the seeds' pooled noise, with its floor, as the tolerance (module doc)."""
    losses, steps, tolerance = _rule_inputs(by_lr)
    return chosen_lr(losses, steps, tolerance)


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
            by_lr = _runs_by_lr(rows, method)
            lr = _next(by_lr)
            if lr is None or len(by_lr) >= max_lrs:
                break
            run({**{k: [v] for k, v in method.items()}, "lr": [half_decade(lr)]})
        if log is not None:
            log(_choice_line(method, _runs_by_lr(rows, method), max_lrs))
    return pd.DataFrame(rows)


def settled(cell_dir: str | Path, points: Sequence[Mapping[str, Any]], max_lrs: int = MAX_LRS) -> bool:
    """Whether every method of a tuning cell (`points`: its planned grid points) has a choice that the
    current rule (`choose`) calls settled, from the run folders in `cell_dir` — so a study re-run after
    the rule changed extends the grids it no longer calls settled, instead of skipping the cell."""
    from samlib.study.tables import run_record

    rows = [{**run_record(d), "run": d.name} for d in sorted(Path(cell_dir).iterdir()) if d.is_dir()]
    methods = _methods_of({k: [p[k] for p in points] for k in points[0]} if points else {})
    return all(len(by_lr) >= max_lrs or _next(by_lr) is None
               for by_lr in (_runs_by_lr(rows, m) for m in methods))


def _methods_of(grid: Grid) -> list[dict[str, Any]]:
    """The grid's points without their lr, each once, in order: the methods a cell tunes."""
    out: list[dict[str, Any]] = []
    for point in expand_grid(grid):
        method = {k: v for k, v in point.items() if k != "lr"}
        if method not in out:
            out.append(method)
    return out


def _next(by_lr: Mapping[float, Sequence[Mapping[str, Any]]]) -> float | None:
    """`curve.next_lr` for `choose`'s rule: the next lr of one method's grid, None once settled."""
    losses, steps, tolerance = _rule_inputs(by_lr)
    return next_lr(losses, steps=steps, tolerance=tolerance)


def _runs_by_lr(rows: Sequence[Mapping[str, Any]], method: Mapping[str, Any]) -> dict[float, list]:
    """lr → the rows of one method's runs at that lr."""
    by_lr: dict[float, list[Mapping[str, Any]]] = {}
    for r in rows:
        point = layout.point_label(str(r["run"]))
        if all(f"{k}=" + layout.fmt_value(v) in point.split(",") for k, v in method.items()):
            by_lr.setdefault(float(r["lr"]), []).append(r)
    return by_lr


def _choice_line(method: Mapping[str, Any], by_lr: Mapping[float, Sequence[Mapping[str, Any]]], max_lrs: int) -> str:
    losses, steps, tolerance = _rule_inputs(by_lr)
    choice, tried = chosen_lr(losses, steps, tolerance), {lr: (losses[lr], steps[lr]) for lr in by_lr}
    name = ",".join(f"{k}={v}" for k, v in method.items()) or "(base)"
    grid = ", ".join(f"{lr:g}: " + ("✕" if v is None else f"{v:.4f} in {n:.0f} steps")
                     for lr, (v, n) in sorted(tried.items()))
    how = ("interior" if choice["interior"] else "bounded by a failed lr" if choice["bounded_by_failure"]
           else f"at the grid's edge after {max_lrs} lrs" if len(tried) >= max_lrs else "at the grid's edge")
    return f"{name}: lr {choice['lr']:g} ({how}; noise {choice['tolerance']:.4f}); validation loss by lr: {grid}" \
        if choice["lr"] else \
        f"{name}: every lr failed ({grid})"


def tuning_table(results: pd.DataFrame) -> list[dict[str, Any]]:
    """The tuning runs of a results table, one entry per (data set, optimizer, SAM mode, m, batch size):
    ``grid`` (per lr: mean validation loss and error over its seeds, ``seeds``, and ``seeds_out``: the seeds
    that diverged, collapsed or missed the milestone), ``choice``
    (`choose`: lr, its validation loss, the lowest-loss lr, the tolerance, interior / bounded_by_failure /
    at_edge). Each grid entry also has the mean ``steps`` its seeds took to the tuning milestone, which
    the choice weighs within the seeds' noise (module doc)."""
    runs = results[results["notebook"] == TUNING_NOTEBOOK] if len(results) else results
    out = []
    if not len(runs):
        return out
    keys = [runs[k].map(lambda v: str(v) if present(v) else "") for k in METHOD_KEYS]
    for _, g in runs.groupby(keys, sort=True):
        grid, by_lr = [], {}
        for lr, at in g.groupby(g["lr"].astype(float)):
            records = by_lr[float(lr)] = at.to_dict("records")
            failed = sum(score(r) is None for r in records)
            grid.append({"lr": float(lr), "seeds": len(records), "seeds_out": failed,
                         "val_loss": _mean_scores(records),
                         "val_error": None if failed else float(1 - at["val_accuracy"].astype(float).mean()),
                         "steps": None if failed else float(at["steps"].astype(float).mean())})
        first = g.iloc[0]
        out.append({"dataset": first["dataset"], "optimizer": first["optimizer"], "sam": first["sam"],
                    "m": None if not present(first["m"]) else int(first["m"]), "batch_size": int(first["batch_size"]),
                    "grid": grid, "choice": choose(by_lr)})
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
PLANNED_WITH = "tuned_lrs"  #: study.json's key: tuning study folder → its ``tuning`` entries the runs were planned with


def tuning_of(study_dir: str | Path) -> list[dict[str, Any]]:
    """A tuning study's ``tuning`` entries (its findings.json); [] when it has none."""
    from samlib import io

    return list(io.read_json_dict(Path(study_dir) / layout.FINDINGS).get("tuning", []))


def planned_with(study_dir: str | Path) -> list[dict[str, Any]]:
    """The tuning entries a study's runs took their lrs from (study.json's `PLANNED_WITH`), each with its
    ``source`` (the tuning study's folder as the params file named it); [] for a study that tuned none."""
    planned = layout.read_study(study_dir).get(PLANNED_WITH, {})
    return [{**t, "source": src} for src, entries in planned.items() for t in entries]


def choices_of(study_dir: str | Path) -> dict[tuple, float]:
    """(dataset, optimizer, sam, m, batch size) → the tuned lr, from a tuning study's findings.json
    (``tuning``); {} when it has none. Entries whose grid never settled (every lr failed) are left out."""
    out = {}
    for t in tuning_of(study_dir):
        if t["choice"]["lr"] is not None:
            out[(t["dataset"], t["optimizer"], t["sam"], t["m"], t["batch_size"])] = float(t["choice"]["lr"])
    return out


def folders(key: str, value: Any) -> tuple[str, ...]:
    """A notebook's ``tuned_lr`` checked: one tuning study's folder, or a list of distinct ones."""
    from samlib.validate import list_of, text

    return (text()(key, value),) if isinstance(value, str) else tuple(list_of(text(), distinct=True)(key, value))


def merged_choices(study_dirs: Sequence[str | Path]) -> dict[tuple, float]:
    """`choices_of` over several tuning studies (a notebook's ``tuned_lr`` list); a `ValueError` naming the
    method when two of them chose an lr for it (which one to take would be a guess)."""
    out: dict[tuple, float] = {}
    source: dict[tuple, str | Path] = {}
    for folder in study_dirs:
        for key, lr in choices_of(folder).items():
            if key in out:
                dataset, optimizer, sam, m, bs = key
                raise ValueError(f"dataset {dataset}, optimizer {optimizer}, sam {sam}, m {m} at batch size {bs} is "
                                 f"tuned in both {source[key]} and {folder}")
            out[key], source[key] = lr, folder
    return out


def tuned_grids(study_dirs: Sequence[str | Path], base: Mapping[str, Any], grid: Grid,
                batch_sizes: Sequence[int]) -> dict[int, list[dict]]:
    """`tuned_grid` at each batch size, the tuning studies read once (`merged_choices`); {} without any."""
    if not study_dirs:
        return {}
    choices = merged_choices(study_dirs)
    return {bs: tuned_grid(choices, base, grid, bs) for bs in batch_sizes}


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
