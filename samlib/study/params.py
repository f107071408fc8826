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
``model`` (``cnn``, ``resnet8`` or ``"package.module:function"``) and ``data`` (``"package.module:function"``)
name the network and the data of the runs (`samlib.config.Config`); a reference is imported when the
file is read, and one naming a module that cannot be imported or a function it lacks is an error naming it.

`load_params` checks everything before anything runs (one `ParamsError` naming the key path, the
value and what is allowed, with the checkers of `samlib.validate`): a key given twice in the file, at
any depth; every Config value and sharpness setting; every run's data set, without loading it (an
IDX folder, ``idx:<folder>`` or ``data_dir``, must hold the four files); and every batch size against
the training images left after the validation split (`samlib.config.check_data`).

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

from samlib import milestones
from samlib.config import CHECKS as CONFIG_CHECKS
from samlib.config import Config, ConfigError, SharpnessSettings, check_data, load_yaml_mapping
from samlib.study import layout, tuning
from samlib.study.executors import notebook_task
from samlib.study.grid import cell_runs
from samlib.validate import check_keys, integer, invalid, join, list_of, mapping, text

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
RUNNER_KEYS = {"batch_size": "batch_sizes", "seed": "seeds", "run_dir": "the study layout"}
OVERRIDES = "notebooks"  # the key of per-notebook overrides under ``sharpness``
DEFAULT_SUMMARY = "summary"  # notebooks/summary.ipynb
_TOP_KEYS = {"study": True, "description": False, "seeds": True, "base": False, "sharpness": False,
             "notebooks": True, "summary": False}  # key -> required
_NOTEBOOK_KEYS = {"batch_sizes": True, "grid": False, "base": False, "seeds": False, "tuned_lr": False}


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
    #: tuning studies' folders: each run takes the lr one of them chose for its method (`tuning.tuned_grid`);
    #: empty: the grid's own lrs. Written as one folder or a list (each method tuned in exactly one of them)
    tuned_lr: tuple[str, ...] = ()


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


_NAME_RULE = "letters, digits, '_' and '-', starting with a letter or digit"
_STUDY = text(NAME_RE, f"a plain name: {_NAME_RULE}")
_NOTEBOOK = text(NAME_RE, f"a notebook name: {_NAME_RULE}")
_SUMMARY = text(NAME_RE, f"a notebook name ({_NAME_RULE})").or_none()
_SEEDS = list_of(integer(0), distinct=True)
_BATCH_SIZES = list_of(integer(1), distinct=True)


def load_params(path: str | Path, notebooks_dir: str | Path | None = None) -> StudyParams:
    """Read and check a study params file; raise one `ParamsError` naming the first bad key.

    Every value is checked by the checkers of `samlib.validate` (Config values by `Config`'s own, the
    sharpness settings by `SharpnessSettings.from_dict`); every run config of every cell is built with
    `grid.cell_runs`, and checked against its data set with `config.check_data` (an IDX folder must
    hold the four files; every batch size at most the training images after the validation split), so
    a bad value anywhere is caught here, before anything runs. `notebooks_dir` defaults to
    ``./notebooks``.
    """
    path = Path(path)
    try:
        raw = load_yaml_mapping(path)  # its errors name the file
    except ConfigError as err:
        raise ParamsError(str(err)) from None
    nbdir = Path(os.path.abspath(notebooks_dir if notebooks_dir is not None else "notebooks"))
    try:
        params = _read(raw, path, nbdir)
        cells = plan_cells(params, "/nonexistent-out")  # builds every run config of every cell
        _check_data(params, cells)
        _check_sharpness_milestones(params, cells)
    except ParamsError:
        raise
    except ConfigError as err:  # it names the key path, the value and what is allowed
        raise ParamsError(f"{path}: {err}") from None
    return params


def _read(raw: dict[str, Any], path: Path, nbdir: Path) -> StudyParams:
    check_keys(raw, _TOP_KEYS, required=[k for k, required in _TOP_KEYS.items() if required])
    study = _STUDY("study", raw["study"])
    description = text()("description", raw.get("description") or "")
    seeds = _SEEDS("seeds", raw["seeds"])
    base = mapping("base", raw.get("base"))
    _config_values("base", base)
    sharpness = mapping("sharpness", raw.get("sharpness"))
    shared = {k: v for k, v in sharpness.items() if k != OVERRIDES}
    SharpnessSettings.from_dict(shared, where="sharpness")
    overrides = mapping(f"sharpness.{OVERRIDES}", sharpness.get(OVERRIDES))
    notebooks_raw = raw["notebooks"]
    if not isinstance(notebooks_raw, dict) or not notebooks_raw:
        raise invalid("notebooks", notebooks_raw, "a non-empty mapping of notebook name -> cell spec")
    for name, value in overrides.items():
        key = f"sharpness.{OVERRIDES}.{name}"
        if name not in notebooks_raw:
            raise invalid(key, value, f"overrides for a notebook of this study: {', '.join(map(str, notebooks_raw))}")
        mapping(key, value)
    notebooks: dict[str, NotebookSpec] = {}
    for name, spec_raw in notebooks_raw.items():
        key = f"notebooks.{name}"
        _NOTEBOOK(key, name)
        spec = mapping(key, spec_raw, optional=False)
        check_keys(spec, _NOTEBOOK_KEYS, where=key, required=[k for k, req in _NOTEBOOK_KEYS.items() if req])
        batch_sizes = _BATCH_SIZES(f"{key}.batch_sizes", spec["batch_sizes"])
        nb_base = mapping(f"{key}.base", spec.get("base"))
        _config_values(f"{key}.base", nb_base)
        grid_raw = spec.get("grid")
        if isinstance(grid_raw, list):  # a union of sub-grids, e.g. [{m: [null, 32]}, {sam: [looksam]}]
            if not grid_raw:
                raise invalid(f"{key}.grid", grid_raw, "a mapping, or a non-empty list of mappings")
            grid = [mapping(f"{key}.grid[{i}]", sub) for i, sub in enumerate(grid_raw)]
            for i, sub in enumerate(grid):
                _config_values(f"{key}.grid[{i}]", sub, is_grid=True)
        else:
            grid = mapping(f"{key}.grid", grid_raw)
            _config_values(f"{key}.grid", grid, is_grid=True)
        _check_notebook_file(key, name, nbdir)
        where = f"sharpness.{OVERRIDES}.{name}"
        settings = SharpnessSettings.from_dict({**shared, **(overrides.get(name) or {})}, where=where)
        nb_seeds = _SEEDS(f"{key}.seeds", spec["seeds"]) if "seeds" in spec else ()
        tuned = tuning.folders(f"{key}.tuned_lr", spec["tuned_lr"]) if "tuned_lr" in spec else ()
        notebooks[name] = NotebookSpec(name, batch_sizes, grid, nb_base, settings, tuple(nb_seeds), tuned)
    summary = _SUMMARY("summary", raw.get("summary", DEFAULT_SUMMARY))
    if summary is not None:
        if summary in notebooks:
            raise invalid("summary", summary, "a notebook that is not also a grid notebook")
        _check_notebook_file("summary", summary, nbdir)
    return StudyParams(study, description, seeds, base, sharpness, notebooks, summary, path, nbdir)


def _config_values(key: str, values: Mapping[str, Any], is_grid: bool = False) -> None:
    """Each key a Config field the runner does not set, each value (each grid value) one its checker
    accepts (grid values stay as written: they name the run folders)."""
    for k, v in values.items():
        if k in RUNNER_KEYS:
            raise invalid(join(key, k), v, f"no {k!r} here: the runner sets it from {RUNNER_KEYS[k]}")
    check_keys(values, [k for k in CONFIG_CHECKS if k not in RUNNER_KEYS], where=key, label="Config key")
    for k, v in values.items():
        check = CONFIG_CHECKS[k]
        (list_of(check) if is_grid else check)(join(key, k), v)


def _check_notebook_file(key: str, name: str, nbdir: Path) -> None:
    file = nbdir / f"{name}.ipynb"
    if not file.is_file():
        found = sorted(p.stem for p in nbdir.glob("*.ipynb")) if nbdir.is_dir() else []
        raise invalid(
            key, name,
            f"the name of a notebook in {nbdir}, but {file} does not exist "
            f"(found: {', '.join(found) or 'none'})",
        )


def _check_data(params: StudyParams, cells: Sequence["Cell"]) -> None:
    """Every run config against its data set (`config.check_data`), errors naming the key that set it."""
    sizes: dict = {}
    for cell in cells:
        spec = params.notebooks[cell.notebook]
        for point, _, config in cell.runs:
            keys = {k: _written_at(spec, point, k) for k in ("dataset", "data_dir", "data")}
            check_data(config, {**keys, "batch_size": f"notebooks.{spec.name}.batch_sizes"}, "key", sizes)


def _check_sharpness_milestones(params: StudyParams, cells: Sequence["Cell"]) -> None:
    """Every milestone a ``sharpness: milestones:`` setting names is a milestone of a run it applies to:
    a notebook's own setting, of that notebook's runs; the study's, of the runs of some notebook that
    does not set its own (a name no run reaches would measure nothing, silently)."""
    have: dict[str, set[str]] = {name: set() for name in params.notebooks}
    for cell in cells:
        have[cell.notebook].update(m.name for _, _, config in cell.runs for m in milestones.of_config(config))
    overrides = params.sharpness.get(OVERRIDES) or {}
    named = [(f"sharpness.{OVERRIDES}.{nb}.milestones", (o or {}).get("milestones") or {}, have[nb])
             for nb, o in overrides.items() if "milestones" in (o or {})]
    users = [nb for nb in params.notebooks if "milestones" not in (overrides.get(nb) or {})]
    named.append(("sharpness.milestones", params.sharpness.get("milestones") or {},
                  set().union(*(have[nb] for nb in users))))
    for key, setting, known in named:
        for name, measures in setting.items():
            if milestones.Milestone.parse(str(name)).name not in known:
                raise invalid(f"{key}.{name}", measures, "a milestone of the runs it applies to: "
                              + (", ".join(sorted(known)) or "none (they have no milestones)"))


def _written_at(spec: NotebookSpec, point: Mapping[str, Any], key: str) -> str:
    """The key path that gave a run of this notebook its value of Config key `key`."""
    where = f"notebooks.{spec.name}"
    if key in point:
        if isinstance(spec.grid, list):
            i = next(i for i, sub in enumerate(spec.grid) if key in sub and point[key] in sub[key])
            return f"{where}.grid[{i}].{key}"
        return f"{where}.grid.{key}"
    return f"{where}.base.{key}" if key in spec.base else f"base.{key}"


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
        return notebook_task(f"{self.notebook}-{self.batch_size}", self.input, self.output, self.parameters,
                             self.status_path, layout.kernel_log(self.run_root), self.run_root.parent.parent.parent,
                             {"cell": self.name, "batch_size": self.batch_size, "runs": len(self.runs)})

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
        base = {**params.base, **spec.base, **({"lr_tuned": True} if spec.tuned_lr else {})}
        try:  # each method's lr from the one tuning study that chose it, at every batch size
            grids = tuning.tuned_grids(spec.tuned_lr, base, spec.grid, spec.batch_sizes)
        except (ValueError, ConfigError) as err:
            shown = spec.tuned_lr[0] if len(spec.tuned_lr) == 1 else list(spec.tuned_lr)
            why = invalid(f"notebooks.{name}.tuned_lr", shown, "tuning studies, each with a tuned lr for other "
                          f"runs of this notebook, together for every one ({err})")
            raise ParamsError(f"{params.path}: {why}") from None
        for bs in spec.batch_sizes:
            run_root = layout.cell_dir(sdir, name, bs)
            grid = grids.get(bs, spec.grid)
            try:
                runs = cell_runs(base, bs, list(spec.seeds or params.seeds), grid, run_root)
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
                "grid": grid,
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
