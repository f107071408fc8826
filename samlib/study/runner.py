"""The study runner: a params file → a grid of papermill notebook executions → the summary notebook.

``python -m samlib study PARAMS`` (arguments: `samlib.cli`) calls `run_study`. The params file and the
plan are `samlib.study.params`; where everything is written, `samlib.study.layout`; where notebooks
execute, `samlib.study.executors`.

Cells run with the notebooks folder as working directory (as in ``jupyter lab notebooks``); all paths
handed to them are absolute. ``--notebooks`` defaults to ``./notebooks`` and ``--out`` to
``./outputs`` (run from the repo root); ``--jobs`` to the number of cores this process may use.

Resume: a cell is skipped when its status.json says ``ok``, its executed notebook exists and every one
of its runs is complete (`layout.is_complete`) and measured with the cell's sharpness settings
(`layout.is_measured`; so changed settings re-execute the cell, which measures and trains nothing). A cell interrupted in any way (even ``kill -9``: its
status stays ``running``) is executed again and its notebook skips the runs that finished, so nothing
is lost or redone but the run that was cut. The summary is skipped when it succeeded before on exactly
the same cell statuses, params file, summary notebook and `samlib.study` code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from samlib import io
from samlib.study import layout
from samlib.study.executors import notebook_task
from samlib.study.selections import TUNING_NOTEBOOK
from samlib.validate import choice, integer
from samlib.study.params import (
    Cell,
    ParamsError,
    StudyParams,
    load_params,
    only_names,
    parse_shard,
    plan_cells,
    select_cells,
    study_dir,
)

EXECUTORS = ("local", "dask")


def default_jobs() -> int:
    """Cells at once by default: the cores this process may run on (its CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


@contextlib.contextmanager
def tf_threads(threads: int | None):
    """TensorFlow's intra- and inter-op threads for the kernels started inside (environment variables,
    which kernels, local worker processes and a dask LocalCluster inherit; not a remote scheduler's
    workers); None leaves TensorFlow's default. The thread count changes a run's numbers in the last
    digits (measured: one thread per cell stopped a run 18 steps from where the default did), so a
    study is reproduced exactly only with the threads it was run with (``environment`` in metrics.json
    records them)."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    try:
        if threads is not None:
            os.environ.update({k: str(threads) for k in THREAD_VARIABLES})
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------- state
def complete_runs(cell: Cell) -> int:
    return sum(layout.is_complete(c.run_dir, c) for c in cell.configs)


def _all_measured(cell: Cell) -> bool:
    return all(layout.is_measured(c.run_dir, cell.sharpness) for c in cell.configs)


def _notebook_ok(cell: Cell) -> bool:
    return io.read_json_dict(cell.status_path).get("status") == layout.OK and cell.output.is_file()


def _tuning_settled(cell: Cell) -> bool:
    """A tuning cell is done only when the tuning rule calls each of its choices settled (`tuning.settled`)."""
    if cell.notebook != TUNING_NOTEBOOK:
        return True
    from samlib.study import tuning

    return tuning.settled(cell.run_root, [point for point, _, _ in cell.runs])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"


def _study_code() -> list[Path]:
    """The sources the summary's numbers, figures and report come from (this sub-package)."""
    return sorted(Path(__file__).parent.glob("*.py"))


def summary_fingerprint(params: StudyParams, cells: Sequence[Cell]) -> str:
    """Changes whenever a cell's status, the params file, the summary notebook or the code that
    computes findings, figures and the report (`samlib.study`) changes."""
    h = hashlib.sha256()
    h.update(_sha256(Path(params.path)).encode())
    h.update(_sha256(params.notebook_path(params.summary or "")).encode())
    for source in _study_code():
        h.update(f"{source.name}\0{_sha256(source)}\0".encode())
    for cell in cells:
        h.update(f"{cell.name}\0{_sha256(cell.status_path)}\0".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------- report
@dataclasses.dataclass
class CellResult:
    name: str  # "<nb>/<batch_size>", or "summary"
    state: str  # layout.OK | FAILED | SKIPPED; in a dry run: TO_RUN | SKIPPED
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
        return self._with(layout.OK)

    @property
    def skipped(self) -> list[CellResult]:
        return self._with(layout.SKIPPED)

    @property
    def failed(self) -> list[CellResult]:
        return self._with(layout.FAILED)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# ---------------------------------------------------------------------- runner
def run_study(
    params_path: str | Path,
    out: str | Path = "outputs",
    jobs: int | None = None,
    shard: str | tuple[int, int] | None = None,
    only: Iterable[str] | str | None = None,
    dry_run: bool = False,
    executor: str = "local",
    scheduler: str | None = None,
    notebooks_dir: str | Path | None = None,
    summary: bool = True,
    progress: bool = True,
    stream=None,
    threads: int | None = None,
) -> StudyReport:
    """Run (or with `dry_run` only print) a study; see the module doc. `jobs`: cells at once (default:
    `default_jobs`). `threads`: TensorFlow's intra- and inter-op threads in each cell's kernel (default
    None: TensorFlow's own choice, which the committed studies were run with; `tf_threads`). Raises
    `ParamsError` for bad params/arguments before writing anything; failing notebooks are reported,
    not raised."""
    stream = stream or sys.stdout
    say = lambda text: print(text, file=stream, flush=True)
    jobs = _check_options(executor, default_jobs() if jobs is None else jobs, threads)
    params = load_params(params_path, notebooks_dir)
    shard = parse_shard(shard)
    all_cells = plan_cells(params, out)
    cells = select_cells(params, all_cells, only, shard)
    sdir = study_dir(params, out)
    run_summary = summary and params.summary is not None and (shard is None or shard[1] == 1)
    results, todo = _plan(cells)
    report = StudyReport(params.study, sdir, [results[c.name] for c in cells], None, dry_run)
    if dry_run:
        _print_plan(say, params, sdir, cells, results, shard, only, run_summary)
        return report
    _write_plan(params, sdir, all_cells)  # before any cell runs: the summary reads it
    say(
        f"study {params.study}: {len(cells)} cells ({sum(len(c.configs) for c in cells)} runs) in {sdir}; "
        f"{len(cells) - len(todo)} complete, {len(todo)} to run, executor {executor}"
        + (f" ({scheduler})" if scheduler else f", {jobs} at once")
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(tf_threads(threads))  # before any kernel starts: they inherit it
        pool = _LazyExecutor(stack, executor, jobs, scheduler)  # started only if something runs
        _execute(todo, results, pool, progress, stream)
        if run_summary:
            report.summary = _run_summary(params, sdir, all_cells, pool, say)
    _print_report(say, report)
    return report


_JOBS = integer(1)
_THREADS = integer(1).or_none()


def _check_options(executor: str, jobs: Any, threads: Any) -> int:
    """The runner's options checked (`samlib.validate`), as `ParamsError`; returns `jobs`."""
    choice(EXECUTORS).raising(ParamsError)("--executor", executor, "option")
    _THREADS.raising(ParamsError)("--threads", threads, "option")
    return _JOBS.raising(ParamsError)("--jobs", jobs, "option")


def _plan(cells: list[Cell]) -> tuple[dict[str, CellResult], list[Cell]]:
    """Each cell's `CellResult` as planned (`layout.SKIPPED` when all its runs are complete and measured
    and its notebook ran ok, else `layout.TO_RUN`), and the cells to run."""
    results: dict[str, CellResult] = {}
    todo: list[Cell] = []
    for cell in cells:
        done = complete_runs(cell)
        skip = done == len(cell.configs) and _notebook_ok(cell) and _all_measured(cell) and _tuning_settled(cell)
        state = layout.SKIPPED if skip else layout.TO_RUN
        results[cell.name] = CellResult(cell.name, state, cell.output, cell.status_path, len(cell.configs), done)
        if not skip:
            todo.append(cell)
    return results, todo


def _execute(todo: list[Cell], results: dict[str, CellResult], pool: "_LazyExecutor", progress: bool, stream) -> None:
    """Execute the cells `todo` on the pool, recording each one's result and printing a line as it ends."""
    if not todo:
        return
    by_id = {c.task()["id"]: c for c in todo}
    with _progress(len(todo), progress) as bar:
        for task, status in pool.get().map(c.task() for c in todo):
            cell = by_id[task["id"]]
            result = _cell_finished(cell, results[cell.name], status)
            line = f"[{result.state:>6}] {cell.name}: {result.runs} runs, {_secs(result.seconds)}"
            if result.error:
                line += f" - {result.error} (see {cell.output})"
            bar.write(line, file=stream)
            bar.update(1)


def _cell_finished(cell: Cell, result: CellResult, status: dict[str, Any]) -> CellResult:
    """Record a finished cell; a notebook that ended without error but left runs incomplete failed."""
    result.seconds = status.get("seconds")
    if status.get("status") == layout.OK:
        result.complete = complete_runs(cell)
        if result.complete < result.runs:
            missing = [str(c.run_dir) for c in cell.configs if not layout.is_complete(c.run_dir, c)]
            status = io.update_json(
                cell.status_path,
                status=layout.FAILED,
                error=f"the notebook ended without error but {len(missing)} of {result.runs} runs "
                f"are not complete, e.g. {missing[0]}",
            )
    result.state = layout.OK if status.get("status") == layout.OK else layout.FAILED
    result.error = status.get("error")
    return result


def _run_summary(params, sdir, all_cells, pool, say) -> CellResult:
    output, status_path, log = layout.summary_files(sdir)
    fingerprint = summary_fingerprint(params, all_cells)
    result = CellResult("summary", layout.SKIPPED, output, status_path)
    previous = io.read_json_dict(status_path)
    if previous.get("status") == layout.OK and previous.get("fingerprint") == fingerprint and output.is_file():
        return result
    nb = params.notebook_path(params.summary)
    task = notebook_task("summary", nb, output, {"study_dir": str(sdir)}, status_path, log, sdir,
                         {"cell": "summary", "fingerprint": fingerprint})
    say(f"summary: executing {nb.name} -> {output}")
    for _, status in pool.get().map([task]):
        result.state = layout.OK if status.get("status") == layout.OK else layout.FAILED
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
    """``study.json``: the params and every cell's runs with their full configs, for the summary (all
    cells, not just this shard's, so every shard writes the same file)."""
    from samlib.study import tuning

    header = {"params_file": _shown(params.path), "notebooks_dir": _shown(params.notebooks_dir), **params.to_dict()}
    sources = {src for spec in params.notebooks.values() for src in spec.tuned_lr}
    if sources:  # the lr choices the runs were planned with travel with the study (findings' ``tuning``)
        header[tuning.PLANNED_WITH] = {str(src): tuning.tuning_of(src) for src in sorted(sources)}
    layout.write_study(sdir, header, [c.record() for c in cells])


def _shown(path: str | Path) -> str:
    """How study.json names the params file and the notebooks folder: relative to the current directory
    (where the study was started, e.g. the repository) when it lies inside it, else as given; so the
    record names no machine's folders when the study runs from the repository."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _print_plan(say, params, sdir, cells, results, shard, only, run_summary) -> None:
    scope = []
    if only:
        scope.append(f"only {', '.join(sorted(only_names(params, only) or []))}")
    if shard:
        scope.append(f"shard {shard[0]}/{shard[1]}")
    say(f"study {params.study} -> {sdir} (dry run: nothing is executed or written)"
        + (f" [{'; '.join(scope)}]" if scope else ""))
    width = max([len(c.name) for c in cells] + [4])
    say(f"  {'cell':<{width}}  runs  complete  action")
    for cell in cells:
        r = results[cell.name]
        say(f"  {cell.name:<{width}}  {r.runs:>4}  {r.complete:>8}  {'skip' if r.state == layout.SKIPPED else 'run'}")
    n_run = sum(r.state == layout.TO_RUN for r in results.values())
    say(f"{len(cells)} cells, {sum(r.runs for r in results.values())} runs: {n_run} to run, "
        f"{len(cells) - n_run} to skip; summary: "
        + (f"{params.summary}.ipynb (unless unchanged)" if run_summary else "not run"))


def _print_report(say, report: StudyReport) -> None:
    ok, skipped, failed = report.ok, report.skipped, report.failed
    say(f"study {report.study}: {len(ok)} ok, {len(skipped)} skipped, {len(failed)} failed")
    for r in failed:
        say(f"  FAILED {r.name}: {r.error} -> {r.output}")
    if report.summary is not None and report.summary.state != layout.FAILED:
        say(f"  summary {report.summary.state}: {report.summary.output}")
