"""The study runner: a params file → a grid of papermill notebook executions → the summary notebook.

``python -m samlib study PARAMS [--out DIR] [--jobs N] [--shard I/N] [--only NB] [--dry-run]
[--executor local|dask] [--scheduler ADDRESS] [--notebooks DIR] [--no-summary]``

Params file (YAML; every key is checked before anything runs, see `load_params`)::

    study: quick                  # required; a plain name ^[A-Za-z0-9][A-Za-z0-9_-]*$
    description: "..."            # optional text
    seeds: [0, 1]                 # required; non-empty list of distinct ints >= 0
    base: {epochs: 30}            # optional; Config keys for every run
    sharpness: {samples: 1000}    # optional; free-form mapping handed to the notebooks
    notebooks:                    # required; name -> notebooks/<name>.ipynb (a plain name)
      sam_sgd:
        batch_sizes: [32, 1024]   # required; non-empty list of distinct ints >= 1
        base: {sam: sam}          # optional; Config keys, override the study's base
        grid: {m: [null, 32]}     # optional; Config key -> non-empty list; overrides base
    summary: summary              # optional; notebook run last (default "summary"; null: none)

``batch_size``, ``seed`` and ``run_dir`` are set by the runner and may not appear in base or grid.

Layout under ``<out>/<study>/`` (the study folder)::

    study.json                        the resolved params and every cell's runs (for the summary)
    runs/<nb>/<batch_size>/<nb>.ipynb the executed notebook of one cell (with any error in it)
    runs/<nb>/<batch_size>/status.json running | ok | failed, error, timing (written atomically)
    runs/<nb>/<batch_size>/kernel.log the kernel process's own stdout/stderr (TF's C++ lines, crashes)
    runs/<nb>/<batch_size>/<run>/     one run (train.py's files); <run> = grid.run_dirname(...)
    summary.ipynb, summary.status.json, summary.kernel.log
    figures/, results.csv, report.html  written by the summary notebook

A *cell* is one (notebook, batch size): all seeds and grid points of that batch size run inside one
papermill execution, because a kernel that imports TensorFlow takes seconds to start. Its papermill
parameters are ``run_root, batch_size, seeds, base, grid, sharpness, study_dir``; the notebook builds
its runs with ``grid.cell_configs(base, batch_size, seeds, grid, run_root)`` and skips the complete
ones (``train.is_complete``), so the runner knows every run's folder and Config without executing
anything. Kernels run with the notebooks folder as working directory (as in ``jupyter lab notebooks``);
all paths handed to them are absolute.

``--notebooks`` defaults to ``./notebooks`` and ``--out`` to ``./outputs`` (run from the repo root).

Resume: a cell is skipped when its status.json says ``ok``, its executed notebook exists and every one
of its runs is complete. A cell interrupted in any way (even ``kill -9``: status stays ``running``) is
executed again and its notebook skips the runs that finished, so nothing is lost or redone but the
run that was cut. The summary is skipped when it succeeded before on exactly the same cell statuses,
params file and summary notebook.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from samlib import io
from samlib.config import Config, ConfigError, load_yaml_mapping
from samlib.study.grid import cell_configs, expand_grid
from samlib.rundir import is_complete

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
EXECUTORS = ("local", "dask")
RUNNER_KEYS = {"batch_size": "batch_sizes", "seed": "seeds", "run_dir": "the study layout"}
_TOP_KEYS = {"study": True, "description": False, "seeds": True, "base": False, "sharpness": False,
             "notebooks": True, "summary": False}  # key -> required
_NOTEBOOK_KEYS = {"batch_sizes": True, "grid": False, "base": False}
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


@dataclasses.dataclass(frozen=True)
class StudyParams:
    study: str
    description: str
    seeds: tuple[int, ...]
    base: dict[str, Any]
    sharpness: dict[str, Any]
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
                n: {"batch_sizes": list(s.batch_sizes), "base": s.base, "grid": s.grid}
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
                raise self.fail(f"{key}.{k}" if key else str(k), value[k], "string keys only")
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


def _join(parent: str, key: Any) -> str:
    return f"{parent}.{key}" if parent else str(key)


def load_params(path: str | Path, notebooks_dir: str | Path | None = None) -> StudyParams:
    """Read and check a study params file; raise one `ParamsError` naming the first bad key.

    Every run config of every cell is built with `grid.cell_configs`, so a bad Config value anywhere
    is caught here, before anything runs. `notebooks_dir` defaults to ``./notebooks``.
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
    nbdir = Path(os.path.abspath(notebooks_dir if notebooks_dir is not None else "notebooks"))
    notebooks_raw = top["notebooks"]
    if not isinstance(notebooks_raw, dict) or not notebooks_raw:
        raise check.fail("notebooks", notebooks_raw, "a non-empty mapping of notebook name -> cell spec")
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
        notebooks[name] = NotebookSpec(name, batch_sizes, grid, nb_base)
    summary = top.get("summary", "summary")
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
    run_root: Path  # <study_dir>/runs/<nb>/<batch_size>
    configs: list[Config]
    parameters: dict[str, Any]  # the papermill parameters
    input: Path  # the notebook to execute

    @property
    def name(self) -> str:
        return f"{self.notebook}/{self.batch_size}"

    @property
    def output(self) -> Path:
        return self.run_root / f"{self.notebook}.ipynb"

    @property
    def status_path(self) -> Path:
        return self.run_root / "status.json"

    @property
    def run_dirs(self) -> list[Path]:
        return [Path(c.run_dir) for c in self.configs]

    def task(self) -> dict[str, Any]:
        return {
            "id": f"{self.notebook}-{self.batch_size}",
            "input": str(self.input),
            "output": str(self.output),
            "cwd": str(self.input.parent),
            "parameters": self.parameters,
            "status_path": str(self.status_path),
            "kernel_log": str(self.run_root / "kernel.log"),
            "info": {"cell": self.name, "batch_size": self.batch_size, "runs": len(self.configs)},
        }


def study_dir(params: StudyParams, out: str | Path) -> Path:
    return Path(os.path.abspath(out)) / params.study


def plan_cells(params: StudyParams, out: str | Path = "outputs") -> list[Cell]:
    """All cells in a stable order: notebooks in the params file's order, batch sizes as listed."""
    sdir = study_dir(params, out)
    cells = []
    for name, spec in params.notebooks.items():
        base = {**params.base, **spec.base}
        for bs in spec.batch_sizes:
            run_root = sdir / "runs" / name / str(bs)
            try:
                configs = cell_configs(base, bs, list(params.seeds), spec.grid, run_root)
            except ConfigError as err:
                raise ParamsError(
                    f"{params.path}: key 'notebooks.{name}' at batch size {bs}: {err}"
                ) from None
            dirs = [c.run_dir for c in configs]
            if len(set(dirs)) != len(dirs):
                dup = next(d for d in dirs if dirs.count(d) > 1)
                raise ParamsError(
                    f"{params.path}: key 'notebooks.{name}.grid' has value {spec.grid!r}; allowed: "
                    f"values that give distinct run folders (two runs would share {Path(dup).name!r})"
                )
            parameters = {
                "run_root": str(run_root),
                "batch_size": bs,
                "seeds": list(params.seeds),
                "base": base,
                "grid": spec.grid,
                "sharpness": params.sharpness,
                "study_dir": str(sdir),
            }
            cells.append(Cell(name, bs, run_root, configs, parameters, params.notebook_path(name)))
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
    names = _only_names(params, only)
    chosen = [c for c in cells if names is None or c.notebook in names]
    shard = parse_shard(shard)
    if shard is not None:
        i, n = shard
        chosen = chosen[i::n]
    return chosen


def _only_names(params: StudyParams, only: Iterable[str] | str | None) -> set[str] | None:
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


# ---------------------------------------------------------------------- state


def complete_runs(cell: Cell) -> int:
    return sum(is_complete(c.run_dir, c) for c in cell.configs)


def _notebook_ok(cell: Cell) -> bool:
    return io.read_json_dict(cell.status_path).get("status") == "ok" and cell.output.is_file()


def cell_done(cell: Cell) -> bool:
    """Skip this cell: status ok, executed notebook present, every run complete."""
    return _notebook_ok(cell) and complete_runs(cell) == len(cell.configs)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def summary_fingerprint(params: StudyParams, cells: Sequence[Cell]) -> str:
    """Changes whenever a cell's status, the params file or the summary notebook changes."""
    h = hashlib.sha256()
    h.update(_sha256(Path(params.path)).encode())
    h.update(_sha256(params.notebook_path(params.summary or "")).encode())
    for cell in cells:
        h.update(f"{cell.name}\0{_sha256(cell.status_path)}\0".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------- report
@dataclasses.dataclass
class CellResult:
    name: str  # "<nb>/<batch_size>", or "summary"
    state: str  # ok | failed | skipped; in a dry run: run | skipped
    output: Path  # executed notebook
    status_path: Path
    runs: int = 0
    complete: int = 0  # runs complete when planned
    error: str | None = None
    seconds: float | None = None


@dataclasses.dataclass
class StudyReport:
    study: str
    study_dir: Path
    cells: list[CellResult]
    summary: CellResult | None  # None: not run (sharded, --no-summary, summary: null, dry run)
    dry_run: bool = False

    def _with(self, state: str) -> list[CellResult]:
        items = self.cells + ([self.summary] if self.summary else [])
        return [r for r in items if r.state == state]

    @property
    def ok(self) -> list[CellResult]:
        return self._with("ok")

    @property
    def skipped(self) -> list[CellResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[CellResult]:
        return self._with("failed")

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# ---------------------------------------------------------------------- runner
def run_study(
    params_path: str | Path,
    out: str | Path = "outputs",
    jobs: int = 1,
    shard: str | tuple[int, int] | None = None,
    only: Iterable[str] | str | None = None,
    dry_run: bool = False,
    executor: str = "local",
    scheduler: str | None = None,
    notebooks_dir: str | Path | None = None,
    summary: bool = True,
    progress: bool = True,
    stream=None,
) -> StudyReport:
    """Run (or with `dry_run` only print) a study; see the module doc. Raises `ParamsError` for bad
    params/arguments before writing anything; failing notebooks are reported, not raised."""
    stream = stream or sys.stdout
    say = lambda text: print(text, file=stream, flush=True)
    if executor not in EXECUTORS:
        raise ParamsError(f"--executor has value {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ParamsError(f"--jobs has value {jobs!r}; allowed: an integer >= 1")
    params = load_params(params_path, notebooks_dir)
    shard = parse_shard(shard)
    all_cells = plan_cells(params, out)
    cells = select_cells(params, all_cells, only, shard)
    sdir = study_dir(params, out)
    run_summary = summary and params.summary is not None and (shard is None or shard[1] == 1)

    results: dict[str, CellResult] = {}
    todo: list[Cell] = []
    for cell in cells:
        done = complete_runs(cell)
        skip = done == len(cell.configs) and _notebook_ok(cell)
        results[cell.name] = CellResult(
            cell.name, "skipped" if skip else "run", cell.output, cell.status_path, len(cell.configs), done
        )
        if not skip:
            todo.append(cell)
    report = StudyReport(params.study, sdir, [results[c.name] for c in cells], None, dry_run)

    if dry_run:
        _print_plan(say, params, sdir, cells, results, shard, only, run_summary)
        return report

    _write_plan(params, sdir, all_cells)
    say(
        f"study {params.study}: {len(cells)} cells ({sum(len(c.configs) for c in cells)} runs) in {sdir}; "
        f"{len(cells) - len(todo)} complete, {len(todo)} to run, executor {executor}"
        + (f" ({scheduler})" if scheduler else f", {jobs} at once")
    )
    by_id = {c.task()["id"]: c for c in todo}
    with contextlib.ExitStack() as stack:
        pool = _LazyExecutor(stack, executor, jobs, scheduler)  # started only if something runs
        if todo:
            with _progress(len(todo), progress) as bar:
                for task, status in pool.get().map(c.task() for c in todo):
                    cell = by_id[task["id"]]
                    result = _cell_finished(cell, results[cell.name], status)
                    line = f"[{result.state:>6}] {cell.name}: {result.runs} runs, {_secs(result.seconds)}"
                    if result.error:
                        line += f" - {result.error} (see {cell.output})"
                    bar.write(line, file=stream)
                    bar.update(1)
        if run_summary:
            report.summary = _run_summary(params, sdir, all_cells, pool, say)
    _print_report(say, report)
    return report


def _cell_finished(cell: Cell, result: CellResult, status: dict[str, Any]) -> CellResult:
    """Record a finished cell; a notebook that ended without error but left runs incomplete failed."""
    result.seconds = status.get("seconds")
    if status.get("status") == "ok":
        result.complete = complete_runs(cell)
        if result.complete < result.runs:
            missing = [str(c.run_dir) for c in cell.configs if not is_complete(c.run_dir, c)]
            status = io.update_json(
                cell.status_path,
                status="failed",
                error=f"the notebook ended without error but {len(missing)} of {result.runs} runs "
                f"are not complete, e.g. {missing[0]}",
            )
    result.state = "ok" if status.get("status") == "ok" else "failed"
    result.error = status.get("error")
    return result


def _run_summary(params, sdir, all_cells, pool, say) -> CellResult:
    output, status_path = sdir / "summary.ipynb", sdir / "summary.status.json"
    fingerprint = summary_fingerprint(params, all_cells)
    result = CellResult("summary", "skipped", output, status_path)
    previous = io.read_json_dict(status_path)
    if previous.get("status") == "ok" and previous.get("fingerprint") == fingerprint and output.is_file():
        return result
    nb = params.notebook_path(params.summary)
    task = {
        "id": "summary",
        "input": str(nb),
        "output": str(output),
        "cwd": str(nb.parent),
        "parameters": {"study_dir": str(sdir)},
        "status_path": str(status_path),
        "kernel_log": str(sdir / "summary.kernel.log"),
        "info": {"cell": "summary", "fingerprint": fingerprint},
    }
    say(f"summary: executing {nb.name} -> {output}")
    for _, status in pool.get().map([task]):
        result.state = "ok" if status.get("status") == "ok" else "failed"
        result.error, result.seconds = status.get("error"), status.get("seconds")
    return result


class _LazyExecutor:
    """The executor (for dask: a cluster or client) is made on first use and closed with `stack`."""

    def __init__(self, stack: contextlib.ExitStack, name: str, jobs: int, scheduler: str | None) -> None:
        self.stack, self.args, self.executor = stack, (name, jobs, scheduler), None

    def get(self):
        if self.executor is None:
            from samlib.study.executors import make_executor

            self.executor = self.stack.enter_context(make_executor(*self.args))
        return self.executor


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def write(self, text, file=None):
        print(text, file=file or sys.stdout, flush=True)

    def update(self, n=1):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, unit="cell", desc="cells", file=sys.stderr, mininterval=0.5 if tty else 30,
                dynamic_ncols=True)


def _secs(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _write_plan(params: StudyParams, sdir: Path, cells: Sequence[Cell]) -> None:
    """``study.json``: the params and every cell's runs, for the summary notebook (all cells, not just
    this shard's, so every shard writes the same file)."""
    io.write_json(
        sdir / "study.json",
        {
            "params_file": str(Path(os.path.abspath(params.path))),
            "notebooks_dir": str(params.notebooks_dir),
            **params.to_dict(),
            "cells": [
                {
                    "notebook": c.notebook,
                    "batch_size": c.batch_size,
                    "run_root": str(c.run_root),
                    "executed_notebook": str(c.output),
                    "status": str(c.status_path),
                    "runs": [
                        {"run_dir": str(run_dir), "seed": seed, "point": point}
                        for (point, seed), run_dir in zip(
                            ((p, s) for p in expand_grid(c.parameters["grid"]) for s in params.seeds),
                            c.run_dirs,
                        )
                    ],
                }
                for c in cells
            ],
        },
    )


def _print_plan(say, params, sdir, cells, results, shard, only, run_summary) -> None:
    scope = []
    if only:
        scope.append(f"only {', '.join(sorted(_only_names(params, only) or []))}")
    if shard:
        scope.append(f"shard {shard[0]}/{shard[1]}")
    say(f"study {params.study} -> {sdir} (dry run: nothing is executed or written)"
        + (f" [{'; '.join(scope)}]" if scope else ""))
    width = max([len(c.name) for c in cells] + [4])
    say(f"  {'cell':<{width}}  runs  complete  action")
    for cell in cells:
        r = results[cell.name]
        say(f"  {cell.name:<{width}}  {r.runs:>4}  {r.complete:>8}  {'skip' if r.state == 'skipped' else 'run'}")
    n_run = sum(r.state == "run" for r in results.values())
    say(f"{len(cells)} cells, {sum(r.runs for r in results.values())} runs: {n_run} to run, "
        f"{len(cells) - n_run} to skip; summary: "
        + (f"{params.summary}.ipynb (unless unchanged)" if run_summary else "not run"))


def _print_report(say, report: StudyReport) -> None:
    ok, skipped, failed = report.ok, report.skipped, report.failed
    say(f"study {report.study}: {len(ok)} ok, {len(skipped)} skipped, {len(failed)} failed")
    for r in failed:
        say(f"  FAILED {r.name}: {r.error} -> {r.output}")
    if report.summary is not None and report.summary.state != "failed":
        say(f"  summary {report.summary.state}: {report.summary.output}")


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m samlib study",
        description="Run a study grid of notebooks with papermill (resumable), then the summary notebook.",
    )
    p.add_argument("params", help="study params YAML, e.g. params/quick.yaml")
    p.add_argument("--out", default="outputs", help="output root; the study goes to OUT/<study> (default: outputs)")
    p.add_argument("--jobs", type=int, default=1, help="cells executing at once (local threads / dask workers)")
    p.add_argument("--shard", metavar="I/N", help="run every N-th cell starting at I (0-based); no summary if N > 1")
    p.add_argument("--only", action="append", metavar="NOTEBOOK", help="only these notebooks (repeatable, or a,b)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; execute and write nothing")
    p.add_argument("--executor", choices=EXECUTORS, default="local")
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler address (default: a LocalCluster)")
    p.add_argument("--notebooks", metavar="DIR", help="folder of the notebooks (default: ./notebooks)")
    p.add_argument("--no-summary", action="store_true", help="do not run the summary notebook")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per cell still)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scheduler and args.executor != "dask":
        print("samlib study: error: --scheduler needs --executor dask", file=sys.stderr)
        return 2
    try:
        report = run_study(
            args.params,
            out=args.out,
            jobs=args.jobs,
            shard=args.shard,
            only=args.only,
            dry_run=args.dry_run,
            executor=args.executor,
            scheduler=args.scheduler,
            notebooks_dir=args.notebooks,
            summary=not args.no_summary,
            progress=not args.no_progress,
        )
    except ParamsError as err:
        print(f"samlib study: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsamlib study: interrupted; run the same command again to resume", file=sys.stderr, flush=True)
        os._exit(130)  # do not wait for cells still executing in threads; their kernels exit by themselves
    return report.exit_code
