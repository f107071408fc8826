"""A study params file: its schema, `load_params` (every key checked before anything runs) and the plan
(`plan_cells`: the cells and every run's Config).

Params file (YAML)::

    study: quick                  # required; a plain name ^[A-Za-z0-9][A-Za-z0-9_-]*$
    description: "..."            # optional text
    seeds: [0, 1]                 # required; non-empty list of distinct ints >= 0
    base: {epochs: 30}            # optional; Config keys for every run
    sharpness:                    # optional; SharpnessSettings keys (samlib.config), for every run
      subset: 256
      notebooks:                  # optional; per-notebook overrides of those settings
        lr_scaling: {measures: [sam]}
    notebooks:                    # required; name -> notebooks/<name>.ipynb (a plain name)
      sam_sgd:
        batch_sizes: [32, 1024]   # required; non-empty list of distinct ints >= 1
        base: {sam: sam}          # optional; Config keys, override the study's base
        grid: {m: [null, 32]}     # optional; Config key -> non-empty list (or a list of such
                                  # mappings: their union); overrides base. A point with m >= the
                                  # batch size is left out (plain SAM under another label)
        seeds: [0, 1, 2]          # optional; this notebook's seeds instead of the study's
    summary: summary              # optional; notebook run last (default "summary"; null: none)

``batch_size``, ``seed`` and ``run_dir`` are set by the runner and may not appear in base or grid.

A *cell* is one (notebook, batch size): all seeds and grid points of that batch size run inside one
papermill execution, because a kernel that imports TensorFlow takes seconds to start. Its papermill
parameters are ``run_root, batch_size, seeds, base, grid, sharpness, study_dir`` (``sharpness``: the
notebook's full settings, overrides applied); the notebook builds its runs with
``grid.cell_configs(base, batch_size, seeds, grid, run_root)``, so the planner knows every run's
folder and Config without executing anything.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from samlib.config import Config, ConfigError, SharpnessSettings, load_yaml_mapping
from samlib.study import layout
from samlib.study.grid import cell_runs

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
RUNNER_KEYS = {"batch_size": "batch_sizes", "seed": "seeds", "run_dir": "the study layout"}
OVERRIDES = "notebooks"  # the key of per-notebook overrides under ``sharpness``
DEFAULT_SUMMARY = "summary"  # notebooks/summary.ipynb
_TOP_KEYS = {"study": True, "description": False, "seeds": True, "base": False, "sharpness": False,
             "notebooks": True, "summary": False}  # key -> required
_NOTEBOOK_KEYS = {"batch_sizes": True, "grid": False, "base": False, "seeds": False}
_CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(Config))


class ParamsError(ConfigError):
    """A study params file (or a runner argument) is invalid; the message names key, value, allowed."""


# ---------------------------------------------------------------------- params
@dataclasses.dataclass(frozen=True)
class NotebookSpec:
    name: str
    batch_sizes: tuple[int, ...]
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]]
    base: dict[str, Any]
    sharpness: SharpnessSettings  # the study's settings with this notebook's overrides
    seeds: tuple[int, ...] = ()  # this notebook's own seeds (empty: the study's)


@dataclasses.dataclass(frozen=True)
class StudyParams:
    study: str
    description: str
    seeds: tuple[int, ...]
    base: dict[str, Any]
    sharpness: dict[str, Any]  # as written (overrides included); the checked ones are per notebook
    notebooks: dict[str, NotebookSpec]  # in the params file's order
    summary: str | None
    path: Path  # the params file
    notebooks_dir: Path  # absolute

    def notebook_path(self, name: str) -> Path:
        return self.notebooks_dir / f"{name}.ipynb"

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "description": self.description,
            "seeds": list(self.seeds),
            "base": self.base,
            "sharpness": self.sharpness,
            "notebooks": {
                n: {"batch_sizes": list(s.batch_sizes), "base": s.base, "grid": s.grid,
                    "seeds": list(s.seeds or self.seeds),
                    "sharpness": s.sharpness.to_dict()}
                for n, s in self.notebooks.items()
            },
            "summary": self.summary,
        }


class _Checker:
    """Builds the one error message: ``<file>: key 'a.b.c' has value ...; allowed: ...``."""

    def __init__(self, path: Path) -> None:
        self.file = str(path)

    def fail(self, key: str, value: Any, allowed: str) -> ParamsError:
        return ParamsError(f"{self.file}: key {key!r} has value {value!r}; allowed: {allowed}")

    def mapping(self, key: str, value: Any, spec: Mapping[str, bool] | None = None) -> dict[str, Any]:
        """A mapping with string keys; with `spec`, only its keys and all the required ones."""
        if value is None and spec is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, value, "a mapping of keys to values")
        for k in value:
            if not isinstance(k, str):
                raise self.fail(_join(key, k), value[k], "string keys only")
        if spec is not None:
            for k in value:
                if k not in spec:
                    where = f"under {key!r}" if key else "at the top level"
                    raise ParamsError(
                        f"{self.file}: unknown key {_join(key, k)!r} (value {value[k]!r}); "
                        f"allowed keys {where}: {', '.join(spec)}"
                    )
            for k, required in spec.items():
                if required and k not in value:
                    raise ParamsError(f"{self.file}: missing required key {_join(key, k)!r}")
        return dict(value)

    def int_list(self, key: str, value: Any, lo: int) -> tuple[int, ...]:
        allowed = f"a non-empty list of distinct integers >= {lo}"
        if not isinstance(value, list) or not value:
            raise self.fail(key, value, allowed)
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise self.fail(key, value, f"{allowed} ({v!r} is not)")
        if len(set(value)) != len(value):
            raise self.fail(key, value, f"{allowed} (duplicates)")
        return tuple(value)

    def name(self, key: str, value: Any, what: str) -> str:
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            raise self.fail(
                key, value, f"{what}: letters, digits, '_' and '-', starting with a letter or digit"
            )
        return value

    def config_values(self, key: str, values: Mapping[str, Any], is_grid: bool = False) -> None:
        """Each key a Config field the runner does not set, each value (each grid value) valid."""
        for k, v in values.items():
            path = _join(key, k)
            if k in RUNNER_KEYS:
                raise self.fail(path, v, f"no {k!r} here: the runner sets it from {RUNNER_KEYS[k]}")
            if k not in _CONFIG_KEYS:
                raise ParamsError(
                    f"{self.file}: unknown Config key {path!r} (value {v!r}); allowed keys: "
                    f"{', '.join(k for k in _CONFIG_KEYS if k not in RUNNER_KEYS)}"
                )
            if is_grid and (not isinstance(v, list) or not v):
                raise self.fail(path, v, f"a non-empty list of values for Config key {k!r}")
            for item in v if is_grid else [v]:
                try:
                    Config.from_dict({k: item})
                except ConfigError as err:
                    raise self.config_error(path, item, err) from None

    def config_error(self, key: str, value: Any, err: ConfigError) -> ParamsError:
        hint = ""
        if isinstance(value, str):
            try:
                float(value)
                hint = " (YAML reads numbers like 1e-3 as strings: write 1.0e-3)"
            except ValueError:
                pass
        return ParamsError(f"{self.file}: key {key!r}: {err}{hint}")

    def sharpness(self, where: str, values: Mapping[str, Any]) -> SharpnessSettings:
        try:
            return SharpnessSettings.from_dict(values, where=where)
        except ConfigError as err:  # it names the key path, the value and what is allowed
            raise ParamsError(f"{self.file}: {err}") from None


def _join(parent: str, key: Any) -> str:
    return f"{parent}.{key}" if parent else str(key)


def load_params(path: str | Path, notebooks_dir: str | Path | None = None) -> StudyParams:
    """Read and check a study params file; raise one `ParamsError` naming the first bad key.

    Every run config of every cell is built with `grid.cell_runs` and every notebook's sharpness
    settings with `SharpnessSettings.from_dict`, so a bad value anywhere is caught here, before
    anything runs. `notebooks_dir` defaults to ``./notebooks``.
    """
    path = Path(path)
    try:
        raw = load_yaml_mapping(path)
    except ConfigError as err:
        raise ParamsError(str(err)) from None
    check = _Checker(path)
    top = check.mapping("", raw, _TOP_KEYS)
    study = check.name("study", top["study"], "a plain name")
    description = top.get("description") or ""
    if not isinstance(description, str):
        raise check.fail("description", description, "a text")
    seeds = check.int_list("seeds", top["seeds"], lo=0)
    base = check.mapping("base", top.get("base"))
    check.config_values("base", base)
    sharpness = check.mapping("sharpness", top.get("sharpness"))
    shared = {k: v for k, v in sharpness.items() if k != OVERRIDES}
    check.sharpness("sharpness", shared)
    overrides = check.mapping(f"sharpness.{OVERRIDES}", sharpness.get(OVERRIDES))
    nbdir = Path(os.path.abspath(notebooks_dir if notebooks_dir is not None else "notebooks"))
    notebooks_raw = top["notebooks"]
    if not isinstance(notebooks_raw, dict) or not notebooks_raw:
        raise check.fail("notebooks", notebooks_raw, "a non-empty mapping of notebook name -> cell spec")
    for name, value in overrides.items():
        key = f"sharpness.{OVERRIDES}.{name}"
        if name not in notebooks_raw:
            raise check.fail(key, value, f"overrides for a notebook of this study: {', '.join(map(str, notebooks_raw))}")
        check.mapping(key, value)
    notebooks: dict[str, NotebookSpec] = {}
    for name, spec_raw in notebooks_raw.items():
        key = f"notebooks.{name}"
        check.name(key, name, "a notebook name")
        spec = check.mapping(key, spec_raw, _NOTEBOOK_KEYS)
        batch_sizes = check.int_list(f"{key}.batch_sizes", spec["batch_sizes"], lo=1)
        nb_base = check.mapping(f"{key}.base", spec.get("base"))
        check.config_values(f"{key}.base", nb_base)
        grid_raw = spec.get("grid")
        if isinstance(grid_raw, list):  # a union of sub-grids, e.g. [{m: [null, 32]}, {sam: [looksam]}]
            if not grid_raw:
                raise check.fail(f"{key}.grid", grid_raw, "a mapping, or a non-empty list of mappings")
            grid = [check.mapping(f"{key}.grid[{i}]", sub) for i, sub in enumerate(grid_raw)]
            for i, sub in enumerate(grid):
                check.config_values(f"{key}.grid[{i}]", sub, is_grid=True)
        else:
            grid = check.mapping(f"{key}.grid", grid_raw)
            check.config_values(f"{key}.grid", grid, is_grid=True)
        _check_notebook_file(check, key, name, nbdir)
        settings = check.sharpness(f"sharpness.{OVERRIDES}.{name}", {**shared, **(overrides.get(name) or {})})
        nb_seeds = check.int_list(f"{key}.seeds", spec["seeds"], lo=0) if "seeds" in spec else ()
        notebooks[name] = NotebookSpec(name, batch_sizes, grid, nb_base, settings, tuple(nb_seeds))
    summary = top.get("summary", DEFAULT_SUMMARY)
    if summary is not None:
        check.name("summary", summary, "a notebook name, or null for no summary")
        if summary in notebooks:
            raise check.fail("summary", summary, "a notebook that is not also a grid notebook")
        _check_notebook_file(check, "summary", summary, nbdir)
    params = StudyParams(study, description, seeds, base, sharpness, notebooks, summary, path, nbdir)
    plan_cells(params, "/nonexistent-out")  # builds (validates) every run config of every cell
    return params


def _check_notebook_file(check: _Checker, key: str, name: str, nbdir: Path) -> None:
    file = nbdir / f"{name}.ipynb"
    if not file.is_file():
        found = sorted(p.stem for p in nbdir.glob("*.ipynb")) if nbdir.is_dir() else []
        raise check.fail(
            key, name,
            f"the name of a notebook in {nbdir}, but {file} does not exist "
            f"(found: {', '.join(found) or 'none'})",
        )


# ---------------------------------------------------------------------- plan
@dataclasses.dataclass(eq=False)
class Cell:
    """One (notebook, batch size): one papermill execution holding its runs."""

    notebook: str
    batch_size: int
    run_root: Path  # layout.cell_dir(study folder, notebook, batch size)
    runs: list[tuple[dict[str, Any], int, Config]]  # (grid point, seed, config) as grid.cell_runs gives
    sharpness: SharpnessSettings  # what its runs are measured with
    parameters: dict[str, Any]  # the papermill parameters
    input: Path  # the notebook to execute

    @property
    def name(self) -> str:
        return f"{self.notebook}/{self.batch_size}"

    @property
    def configs(self) -> list[Config]:
        return [config for _, _, config in self.runs]

    @property
    def output(self) -> Path:
        return layout.executed_notebook(self.run_root, self.notebook)

    @property
    def status_path(self) -> Path:
        return layout.cell_status(self.run_root)

    def task(self) -> dict[str, Any]:
        """The executor's task (see `samlib.study.executors`)."""
        return {
            "id": f"{self.notebook}-{self.batch_size}",
            "input": str(self.input),
            "output": str(self.output),
            "cwd": str(self.input.parent),
            "parameters": self.parameters,
            "status_path": str(self.status_path),
            "kernel_log": str(layout.kernel_log(self.run_root)),
            "info": {"cell": self.name, "batch_size": self.batch_size, "runs": len(self.runs)},
        }

    def record(self) -> dict[str, Any]:
        """This cell's entry in study.json."""
        return layout.cell_record(self.notebook, self.batch_size, self.run_root, self.runs)


def study_dir(params: StudyParams, out: str | Path) -> Path:
    return Path(os.path.abspath(out)) / params.study


def plan_cells(params: StudyParams, out: str | Path = "outputs") -> list[Cell]:
    """All cells in a stable order: notebooks in the params file's order, batch sizes as listed."""
    sdir = study_dir(params, out)
    cells = []
    for name, spec in params.notebooks.items():
        base = {**params.base, **spec.base}
        for bs in spec.batch_sizes:
            run_root = layout.cell_dir(sdir, name, bs)
            try:
                runs = cell_runs(base, bs, list(spec.seeds or params.seeds), spec.grid, run_root)
            except ConfigError as err:
                raise ParamsError(
                    f"{params.path}: key 'notebooks.{name}' at batch size {bs}: {err}"
                ) from None
            dirs = [c.run_dir for _, _, c in runs]
            if len(set(dirs)) != len(dirs):
                dup = next(d for d in dirs if dirs.count(d) > 1)
                raise ParamsError(
                    f"{params.path}: key 'notebooks.{name}.grid' has value {spec.grid!r}; allowed: "
                    f"values that give distinct run folders (two runs would share {Path(dup).name!r})"
                )
            parameters = {
                "run_root": str(run_root),
                "batch_size": bs,
                "seeds": list(spec.seeds or params.seeds),
                "base": base,
                "grid": spec.grid,
                "sharpness": spec.sharpness.to_dict(),
                "study_dir": str(sdir),
            }
            cells.append(Cell(name, bs, run_root, runs, spec.sharpness, parameters, params.notebook_path(name)))
    return cells


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 <= I < N) → (I, N)."""
    if text is None or isinstance(text, tuple):
        shard = text
    else:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        shard = (int(match.group(1)), int(match.group(2))) if match else None
        if shard is None:
            raise ParamsError(f"--shard has value {text!r}; allowed: I/N with 0 <= I < N, e.g. 0/4")
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ParamsError(f"--shard has value {text!r}; allowed: I/N with 0 <= I < N, e.g. 0/4")
    return shard


def select_cells(
    params: StudyParams,
    cells: Sequence[Cell],
    only: Iterable[str] | str | None = None,
    shard: str | tuple[int, int] | None = None,
) -> list[Cell]:
    """Restrict to the notebooks in `only` (names, or comma lists), then take every N-th cell."""
    names = only_names(params, only)
    chosen = [c for c in cells if names is None or c.notebook in names]
    shard = parse_shard(shard)
    if shard is not None:
        i, n = shard
        chosen = chosen[i::n]
    return chosen


def only_names(params: StudyParams, only: Iterable[str] | str | None) -> set[str] | None:
    """The notebook names of ``--only`` (repeatable, or comma lists); None: all notebooks."""
    if not only:
        return None
    items = [only] if isinstance(only, str) else list(only)
    names = {n.strip() for item in items for n in item.split(",") if n.strip()}
    for n in sorted(names):
        if n not in params.notebooks:
            raise ParamsError(
                f"--only has value {n!r}; allowed: notebooks of {params.path}: {', '.join(params.notebooks)}"
            )
    return names
