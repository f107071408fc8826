"""A study cell's runs: the cartesian product of grid values × seeds at one batch size.

Shared by the study runner (to plan, skip and report) and by the notebooks (to train), so both
agree on which runs a cell holds and where each one lives.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from samlib.config import Config


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


def _fmt(value: Any) -> str:
    text = "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def run_dirname(point: Mapping[str, Any], seed: int) -> str:
    """Folder name of one run from its grid values, e.g. ``m=32,rho=0.05,seed=0``."""
    return ",".join([f"{k}={_fmt(point[k])}" for k in sorted(point)] + [f"seed={seed}"])


def cell_configs(
    base: Mapping[str, Any],
    batch_size: int,
    seeds: Sequence[int],
    grid: Grid,
    run_root: str | Path,
) -> list[Config]:
    """The validated configs of one (notebook, batch size) cell, each with its own run_dir."""
    configs = []
    for point in expand_grid(grid):
        for seed in seeds:
            values = {**base, **point, "batch_size": batch_size, "seed": seed}
            values["run_dir"] = str(Path(run_root) / run_dirname(point, seed))
            configs.append(Config.from_dict(values))
    return configs
