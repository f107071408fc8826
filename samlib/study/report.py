"""The study's summary: everything here is read from what the runs wrote; nothing is trained.

`collect(study_dir)` gathers one row per run (``runs/<notebook>/<batch_size>/<run>/`` with
``config.json``, ``metrics.json``, ``history.csv``, as `samlib.train` and `samlib.experiment` write
them), plus a row for every run that ``study.json`` planned but nobody wrote (status ``missing``).
`make_report(study_dir)` writes from that table:

    results.csv        one row per run (see `COLUMNS`), diverged / failed / missing runs included
    figures/*.png|svg  the figures of `FIGURES`, every one mean ± 95 % CI over seeds
    findings.json      the numbers of the findings paragraph (mean, t-based 95 % CI, n)
    report.html        figures (embedded), the parameters and stop rules that made them, findings

Statistics. Figures use seaborn's bootstrap CI (``errorbar=("ci", 95)``, 1,000 resamples, seed 0)
over seeds. The findings use the t-based interval mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (s with ddof=1; no
interval for n < 2), computed by `mean_ci`. Diverged runs (non-finite loss) never enter a mean; they
are drawn as ✕ at the top of the panel where they belong and listed in the report.

This module does not import TensorFlow (except `ensure_study`, which may have to train a demo).
The figures are drawn by `samlib.figures`, the statistics and findings computed by `samlib.findings`;
their public names are re-exported here.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import re
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import yaml

from samlib import io
from samlib.study.figures import CAPTIONS, FIGURES, make_figures
from samlib.study.figures import _empty, _log_axis  # noqa: F401  (used as report._empty etc. by samlib.experiment)
from samlib.study.findings import (
    ADAM_FAMILY,
    LR_NOTEBOOK,
    MEASURE_LABELS,
    OK,
    SGD_FAMILY,
    _measure_order,
    _present,
    best_lr,
    compute_findings,
    cost_ratios,
    family,
    findings_text,
    fmt_ci,
    headline,
    is_measure,
    main_runs,
    matched_runs,
    mean_ci,
    measure_label,
    measures_in,
    method_label,
)

__all__ = [
    # this module: collecting runs, writing the report
    "RUN_FILES", "N_TRAIN", "COLUMNS", "TAIL", "stop_rule", "run_record", "run_dirs", "read_study", "collect",
    "Report", "make_report", "ensure_study",
    # samlib.figures
    "FIGURES", "CAPTIONS", "make_figures",
    # samlib.findings
    "LR_NOTEBOOK", "SGD_FAMILY", "ADAM_FAMILY", "OK", "MEASURE_LABELS", "is_measure", "measure_label",
    "method_label", "measures_in", "mean_ci", "fmt_ci", "main_runs", "matched_runs", "family", "best_lr",
    "cost_ratios", "compute_findings", "findings_text", "headline",
]

# --------------------------------------------------------------------------------------- constants
RUN_FILES = ("config.json", "metrics.json", "history.csv")
N_TRAIN = {"mnist5k": 4000, "mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000}
COLUMNS = [
    "notebook", "run", "method", "optimizer", "sam", "rho", "m", "batch_size", "lr", "lr_base",
    "lr_scaling", "base_batch_size", "warmup_epochs", "seed", "epochs", "steps", "steps_budget",
    "epochs_max", "target_loss", "stop_rule", "stop_reason", "status", "train_loss", "test_loss",
    "train_accuracy", "test_accuracy", "loss_gap", "accuracy_gap",
]  # then the sharpness measures, then TAIL
TAIL = [
    "wall_seconds", "train_seconds", "step_seconds", "seconds_per_epoch", "samples_per_second",
    "sharpness_seconds", "sharpness_subset", "dataset", "n_train", "reused_from", "error", "run_dir",
]


# ============================================================================ one run
def stop_rule(config: Mapping[str, Any]) -> str:
    """How a run was told to stop: 'steps=64', 'target_loss=0.5 (cap 64 steps)', 'epochs=5'."""
    steps, target, epochs = config.get("steps"), config.get("target_loss"), config.get("epochs")
    if _present(target):
        cap = f"cap {int(steps)} steps" if _present(steps) else f"cap {int(epochs)} epochs"
        return f"target_loss={float(target):g} ({cap})"
    if _present(steps):
        return f"steps={int(steps)}"
    return f"epochs={epochs}"


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _step_seconds(history: pd.DataFrame | None, metrics: Mapping[str, Any]) -> float:
    """Seconds per optimizer step, from epochs after the first (which includes graph tracing) when
    the run has more than one epoch; else the whole training time over the steps."""
    if history is not None and len(history) >= 2 and {"epoch_seconds", "steps"} <= set(history):
        steps = float(history["steps"].iloc[-1] - history["steps"].iloc[0])
        if steps > 0:
            return float(history["epoch_seconds"].iloc[1:].sum()) / steps
    seconds, steps = _num(metrics.get("train_seconds")), _num(metrics.get("steps"))
    return seconds / steps if steps and steps > 0 else math.nan


def run_record(run_dir: str | Path, notebook: str | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """One run folder as a flat dict of the `COLUMNS` (+ any sharpness measures it holds).

    Missing or unreadable files never raise: a folder without metrics.json is status ``missing``, one
    whose metrics still say ``running`` is ``incomplete`` (killed, or still training).
    """
    run_dir = Path(run_dir)
    config = io.read_json_dict(run_dir / "config.json")
    metrics = io.read_json_dict(run_dir / "metrics.json")
    history = None
    if (run_dir / "history.csv").is_file():
        try:
            history = pd.read_csv(run_dir / "history.csv")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            history = None
    status = metrics.get("status") if metrics else "missing"
    if status == "running":
        status = "incomplete"
    bs = config.get("batch_size", batch_size)
    lr_base = config.get("lr")
    lr_eff = metrics.get("lr_effective")
    if not _present(lr_eff) and lr_base is not None and bs:
        ratio = bs / config.get("base_batch_size", 128)
        scale = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}
        lr_eff = lr_base * scale.get(config.get("lr_scaling", "none"), 1.0)
    dataset = config.get("dataset")
    n_train = metrics.get("n_train") or N_TRAIN.get(dataset)
    step_s = _step_seconds(history, metrics)
    per_epoch = step_s * math.ceil(n_train / bs) if n_train and bs and math.isfinite(step_s) else math.nan
    row: dict[str, Any] = {
        "notebook": notebook if notebook is not None else run_dir.parent.parent.name,
        "run": run_dir.name,
        "method": method_label(config.get("optimizer", "?"), config.get("sam", "none"), config.get("m")),
        "optimizer": config.get("optimizer"),
        "sam": config.get("sam"),
        "rho": config.get("rho"),
        "m": config.get("m"),
        "batch_size": bs,
        "lr": lr_eff,
        "lr_base": lr_base,
        "lr_scaling": config.get("lr_scaling"),
        "base_batch_size": config.get("base_batch_size"),
        "warmup_epochs": config.get("warmup_epochs"),
        "seed": config.get("seed", _seed_from_name(run_dir.name)),
        "epochs": metrics.get("epochs_run"),
        "steps": metrics.get("steps"),
        "steps_budget": config.get("steps"),
        "epochs_max": config.get("epochs"),
        "target_loss": config.get("target_loss"),
        "stop_rule": stop_rule(config) if config else None,
        "stop_reason": metrics.get("stop_reason"),
        "status": status,
        "train_loss": _num(metrics.get("train_loss")),
        "test_loss": _num(metrics.get("test_loss")),
        "train_accuracy": _num(metrics.get("train_accuracy")),
        "test_accuracy": _num(metrics.get("test_accuracy")),
        "wall_seconds": _num(metrics.get("wall_seconds")),
        "train_seconds": _num(metrics.get("train_seconds")),
        "step_seconds": step_s,
        "seconds_per_epoch": per_epoch,
        "samples_per_second": _num(metrics.get("samples_per_second")),
        "sharpness_seconds": _num(metrics.get("sharpness_seconds")),
        "sharpness_subset": metrics.get("sharpness_subset"),
        "dataset": dataset,
        "n_train": n_train,
        "reused_from": metrics.get("reused_from"),
        "error": metrics.get("error") or metrics.get("sharpness_error"),
        "run_dir": str(run_dir),
    }
    row["loss_gap"] = row["test_loss"] - row["train_loss"]
    row["accuracy_gap"] = row["train_accuracy"] - row["test_accuracy"]
    for key, value in metrics.items():
        if is_measure(key):
            row[key] = _num(value)
    return row


def _seed_from_name(name: str) -> int | None:
    match = re.search(r"seed=(\d+)$", name)
    return int(match.group(1)) if match else None




# ============================================================================ the whole study
def run_dirs(study_dir: str | Path) -> list[Path]:
    """Every run folder under ``study_dir/runs/<notebook>/<batch_size>/`` holding any run file."""
    root = Path(study_dir) / "runs"
    if not root.is_dir():
        return []
    found = []
    for nb in sorted(p for p in root.iterdir() if p.is_dir()):
        for cell in sorted(p for p in nb.iterdir() if p.is_dir()):
            for run in sorted(p for p in cell.iterdir() if p.is_dir()):
                if any((run / f).exists() for f in RUN_FILES):
                    found.append(run)
    return found


def read_study(study_dir: str | Path) -> dict[str, Any]:
    """``study.json`` as the runner wrote it ({} when absent, e.g. for a notebook's own runs)."""
    return io.read_json_dict(Path(study_dir) / "study.json")


def collect(study_dir: str | Path) -> pd.DataFrame:
    """One row per run of the study, in `COLUMNS` order then the sharpness measures then `TAIL`.

    Runs that ``study.json`` planned but that have no folder get a row with status ``missing``; every
    row also has ``cell_status`` (the runner's status.json of its cell: ok / failed / running).
    """
    study_dir = Path(study_dir)
    rows = []
    seen: set[str] = set()
    for run in run_dirs(study_dir):
        nb, bs = run.parent.parent.name, run.parent.name
        rows.append(run_record(run, nb, int(bs) if bs.isdigit() else None))
        seen.add(str(run.resolve()))
    for cell in read_study(study_dir).get("cells", []):
        for planned in cell.get("runs", []):
            # where the run lives now (the study folder may have been moved since study.json was written)
            path = study_dir / "runs" / cell["notebook"] / str(cell["batch_size"]) / Path(planned["run_dir"]).name
            if str(path.resolve()) in seen:
                continue
            row = run_record(path, cell["notebook"], cell["batch_size"])
            study = read_study(study_dir)
            base = {**study.get("base", {}), **study.get("notebooks", {}).get(cell["notebook"], {}).get("base", {}),
                    **planned.get("point", {})}
            row.update(seed=planned.get("seed"), batch_size=cell["batch_size"], optimizer=base.get("optimizer", "sgd"),
                       sam=base.get("sam", "none"), m=base.get("m"), rho=base.get("rho", 0.05))
            row["method"] = method_label(row["optimizer"], row["sam"], row["m"])
            row["stop_rule"] = stop_rule(base)
            row["target_loss"] = base.get("target_loss")
            rows.append(row)
    measures = _measure_order(k for r in rows for k in r if is_measure(k))
    columns = COLUMNS + measures + TAIL
    df = pd.DataFrame(rows, columns=columns + ["cell_status"])
    df["cell_status"] = [_cell_status(Path(r)) for r in df["run_dir"]]
    if len(df):
        df = df.sort_values(["notebook", "batch_size", "run"], kind="stable").reset_index(drop=True)
    return df


def _cell_status(run_dir: Path) -> str | None:
    return io.read_json_dict(run_dir.parent / "status.json").get("status")


# ============================================================================ the report
@dataclasses.dataclass
class Report:
    study_dir: Path
    results: pd.DataFrame
    figures: dict[str, Path]  # name -> png
    findings: dict[str, Any]
    text: list[str]
    html: Path

    @property
    def files(self) -> list[str]:
        """Everything the report wrote, relative to the study folder, sorted."""
        names = [f"figures/{n}.{e}" for n in self.figures for e in ("png", "svg")]
        return sorted(names + ["findings.json", "report.html", "results.csv"])

    def _repr_html_(self) -> str:
        return _html_body(self, embed=True)


def make_report(study_dir: str | Path) -> Report:
    """Write results.csv, figures/, findings.json and report.html for `study_dir` (module doc)."""
    study_dir = Path(study_dir)
    df = collect(study_dir)
    io.write_text(study_dir / "results.csv", df.to_csv(index=False))
    make_figures(df, study_dir / "figures")
    findings = compute_findings(df)
    text = findings_text(findings)
    io.write_json(study_dir / "findings.json", {**findings, "headline": headline(findings), "text": text})
    figures = {name: study_dir / "figures" / f"{name}.png" for name in FIGURES}
    rep = Report(study_dir, df, figures, findings, text, study_dir / "report.html")
    io.write_text(rep.html, "<!doctype html>\n<html><head><meta charset='utf-8'>"
                  f"<title>SAM study: {html.escape(study_dir.name)}</title>{_CSS}</head><body>"
                  + _html_body(rep, embed=True) + "</body></html>\n")
    return rep


_CSS = """<style>
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}
figure{margin:1.5em 0}figcaption{font-size:13px;color:#444}img{max-width:100%}
.findings li{margin:.3em 0}
</style>"""


def _html_body(rep: Report, embed: bool = True) -> str:
    study = read_study(rep.study_dir)
    params = {k: study[k] for k in ("study", "description", "seeds", "base", "sharpness", "notebooks", "summary")
              if k in study}
    parts = [f"<h1>Does SAM rescue large-batch training? — study <code>{html.escape(rep.study_dir.name)}</code></h1>"]
    if study.get("description"):
        parts.append(f"<p>{html.escape(study['description'])}</p>")
    parts.append(f"<h2>Findings</h2><p>{html.escape(headline(rep.findings))}</p><h3>Details</h3>"
                 "<ul class='findings'>" + "".join(f"<li>{html.escape(t)}</li>" for t in rep.text) + "</ul>")
    parts.append("<p><small>Findings: mean and t-based 95 % CI over seeds (mean ± t·s/√n). Figures: mean and "
                 "seaborn bootstrap 95 % CI over seeds. Diverged or failed runs are never averaged; they are "
                 "marked ✕ in the figures and listed below.</small></p>")
    parts.append("<h2>Parameters</h2>")
    rules = sorted(set(rep.results["stop_rule"].dropna())) if len(rep.results) else []
    parts.append("<p>Stop rules used: " + html.escape("; ".join(rules) or "n/a")
                 + ". A <code>steps=N</code> rule is a step budget: every batch size takes the same number of "
                 "optimizer steps (Hoffer et al. 2017), so large batches are not merely under-trained; a "
                 "<code>target_loss</code> rule stops at the first epoch whose mean training loss is at or below "
                 "the target (matched training loss).</p>")
    if params:
        parts.append(f"<p>Params file: <code>{html.escape(str(study.get('params_file', '')))}</code></p>")
        parts.append("<pre>" + html.escape(yaml.safe_dump(params, sort_keys=False, width=110)) + "</pre>")
    else:
        parts.append("<p>No study.json in this folder (not made by the study runner): the configurations are "
                     "those in results.csv.</p>")
    parts.append("<h2>Figures</h2>")
    for name, png in rep.figures.items():
        if embed and png.is_file():
            src = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
        else:
            src = f"figures/{name}.png"
        parts.append(f"<figure><img src='{src}' alt='{name}'><figcaption><b>{name}</b>: "
                     f"{html.escape(CAPTIONS.get(name, ''))} (<a href='figures/{name}.svg'>svg</a>)</figcaption>"
                     "</figure>")
    bad = rep.results[rep.results["status"] != OK] if len(rep.results) else rep.results
    parts.append(f"<h2>Runs not ok ({len(bad)})</h2>")
    if len(bad):
        cols = ["notebook", "batch_size", "run", "status", "stop_reason", "train_loss", "error"]
        parts.append(bad[cols].to_html(index=False, na_rep="", escape=True))
    else:
        parts.append("<p>none</p>")
    parts.append(f"<p>One row per run: <a href='results.csv'>results.csv</a> ({len(rep.results)} rows).</p>")
    return "\n".join(parts)


# ============================================================================ notebook helper
def ensure_study(study_dir: str | Path) -> str:
    """`study_dir` as is when it holds a study (study.json or any run); otherwise train a tiny demo
    study there (`samlib.experiment.demo_study`: two seeds, batch sizes 32 and 256, SGD with and without
    SAM, a few steps; about half a minute) so that the summary notebook runs on its own. A folder the study runner made always has study.json, so a real
    study is never touched."""
    study_dir = Path(study_dir)
    if (study_dir / "study.json").is_file() or run_dirs(study_dir):
        return str(study_dir)
    from samlib.study import cell as experiment  # imports TensorFlow

    experiment.demo_study(study_dir)
    return str(study_dir)
