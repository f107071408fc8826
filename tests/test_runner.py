"""The study runner and the params file, driven with stub notebooks that write fake runs without
TensorFlow.

The stub cell notebook plays the real notebooks' part: it builds its runs with grid.cell_configs,
skips complete ones, and for each run it trains writes config.json, appends ``<run_dir>\\t<pid>`` to a
counter file, then writes model.weights.h5 and metrics.json (status ok). Completeness is checked by
the runner with the real samlib.study.layout.is_complete.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from samlib import cli, study
from samlib.config import SharpnessSettings
from samlib.study import layout
from samlib.study.layout import run_dirname

REPO = Path(__file__).resolve().parents[1]

PARAMETERS = """\
run_root = ""
batch_size = 0
seeds = []
base = {}
grid = {}
sharpness = {}
study_dir = ""
"""

CELL_BODY = """\
import json, os, sys, time
from pathlib import Path
from samlib import io
from samlib.study.grid import cell_configs

COUNTER, FAIL_BS, HANG = {counter!r}, {fail_bs!r}, {hang!r}
os.write(2, b"stub: a C-level line on fd 2\\n")  # like TensorFlow's C++ logging

def complete(c):
    d = Path(c.run_dir)
    try:
        metrics = json.loads((d / "metrics.json").read_text())
        saved = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return False
    mine = c.to_dict()
    return (metrics.get("status") == "ok" and (d / "model.weights.h5").exists()
            and all(saved.get(k) == mine[k] for k in mine if k not in ("run_dir", "verbose")))

for c in cell_configs(base, batch_size, seeds, grid, run_root):
    if complete(c):
        if json.loads((Path(c.run_dir) / "metrics.json").read_text()).get("sharpness_settings") != sharpness:
            io.update_json(Path(c.run_dir) / "metrics.json", sharpness_settings=sharpness)  # "measure" it
        continue
    d = Path(c.run_dir)
    io.write_json(d / "config.json", c.to_dict())
    with open(COUNTER, "a") as f:
        f.write(f"{{c.run_dir}}\\t{{os.getpid()}}\\n")
    if HANG and os.path.exists(HANG) and (c.batch_size, c.seed) == (16, 1):
        time.sleep(600)  # "training" that the test kills
    io.write_text(d / "model.weights.h5", "fake weights")
    io.write_json(d / "metrics.json", {{"status": "ok", "python": sys.executable, "cwd": os.getcwd(),
                                        "sharpness": sharpness, "study_dir": study_dir,
                                        "sharpness_settings": sharpness, "sharpness_status": "ok",
                                        "threads": [os.environ.get("TF_NUM_INTRAOP_THREADS"),
                                                    os.environ.get("TF_NUM_INTEROP_THREADS")]}})
if batch_size == FAIL_BS:
    raise RuntimeError(f"stub failure at batch size {{batch_size}}")
"""

SUMMARY_BODY = """\
from pathlib import Path
runs = sorted(Path(study_dir).glob("runs/*/*/*/metrics.json"))
Path(study_dir, "results.csv").write_text("run\\n" + "".join(f"{{p.parent}}\\n" for p in runs))
Path(study_dir, "report.html").write_text(f"<p>{{len(runs)}} runs</p>")
with open({counter!r}, "a") as f:
    f.write("summary\\n")
"""


def _notebook(path: Path, parameters: str, body: str) -> None:
    nb = new_notebook()
    params = new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def make_stubs(tmp_path: Path, names=("stub",), fail_bs=None, hang=None) -> Path:
    nbdir = tmp_path / "notebooks"
    for name in names:
        body = CELL_BODY.format(counter=str(tmp_path / "counter.txt"), fail_bs=fail_bs, hang=hang)
        _notebook(nbdir / f"{name}.ipynb", PARAMETERS, body)
    _notebook(nbdir / "summary.ipynb", 'study_dir = ""\n', SUMMARY_BODY.format(counter=str(tmp_path / "summary.txt")))
    return nbdir


def write_params(tmp_path: Path, name="params.yaml", **changes) -> Path:
    params = {
        "study": "t",
        "seeds": [0, 1],
        "base": {"dataset": "mnist5k", "epochs": 1},
        "sharpness": {"samples": 10},
        "notebooks": {"stub": {"batch_sizes": [8, 16], "grid": {}, "base": {}}},
    }
    params.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def counted(tmp_path: Path, name="counter.txt") -> list[str]:
    path = tmp_path / name
    return [line.split("\t")[0] for line in path.read_text().splitlines()] if path.exists() else []


def all_complete(cells) -> bool:
    return all(layout.is_complete(c.run_dir, c) for cell in cells for c in cell.configs)


def study_main(argv: list[str]) -> int:
    return cli.main(["study", *argv])


# ---------------------------------------------------------------------- plan
GRID_PARAMS = {
    "seeds": [0, 1, 2],
    "base": {"epochs": 2, "lr": 0.05},
    "notebooks": {
        "a": {"batch_sizes": [8, 16, 32], "grid": {"optimizer": ["sgd", "adam"]}, "base": {"lr": 0.1}},
        "b": {"batch_sizes": [8, 64], "base": {"sam": "sam"}, "grid": {"m": [None, 4], "rho": [0.05, 0.1]}},
    },
}


def test_plan_expands_cells_and_runs_and_cell_parameters(tmp_path):
    nbdir = make_stubs(tmp_path, names=("a", "b"))
    params = study.load_params(write_params(tmp_path, **GRID_PARAMS), nbdir)
    cells = study.plan_cells(params, tmp_path / "out")
    assert [c.name for c in cells] == ["a/8", "a/16", "a/32", "b/8", "b/64"]
    assert [len(c.configs) for c in cells] == [6, 6, 6, 12, 12]  # points x 3 seeds
    b64 = cells[-1]
    root = tmp_path / "out" / "t" / "runs" / "b" / "64"
    assert b64.run_root == root and b64.output == root / "b.ipynb" and b64.status_path == root / "status.json"
    assert b64.parameters == {
        "run_root": str(root),
        "batch_size": 64,
        "seeds": [0, 1, 2],
        "base": {"epochs": 2, "lr": 0.05, "sam": "sam"},
        "grid": {"m": [None, 4], "rho": [0.05, 0.1]},
        "sharpness": SharpnessSettings(samples=10).to_dict(),  # the study's settings, defaults filled in
        "study_dir": str(tmp_path / "out" / "t"),
    }
    assert str(root / run_dirname({"m": 4, "rho": 0.1}, 2)) in {c.run_dir for c in b64.configs}
    a8 = cells[0].configs
    assert {(c.optimizer, c.seed, c.lr, c.batch_size, c.epochs) for c in a8} == {
        (o, s, 0.1, 8, 2) for o in ("sgd", "adam") for s in (0, 1, 2)
    }


def test_a_notebook_may_have_its_own_seeds_and_m_at_or_above_the_batch_size_is_left_out(tmp_path):
    nbdir = make_stubs(tmp_path, names=("a", "b"))
    notebooks = {"a": {"batch_sizes": [8], "seeds": [5, 6]},
                 "b": {"batch_sizes": [4, 8], "base": {"sam": "sam"}, "grid": {"m": [None, 4]}}}
    params = study.load_params(write_params(tmp_path, notebooks=notebooks), nbdir)
    cells = {c.name: c for c in study.plan_cells(params, tmp_path / "out")}
    assert sorted(c.seed for c in cells["a/8"].configs) == [5, 6]  # its own seeds
    assert sorted(c.seed for c in cells["b/8"].configs) == [0, 0, 1, 1]  # the study's
    assert {c.m for c in cells["b/4"].configs} == {None}  # m = 4 at B = 4 would be plain SAM again
    assert {c.m for c in cells["b/8"].configs} == {None, 4}
    bad = write_params(tmp_path, name="bad.yaml", notebooks={"a": {"batch_sizes": [8], "seeds": [1, 1]}})
    with pytest.raises(study.ParamsError, match="notebooks.a.seeds"):
        study.load_params(bad, nbdir)


def test_sharpness_settings_are_per_notebook_with_overrides(tmp_path):
    nbdir = make_stubs(tmp_path, names=("a", "b"))
    sharpness = {"subset": 64, "notebooks": {"b": {"measures": ["sam"], "iters": 3}}}
    params = study.load_params(write_params(tmp_path, **{**GRID_PARAMS, "sharpness": sharpness}), nbdir)
    by_nb = {c.notebook: c.parameters["sharpness"] for c in study.plan_cells(params, tmp_path / "out")}
    assert by_nb["a"] == SharpnessSettings(subset=64).to_dict()
    assert by_nb["b"] == SharpnessSettings(subset=64, measures=("sam",), iters=3).to_dict()


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_are_disjoint_and_cover_the_grid(tmp_path, n):
    nbdir = make_stubs(tmp_path, names=("a", "b"))
    params = study.load_params(write_params(tmp_path, **GRID_PARAMS), nbdir)
    cells = study.plan_cells(params, tmp_path / "out")
    shards = [study.select_cells(params, cells, shard=f"{i}/{n}") for i in range(n)]
    names = [c.name for shard in shards for c in shard]
    assert sorted(names) == sorted(c.name for c in cells) and len(names) == len(set(names))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_only_restricts_to_notebooks(tmp_path):
    nbdir = make_stubs(tmp_path, names=("a", "b"))
    params = study.load_params(write_params(tmp_path, **GRID_PARAMS), nbdir)
    cells = study.plan_cells(params, tmp_path / "out")
    assert [c.name for c in study.select_cells(params, cells, only=["b"])] == ["b/8", "b/64"]
    assert len(study.select_cells(params, cells, only=["a,b"])) == 5
    assert len(study.select_cells(params, cells, only=["a", "b"])) == 5
    assert [c.name for c in study.select_cells(params, cells, only="a", shard="1/2")] == ["a/16"]
    with pytest.raises(study.ParamsError, match="'c'"):
        study.select_cells(params, cells, only=["c"])


@pytest.mark.parametrize("bad", ["1/1/1", "2/2", "-1/2", "x", "0/0"])
def test_bad_shard_is_rejected(bad):
    with pytest.raises(study.ParamsError, match="--shard"):
        study.parse_shard(bad)


# ---------------------------------------------------------------------- bad params
def _set(params: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[last] = value
    return params


BAD = [
    # (dotted path to set, value, key path the message must name)
    ("epochs", 3, "epochs"),  # unknown top-level key
    ("notebooks.stub.gird", {"rho": [0.1]}, "notebooks.stub.gird"),  # unknown nested key
    ("notebooks.stub.base.rhoo", 0.1, "notebooks.stub.base.rhoo"),  # not a Config key
    ("notebooks.stub.grid.rho", [0.05, -1], "notebooks.stub.grid.rho"),  # bad Config value in a grid
    ("notebooks.stub.grid.optimizer", ["sgd", "lion"], "notebooks.stub.grid.optimizer"),
    ("notebooks.stub.grid.rho", 0.1, "notebooks.stub.grid.rho"),  # grid values not a list
    ("notebooks.stub.grid.lr", [0.1, 0.1000001], "notebooks.stub.grid"),  # two runs, one folder
    ("base.dropout", 1.5, "base.dropout"),
    ("base.batch_size", 64, "base.batch_size"),  # set by the runner
    ("study", "../x", "study"),
    ("study", "a b", "study"),
    ("seeds", [], "seeds"),
    ("seeds", [0, -1], "seeds"),
    ("notebooks.stub.batch_sizes", [32, 0], "notebooks.stub.batch_sizes"),
    ("notebooks.stub.batch_sizes", ["32"], "notebooks.stub.batch_sizes"),
    ("notebooks.missing", {"batch_sizes": [8]}, "notebooks.missing"),  # no notebooks/missing.ipynb
    ("summary", "nosuch", "summary"),
    # sharpness settings (SharpnessSettings), checked before anything runs
    ("sharpness.subsett", 64, "sharpness.subsett"),  # misspelt key
    ("sharpness.measures", ["sharpest"], "sharpness.measures"),  # unknown measure
    ("sharpness.iters", 2.5, "sharpness.iters"),  # wrong kind
    ("sharpness.tol", "1e-3", "sharpness.tol"),  # YAML string
    ("sharpness.notebooks", {"stub": {"max_iter": 0}}, "sharpness.notebooks.stub.max_iter"),
    ("sharpness.notebooks", {"stub": {"measure": ["sam"]}}, "sharpness.notebooks.stub.measure"),
    ("sharpness.notebooks", {"nosuch": {"subset": 8}}, "sharpness.notebooks.nosuch"),
    # a sharpness milestone that no run of the study has (it would measure nothing, silently)
    ("sharpness.milestones", {"loss=0.777": ["sam"]}, "sharpness.milestones.loss=0.777"),
    ("sharpness.notebooks", {"stub": {"milestones": {"epochs=3": ["sam"]}}}, "sharpness.notebooks.stub.milestones.epochs=3"),
    # a model builder or data loader that does not resolve (samlib.references): the module or function named
    ("base.model", "nosuch_builders:tiny_mlp", "base.model"),
    ("base.model", "samlib.models:nosuch_builder", "base.model"),
    ("notebooks.stub.grid.model", ["cnn", "nosuch_builders:f"], "notebooks.stub.grid.model"),
    ("base.data", "nosuch_loaders:load", "base.data"),
    ("notebooks.stub.base.data", "samlib.data:nosuch_loader", "notebooks.stub.base.data"),
]
NAMED = {"nosuch_builders:tiny_mlp": "'nosuch_builders'", "samlib.models:nosuch_builder": "'nosuch_builder'",
         "nosuch_loaders:load": "'nosuch_loaders'", "samlib.data:nosuch_loader": "'nosuch_loader'"}


@pytest.mark.parametrize("path,value,key", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_params_exit_2_with_one_message_naming_the_key_and_write_nothing(tmp_path, capsys, path, value, key):
    nbdir = make_stubs(tmp_path)
    good = yaml.safe_load(write_params(tmp_path).read_text())
    params = write_params(tmp_path, **_set(good, path, value))
    out = tmp_path / "out"
    code = study_main([str(params), "--out", str(out), "--notebooks", str(nbdir)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert f"'{key}'" in lines[0] and str(params) in lines[0]
    if not isinstance(value, dict):
        assert repr(value) in lines[0] or repr(value[-1]) in lines[0]
    if isinstance(value, str) and value in NAMED:  # the module that cannot be imported, or the function it lacks
        assert NAMED[value] in lines[0]
    assert not out.exists()


def test_missing_required_key(tmp_path, capsys):
    nbdir = make_stubs(tmp_path)
    params = write_params(tmp_path)
    data = yaml.safe_load(params.read_text())
    del data["notebooks"]["stub"]["batch_sizes"]
    params.write_text(yaml.safe_dump(data))
    assert study_main([str(params), "--out", str(tmp_path / "out"), "--notebooks", str(nbdir)]) == 2
    assert "missing required key 'notebooks.stub.batch_sizes'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_yaml_exponent_without_dot_gets_a_hint(tmp_path):
    nbdir = make_stubs(tmp_path)
    params = tmp_path / "p.yaml"
    params.write_text("study: t\nseeds: [0]\nnotebooks: {stub: {batch_sizes: [8], grid: {rho: [1e-3]}}}\n")
    with pytest.raises(study.ParamsError, match=r"notebooks.stub.grid.rho.*1\.0e-3"):
        study.load_params(params, nbdir)


# ---------------------------------------------------------------------- dry run
def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    nbdir = make_stubs(tmp_path, names=("a", "b"))
    params = write_params(tmp_path, **GRID_PARAMS)
    out = tmp_path / "out"
    before = sorted(p for p in tmp_path.rglob("*"))
    assert study_main([str(params), "--out", str(out), "--notebooks", str(nbdir), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "5 cells, 42 runs: 5 to run, 0 to skip" in text
    assert "b/64" in text and "dry run" in text
    assert sorted(p for p in tmp_path.rglob("*")) == before and not out.exists()
    report = study.run_study(params, out, dry_run=True, only="b", shard="0/2", notebooks_dir=nbdir)
    assert [c.name for c in report.cells] == ["b/8"] and report.summary is None
    assert not out.exists()


# ---------------------------------------------------------------------- resume
def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_resume_after_kill_9_loses_nothing_and_redoes_nothing(tmp_path, capsys):
    hang = tmp_path / "hang"
    hang.touch()  # the run (batch 16, seed 1) hangs after writing config.json, until killed
    nbdir = make_stubs(tmp_path, hang=str(hang))
    params = write_params(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "samlib", "study", str(params), "--out", str(out), "--notebooks", str(nbdir),
         "--no-progress", "--jobs", "1"],  # one cell at a time: the order of the runs is checked below
        cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    deadline = time.time() + 90
    try:
        while len(counted(tmp_path)) < 4:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "the stub study did not reach the hanging run"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9 of the whole job, as scancel does
        proc.wait()
        proc.stdout.close()
    kernel_pid = int((tmp_path / "counter.txt").read_text().splitlines()[-1].split("\t")[1])
    for _ in range(100):  # the orphaned kernel notices its parent is gone and exits
        if not _alive(kernel_pid):
            break
        time.sleep(0.1)
    assert not _alive(kernel_pid)

    cells = study.plan_cells(study.load_params(params, nbdir), out)
    c8, c16 = cells
    half = Path(c16.configs[1].run_dir)  # seed 1 of batch 16: config.json only
    assert (half / "config.json").exists() and not (half / "metrics.json").exists()
    assert json.loads(c8.status_path.read_text())["status"] == "ok"
    assert json.loads(c16.status_path.read_text())["status"] == "running"
    first = counted(tmp_path)
    assert first == [c.run_dir for c in c8.configs + c16.configs]

    hang.unlink()
    report = study.run_study(params, out, jobs=1, notebooks_dir=nbdir, progress=False)
    assert counted(tmp_path) == first + [str(half)]  # only the cut run is redone
    assert [(c.name, c.state) for c in report.cells] == [("stub/8", "skipped"), ("stub/16", "ok")]
    assert report.summary.state == "ok" and report.exit_code == 0
    assert all_complete(cells)
    assert (out / "t" / "report.html").read_text() == "<p>4 runs</p>"
    assert counted(tmp_path, "summary.txt") == ["summary"]
    metrics = json.loads((half / "metrics.json").read_text())
    assert os.path.realpath(metrics["python"]) == os.path.realpath(sys.executable)  # the venv's kernel
    assert metrics["cwd"] == str(nbdir) and metrics["sharpness"] == SharpnessSettings(samples=10).to_dict()
    plan = json.loads((out / "t" / "study.json").read_text())
    assert [len(c["runs"]) for c in plan["cells"]] == [2, 2]
    planned = plan["cells"][1]["runs"][1]
    # the record travels: every path in it relative to the study folder
    relative = half.relative_to(out / "t").as_posix()
    assert {k: planned[k] for k in ("run_dir", "seed", "point")} == {"run_dir": relative, "seed": 1, "point": {}}
    assert planned["config"] == {**c16.configs[1].to_dict(), "run_dir": relative}  # the full config, as the cell builds it
    assert {k: plan["cells"][1][k] for k in ("run_root", "executed_notebook", "status")} == {
        "run_root": "runs/stub/16", "executed_notebook": "runs/stub/16/stub.ipynb", "status": "runs/stub/16/status.json"}
    assert json.loads(c16.status_path.read_text())["notebook"] == "runs/stub/16/stub.ipynb"

    # a finished study: nothing executes, not even the summary
    capsys.readouterr()
    report = study.run_study(params, out, notebooks_dir=nbdir, progress=False)
    assert [c.state for c in report.cells] == ["skipped", "skipped"] and report.summary.state == "skipped"
    assert counted(tmp_path) == first + [str(half)] and counted(tmp_path, "summary.txt") == ["summary"]
    assert "0 ok, 3 skipped, 0 failed" in capsys.readouterr().out

    # other sharpness settings: the cells execute again and measure, but train nothing
    data = yaml.safe_load(params.read_text())
    data["sharpness"] = {"samples": 11}
    params.write_text(yaml.safe_dump(data))
    report = study.run_study(params, out, jobs=1, notebooks_dir=nbdir, progress=False)
    assert [c.state for c in report.cells] == ["ok", "ok"] and counted(tmp_path) == first + [str(half)]
    assert json.loads((half / "metrics.json").read_text())["sharpness_settings"]["samples"] == 11
    again = study.run_study(params, out, jobs=1, notebooks_dir=nbdir, progress=False)
    assert [c.state for c in again.cells] == ["skipped", "skipped"]

    # one more seed: only the new runs train, then the summary is redone
    data = yaml.safe_load(params.read_text())
    data["seeds"] = [0, 1, 2]
    params.write_text(yaml.safe_dump(data))
    report = study.run_study(params, out, jobs=1, notebooks_dir=nbdir, progress=False)
    new = [str(c.run_root / "seed=2") for c in cells]
    assert counted(tmp_path) == first + [str(half)] + new
    assert [c.state for c in report.cells] == ["ok", "ok"] and report.summary.state == "ok"


def test_threads_reach_every_cells_kernel_and_are_restored_after(tmp_path, monkeypatch):
    """--threads N: each cell's kernel sees TF_NUM_INTRAOP_THREADS = TF_NUM_INTEROP_THREADS = N; the
    default leaves them unset (TensorFlow's own choice, as the committed studies ran)."""
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    nbdir = make_stubs(tmp_path)
    params = write_params(tmp_path)
    report = study.run_study(params, tmp_path / "one", jobs=2, threads=1, notebooks_dir=nbdir, progress=False)
    assert report.exit_code == 0
    runs = list((tmp_path / "one").glob("*/runs/stub/*/*/metrics.json"))
    assert runs and {tuple(json.loads(p.read_text())["threads"]) for p in runs} == {("1", "1")}
    assert "TF_NUM_INTRAOP_THREADS" not in os.environ and "TF_NUM_INTEROP_THREADS" not in os.environ
    study.run_study(params, tmp_path / "default", jobs=2, notebooks_dir=nbdir, progress=False)
    runs = list((tmp_path / "default").glob("*/runs/stub/*/*/metrics.json"))
    assert runs and {tuple(json.loads(p.read_text())["threads"]) for p in runs} == {(None, None)}
    with pytest.raises(study.ParamsError, match="'--threads' has value 0"):
        study.run_study(params, tmp_path / "bad", threads=0, notebooks_dir=nbdir, progress=False)
    assert not (tmp_path / "bad").exists()


def test_finished_notebook_with_missing_runs_is_a_failure(tmp_path):
    nbdir = make_stubs(tmp_path)
    nb = nbformat.read(str(nbdir / "stub.ipynb"), as_version=4)
    nb.cells[1].source = "pass  # trains nothing"
    nbformat.write(nb, str(nbdir / "stub.ipynb"))
    params = write_params(tmp_path, seeds=[0], summary=None, notebooks={"stub": {"batch_sizes": [8]}})
    report = study.run_study(params, tmp_path / "out", notebooks_dir=nbdir, progress=False)
    assert report.exit_code == 1
    assert "1 of 1 runs are not complete" in report.failed[0].error
    assert json.loads(report.cells[0].status_path.read_text())["status"] == "failed"


# ---------------------------------------------------------------------- failures
def test_a_failing_cell_is_isolated_and_reported(tmp_path, capfd):
    nbdir = make_stubs(tmp_path, fail_bs=16)
    params = write_params(tmp_path, seeds=[0], notebooks={"stub": {"batch_sizes": [8, 16, 32]}})
    out = tmp_path / "out"
    code = study_main([str(params), "--out", str(out), "--notebooks", str(nbdir), "--jobs", "2", "--no-progress"])
    assert code == 1
    captured = capfd.readouterr()
    text = captured.out
    assert "C-level line" not in captured.out + captured.err  # it went to the cell's kernel.log
    runs = out / "t" / "runs" / "stub"
    failed = json.loads((runs / "16" / "status.json").read_text())
    assert failed["status"] == "failed" and "RuntimeError: stub failure at batch size 16" in failed["error"]
    assert failed["seconds"] > 0 and failed["runs"] == 1
    executed = nbformat.read(str(runs / "16" / "stub.ipynb"), as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "RuntimeError"
    for bs in (8, 32):
        assert json.loads((runs / str(bs) / "status.json").read_text())["status"] == "ok"
    for bs in (8, 16, 32):
        assert "stub: a C-level line on fd 2" in (runs / str(bs) / "kernel.log").read_text()
    assert "3 ok, 0 skipped, 1 failed" in text  # two cells and the summary
    assert "FAILED stub/16: RuntimeError: stub failure at batch size 16" in text
    assert str(runs / "16" / "stub.ipynb") in text
    # the summary still ran, on what exists (the failing notebook trained its run before raising)
    assert counted(tmp_path, "summary.txt") == ["summary"]
    assert (out / "t" / "report.html").read_text() == "<p>3 runs</p>"
    # rerun: the failed cell is executed again (its run is complete, so nothing retrains), the rest skipped
    report = study.run_study(params, out, notebooks_dir=nbdir, progress=False)
    assert [c.state for c in report.cells] == ["skipped", "failed", "skipped"]
    assert len(counted(tmp_path)) == 3


def test_shard_runs_only_its_cells_and_no_summary(tmp_path, capsys):
    nbdir = make_stubs(tmp_path)
    params = write_params(tmp_path, seeds=[0], notebooks={"stub": {"batch_sizes": [8, 16, 32]}})
    report = study.run_study(params, tmp_path / "out", shard="1/2", notebooks_dir=nbdir, progress=False)
    assert f", {len(os.sched_getaffinity(0))} at once" in capsys.readouterr().out  # --jobs: the usable cores
    assert [(c.name, c.state) for c in report.cells] == [("stub/16", "ok")]
    assert report.summary is None and not (tmp_path / "out" / "t" / "summary.ipynb").exists()
    assert [Path(p).parent.name for p in counted(tmp_path)] == ["16"]


def test_the_summary_runs_again_when_the_study_code_changes_and_only_then(tmp_path, monkeypatch):
    """A fix in findings/figures/report code must reach a finished study's report on the next run,
    without retraining: the summary's fingerprint covers `samlib.study`'s sources."""
    from samlib.study import runner
    code = tmp_path / "findings.py"
    code.write_text("x = 1\n")
    monkeypatch.setattr(runner, "_study_code", lambda: [code])
    nbdir = make_stubs(tmp_path)
    params = write_params(tmp_path, seeds=[0])
    run = lambda: study.run_study(params, tmp_path / "out", notebooks_dir=nbdir, progress=False)  # noqa: E731
    assert run().summary.state == "ok"
    assert run().summary.state == "skipped"
    code.write_text("x = 2\n")
    again = run()
    assert [c.state for c in again.cells] == ["skipped", "skipped"] and again.summary.state == "ok"
    assert counted(tmp_path, "summary.txt") == ["summary", "summary"]


# ---------------------------------------------------------------------- dask
def test_dask_executor_runs_and_resumes_a_grid(tmp_path):
    pytest.importorskip("distributed")
    nbdir = make_stubs(tmp_path)
    params = write_params(tmp_path, seeds=[0])
    out = tmp_path / "out"
    report = study.run_study(params, out, jobs=2, executor="dask", notebooks_dir=nbdir, progress=False)
    assert [c.state for c in report.cells] == ["ok", "ok"] and report.summary.state == "ok"
    statuses = [json.loads(c.status_path.read_text()) for c in report.cells]
    assert all(s["pid"] != os.getpid() for s in statuses)  # executed by dask worker processes
    assert len(counted(tmp_path)) == 2 and counted(tmp_path, "summary.txt") == ["summary"]
    again = study.run_study(params, out, jobs=2, executor="dask", notebooks_dir=nbdir, progress=False)
    assert [c.state for c in again.cells] == ["skipped", "skipped"] and again.summary.state == "skipped"
    assert len(counted(tmp_path)) == 2 and counted(tmp_path, "summary.txt") == ["summary"]


def test_dask_executor_on_a_running_scheduler(tmp_path):
    distributed = pytest.importorskip("distributed")
    nbdir = make_stubs(tmp_path)
    params = write_params(tmp_path, seeds=[0], summary=None, notebooks={"stub": {"batch_sizes": [8]}})
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        code = study_main([str(params), "--out", str(tmp_path / "out"), "--notebooks", str(nbdir), "--no-progress",
                           "--executor", "dask", "--scheduler", cluster.scheduler_address])
        assert code == 0
        assert any(k.startswith("samlib") for k in cluster.scheduler.task_prefixes), cluster.scheduler.task_prefixes
    assert [Path(p).parent.name for p in counted(tmp_path)] == ["8"]


def test_grid_may_be_a_union_of_sub_grids(tmp_path, capsys):
    nbdir = make_stubs(tmp_path, names=("a",))
    union = {"a": {"batch_sizes": [8], "base": {"sam": "sam"}, "grid": [{"m": [None, 4]}, {"sam": ["looksam"]}]}}
    params = study.load_params(write_params(tmp_path, notebooks=union), nbdir)
    (cell,) = study.plan_cells(params, tmp_path / "out")
    assert [(c.sam, c.m, c.seed) for c in cell.configs] == [
        (s, m, seed) for s, m in (("sam", None), ("sam", 4), ("looksam", None)) for seed in (0, 1)
    ]
    bad = {"a": {"batch_sizes": [8], "grid": [{"m": [None]}, {"rho": [-1.0]}]}}
    code = study_main([str(write_params(tmp_path, name="bad.yaml", notebooks=bad)), "--out", str(tmp_path / "o"), "--notebooks", str(nbdir)])
    assert code == 2 and "'notebooks.a.grid[1].rho'" in capsys.readouterr().err


def test_a_sharpness_milestone_that_the_runs_have_is_accepted(tmp_path):
    """The other side of the milestone check: named as the runs have it (any spelling Milestone.parse
    normalises), and inherited by a notebook without milestones, as params/cpu_untuned.yaml's lr sweep does."""
    nbdir = make_stubs(tmp_path)
    params = write_params(tmp_path, base={"dataset": "mnist5k", "epochs": 1, "loss_milestones": [0.5]},
                          sharpness={"milestones": {"loss=0.50": ["sam"]}})
    assert study.load_params(params, nbdir).sharpness["milestones"] == {"loss=0.50": ["sam"]}
    for name in ("cpu_untuned", "fashion_untuned", "quick", "paper", "remedies_tuning", "fashion_remedies_tuning", "gpu",
                 "gpu_smoke"):  # the remedies curves: test_remedies
        study.load_params(Path(__file__).resolve().parents[1] / "params" / f"{name}.yaml",
                          Path(__file__).resolve().parents[1] / "notebooks")


def _tuning_study(folder: Path, lrs: dict) -> Path:
    """A tuning study's findings.json with a choice per (sam, batch size) of momentum SGD on mnist5k."""
    folder.mkdir(parents=True)
    entries = [{"dataset": "mnist5k", "optimizer": "momentum", "sam": sam, "m": None, "batch_size": bs,
                "grid": [], "choice": {"lr": lr, "val_loss": 0.1, "interior": True, "bounded_by_failure": False,
                                       "at_edge": False}} for (sam, bs), lr in lrs.items()]
    (folder / "findings.json").write_text(json.dumps({"tuning": entries}))
    return folder


def test_a_notebook_takes_each_runs_lr_from_a_tuning_study(tmp_path):
    nbdir = make_stubs(tmp_path)
    tuned = _tuning_study(tmp_path / "tuned", {("none", 8): 0.1, ("sam", 8): 0.0316, ("none", 16): 0.316,
                                               ("sam", 16): 0.1})
    params = write_params(tmp_path, base={"dataset": "mnist5k", "optimizer": "momentum", "epochs": 1},
                          notebooks={"stub": {"batch_sizes": [8, 16], "grid": {"sam": ["none", "sam"]},
                                              "tuned_lr": str(tuned)}})
    cells = study.plan_cells(study.load_params(params, nbdir), tmp_path / "out")
    got = {(c.sam, c.batch_size): c.lr for cell in cells for c in cell.configs}
    assert got == {("none", 8): 0.1, ("sam", 8): 0.0316, ("none", 16): 0.316, ("sam", 16): 0.1}
    assert all(c.lr_tuned and c.lr_scaling == "none" for cell in cells for c in cell.configs)
    assert Path(cells[0].configs[0].run_dir).name == "lr=0.1,sam=none,seed=0"  # the folder names its lr
    # the notebook builds the very configs planned: its grid parameter carries the lrs
    assert cells[0].parameters["grid"] == [{"sam": ["none"], "lr": [0.1]}, {"sam": ["sam"], "lr": [0.0316]}]


def test_a_notebook_takes_its_lrs_from_a_list_of_tuning_studies_and_refuses_two_choices_for_one_method(
        tmp_path, capsys):
    """tuned_lr as a list: each method's lr from the one study that tuned it (SGD from one, SAM from the
    other, as the remedies curves take SGD's and SAM's from the main tuning and the remedies' from theirs);
    a method tuned in both is an error naming the key and the method, and nothing is written."""
    nbdir = make_stubs(tmp_path)
    plain = _tuning_study(tmp_path / "plain", {("none", 8): 0.1})
    sam = _tuning_study(tmp_path / "sam", {("sam", 8): 0.0316})
    params = write_params(tmp_path, base={"dataset": "mnist5k", "optimizer": "momentum", "epochs": 1},
                          notebooks={"stub": {"batch_sizes": [8], "grid": {"sam": ["none", "sam"]},
                                              "tuned_lr": [str(plain), str(sam)]}})
    cells = study.plan_cells(study.load_params(params, nbdir), tmp_path / "out")
    assert {c.sam: c.lr for cell in cells for c in cell.configs} == {"none": 0.1, "sam": 0.0316}
    both = _tuning_study(tmp_path / "both", {("none", 8): 0.316})
    params = write_params(tmp_path, name="both.yaml", base={"dataset": "mnist5k", "optimizer": "momentum", "epochs": 1},
                          notebooks={"stub": {"batch_sizes": [8], "tuned_lr": [str(plain), str(both)]}})
    out = tmp_path / "out2"
    assert study_main([str(params), "--out", str(out), "--notebooks", str(nbdir)]) == 2
    err = capsys.readouterr().err
    assert "'notebooks.stub.tuned_lr'" in err and "sam none" in err and "tuned in both" in err and not out.exists()


def test_a_method_the_tuning_study_did_not_tune_exits_2_naming_the_key(tmp_path, capsys):
    nbdir = make_stubs(tmp_path)
    tuned = _tuning_study(tmp_path / "tuned", {("none", 8): 0.1})
    params = write_params(tmp_path, base={"dataset": "mnist5k", "optimizer": "momentum", "epochs": 1},
                          notebooks={"stub": {"batch_sizes": [8, 16], "tuned_lr": str(tuned)}})
    out = tmp_path / "out"
    assert study_main([str(params), "--out", str(out), "--notebooks", str(nbdir)]) == 2
    err = capsys.readouterr().err
    assert "'notebooks.stub.tuned_lr'" in err and "at batch size 16" in err and not out.exists()
