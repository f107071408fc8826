"""Where the study's notebooks execute: in this process (threads) or on a dask.distributed cluster.

A *task* is plain data (a dict, so it pickles to any dask worker) describing one papermill execution,
made by `notebook_task` (the one place that spells it; a grid cell's and the summary's alike):

    {"id": str, "input": str, "output": str, "cwd": str, "parameters": dict, "status_path": str,
     "kernel_log": str, "notebook": str, "info": dict, "pythonpath": [str]}

all paths absolute but ``notebook`` (optional): the executed notebook as status.json records it,
relative to the study folder (default: ``output``). `execute_notebook_task(task)` runs it and returns
the cell's status dict, which it also writes atomically to ``task["status_path"]``:

    {"status": RUNNING | OK | FAILED (`samlib.study.layout`), "error": str | None, "started": ISO time,
     "finished": ISO time, "seconds": float, "host": str, "pid": int, "notebook": task's notebook, **info}

The kernel imports what the process that planned the task could (``pythonpath``, `import_path`: its
``sys.path`` folders outside the interpreter's own, its working folder first under ``python -m``, put on the kernel's
``PYTHONPATH`` in ``sys.path``'s order), so a study's own model builder or data loader (``model: mymodule:build`` with
``mymodule.py`` where ``python -m samlib study`` runs) that the params check imported is importable in
the notebook too, though the kernel runs in the notebook's folder.

The kernel process's own stdout/stderr (ipykernel's echo of the cell output, TensorFlow's C++
log lines, a crash message) are appended to ``task["kernel_log"]``; the notebook keeps the cell output.

It never raises for a failing notebook (that is a result: status FAILED with the error); only
``KeyboardInterrupt``/``SystemExit`` go through. This module does not import TensorFlow.

Papermill notes: ``kernel_name="python3"`` is the ipykernel spec whose ``python`` argv jupyter_client
replaces by ``sys.executable``, so kernels run in the interpreter (venv) that runs the study. The
kernel's working directory is set through nbclient's ``resources["metadata"]["path"]`` instead of
papermill's ``cwd=`` argument, because the latter calls ``os.chdir`` for the whole process, which is
not safe with several cells executing in threads.
"""

from __future__ import annotations

import datetime as _dt
import os
import queue
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Self

from samlib import io
from samlib.study import layout

KERNEL = "python3"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def notebook_task(id: str, input: str | os.PathLike, output: str | os.PathLike, parameters: dict[str, Any],
                  status_path: str | os.PathLike, kernel_log: str | os.PathLike, study_dir: str | os.PathLike,
                  info: dict[str, Any]) -> dict[str, Any]:
    """A task (module doc): execute notebook `input` into `output` with `parameters`, in the input's
    folder, writing `status_path` and appending the kernel's own output to `kernel_log`; status.json
    names the executed notebook relative to `study_dir`; `info` is copied into the status."""
    return {
        "id": id,
        "input": str(input),
        "output": str(output),
        "cwd": str(os.path.dirname(os.fspath(input))),
        "parameters": dict(parameters),
        "status_path": str(status_path),
        "kernel_log": str(kernel_log),
        "notebook": layout.in_study(output, study_dir),
        "info": dict(info),
        "pythonpath": import_path(),
    }


def import_path() -> list[str]:
    """The folders this process imports from that a fresh interpreter would not: the ``sys.path`` folders
    outside the interpreter's prefixes (the standard library and site-packages are the kernel's own), in
    the same order (a ``python -m`` run's first is its working folder, then ``PYTHONPATH``'s), absolute,
    once each."""
    import sys

    own = tuple(os.path.realpath(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    out: list[str] = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        inside = any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in own)
        if os.path.isdir(path) and not inside and path not in out:
            out.append(path)
    return out


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _error_text(err: BaseException) -> str:
    """One line for a failed notebook: ``ValueError: boom (cell In [3])``."""
    ename = getattr(err, "ename", None)
    if ename is not None:  # papermill.PapermillExecutionError
        evalue = _ANSI.sub("", str(getattr(err, "evalue", ""))).strip()
        count = getattr(err, "exec_count", None)
        return f"{ename}: {evalue}" + (f" (cell In [{count}])" if count is not None else "")
    text = _ANSI.sub("", str(err)).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _kernel_manager_class(log_path: str, pythonpath: list[str] | None = None):
    """An AsyncKernelManager whose kernel process writes its own stdout/stderr to `log_path`, with the
    folders `pythonpath` first on its ``PYTHONPATH``.

    ipykernel copies a cell's output, C-level writes included, into the notebook and echoes it to
    the process's own stdout/stderr; without this, TensorFlow's start-up lines and the kernels' log
    lines of every cell would land in the runner's progress output. The log keeps them (and, say,
    the message of a kernel that crashed) beside the executed notebook.
    """
    from jupyter_client import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):  # the documented override point
            with open(log_path, "ab") as log:  # noqa: ASYNC230 - instant; the child keeps its own fd
                log.write(f"--- {_now()} kernel for {kernel_cmd[0]}\n".encode())
                log.flush()
                kw.setdefault("stdout", log)
                kw.setdefault("stderr", subprocess.STDOUT)
                if pythonpath:
                    env = dict(kw.get("env") or os.environ)
                    env["PYTHONPATH"] = os.pathsep.join([*pythonpath, *filter(None, [env.get("PYTHONPATH")])])
                    kw["env"] = env
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return KernelManager


def execute_notebook_task(task: dict[str, Any]) -> dict[str, Any]:
    """Execute one notebook with papermill and record its status (see the module doc)."""
    import papermill as pm

    status: dict[str, Any] = {
        **task.get("info", {}),
        "notebook": task.get("notebook", task["output"]),
        "status": layout.RUNNING,
        "error": None,
        "started": _now(),
        "finished": None,
        "seconds": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    io.write_json(task["status_path"], status)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            task["input"],
            task["output"],
            parameters=task["parameters"],
            kernel_name=KERNEL,
            progress_bar=False,
            log_output=False,
            # the kernel's cwd, without papermill's process-wide os.chdir (see the module doc)
            resources={"metadata": {"path": task["cwd"]}},
            kernel_manager_class=_kernel_manager_class(task["kernel_log"], task.get("pythonpath")),
        )
        status.update(status=layout.OK)
    except Exception as err:  # noqa: BLE001 - a failing notebook is a result, not a crash
        status.update(status=layout.FAILED, error=_error_text(err))
    status.update(finished=_now(), seconds=round(time.perf_counter() - t0, 3))
    io.write_json(task["status_path"], status)
    return status


def _failed(task: dict[str, Any], err: BaseException) -> dict[str, Any]:
    """Status of a task that could not run at all (e.g. its dask worker died); written here."""
    status = {
        **task.get("info", {}),
        "notebook": task.get("notebook", task["output"]),
        "status": layout.FAILED,
        "error": _error_text(err),
        "started": None,
        "finished": _now(),
        "seconds": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    io.write_json(task["status_path"], status)
    return status


class LocalExecutor:
    """Up to `jobs` notebooks at once in this process: inline for one job, else daemon threads
    (each drives its own kernel process). Daemon threads, so that an interrupted runner exits at
    once; the orphaned kernels notice their parent is gone and exit within a second."""

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = max(1, int(jobs))

    def map(self, tasks: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Yield ``(task, status)`` as each task finishes."""
        tasks = list(tasks)
        if self.jobs == 1 or len(tasks) <= 1:
            for task in tasks:
                yield task, execute_notebook_task(task)
            return
        todo: queue.Queue = queue.Queue()
        done: queue.Queue = queue.Queue()
        for task in tasks:
            todo.put(task)

        def worker() -> None:
            while True:
                try:
                    task = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((task, execute_notebook_task(task)))
                except BaseException as err:  # noqa: BLE001 - report, never lose a task
                    done.put((task, _failed(task, err)))

        for i in range(min(self.jobs, len(tasks))):
            threading.Thread(target=worker, name=f"samlib-study-{i}", daemon=True).start()
        for _ in tasks:
            yield done.get()

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaskExecutor:
    """Each task is one dask.distributed task: on a `LocalCluster` of `jobs` single-threaded worker
    processes, or on the scheduler at `scheduler` (whose workers must see the same file system and
    have samlib installed)."""

    name = "dask"

    def __init__(self, jobs: int = 1, scheduler: str | None = None) -> None:
        import logging

        from distributed import Client, LocalCluster

        self.cluster = None
        if scheduler:
            self.client = Client(scheduler)
        else:
            self.cluster = LocalCluster(
                n_workers=max(1, int(jobs)),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            self.client = Client(self.cluster)

    def map(self, tasks: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        from distributed import as_completed

        by_future = {}
        for task in tasks:
            future = self.client.submit(
                execute_notebook_task, task, key=f"samlib-{task['id']}-{os.urandom(4).hex()}", pure=False
            )
            by_future[future] = task
        for future in as_completed(list(by_future)):
            task = by_future[future]
            try:
                status = future.result()
            except Exception as err:  # noqa: BLE001 - the task never ran to the end (worker lost)
                status = _failed(task, err)
            yield task, status

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_executor(name: str, jobs: int = 1, scheduler: str | None = None):
    """``local`` or ``dask``; use as a context manager."""
    if name == "local":
        return LocalExecutor(jobs)
    if name == "dask":
        return DaskExecutor(jobs, scheduler)
    raise ValueError(f"unknown executor {name!r}; allowed: local, dask")
