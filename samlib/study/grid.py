"""A study cell's runs: the cartesian product of grid values × seeds at one batch size.

Shared by the study planner (to plan, skip and report) and by the cells (to train), so both agree on
which runs a cell holds and where each one lives (`layout.run_dirname`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

from samlib.config import Config
from samlib.study.layout import run_dirname

Grid = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]] | None


def expand_grid(grid: Grid) -> list[dict[str, Any]]:
    """All combinations of the grid's values, keys in sorted order: {a: [1, 2], b: [x]} → 2 points.

    A list of grids is their union, in order: [{m: [null, 32]}, {sam: [looksam]}] → 3 points (for
    combinations that do not cross, e.g. LookSAM has no micro-batch size m).
    """
    if isinstance(grid, Sequence) and not isinstance(grid, str):
        return [point for sub in grid for point in expand_grid(sub)]
    grid = dict(grid or {})
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def cell_runs(
    base: Mapping[str, Any], batch_size: int, seeds: Sequence[int], grid: Grid, run_root: str | Path
) -> list[tuple[dict[str, Any], int, Config]]:
    """(grid point, seed, validated config with its own run_dir) of each run of one cell, in order:
    grid points as `expand_grid` gives them, seeds within each point. A point whose micro-batch size m
    is >= the batch size is left out (it would be plain SAM under another label)."""
    runs = []
    for point in expand_grid(grid):
        m = {**base, **point}.get("m")
        if m is not None and m >= batch_size:  # m-SAM with m >= B is plain SAM: not a run of its own
            continue
        for seed in seeds:
            values = {**base, **point, "batch_size": batch_size, "seed": seed}
            values["run_dir"] = str(Path(run_root) / run_dirname(point, seed))
            runs.append((point, seed, Config.from_dict(values)))
    return runs


def cell_configs(
    base: Mapping[str, Any], batch_size: int, seeds: Sequence[int], grid: Grid, run_root: str | Path
) -> list[Config]:
    """The validated configs of one (notebook, batch size) cell, each with its own run_dir."""
    return [config for _, _, config in cell_runs(base, batch_size, seeds, grid, run_root)]
