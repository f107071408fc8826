"""samlib.study.report on a synthetic study folder written here (no training): one row per run, findings'
CIs equal a t-based CI computed here, every figure written, diverged / failed / missing runs kept."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from samlib import io
from samlib.config import Config
from samlib.study import timing
from samlib.study import answer_text, details, figures, findings, layout, report, tables, tuning
from samlib.study import stats as study_stats
from samlib.study.grid import cell_runs
from samlib.study.layout import run_dirname

SEEDS = (0, 1, 2)
BATCHES = (32, 256)
MEASURES = ("keskar_1e-03", "keskar_5e-04", "lambda_max", "sam_sharpness")
LR_BASE = {"base_batch_size": 32, "target_loss": None}  # the lr sweep: a step budget, no target


def _write_run(root, notebook, bs, point, seed, base, status="ok", rng=None, test_loss=None):
    """One run folder as train.train_and_evaluate + cell.measure_run write it."""
    rng = rng or np.random.default_rng(seed)
    run_dir = root / "runs" / notebook / str(bs) / run_dirname(point, seed)
    config = Config.from_dict({**base, **point, "batch_size": bs, "seed": seed, "run_dir": str(run_dir)})
    io.write_json(run_dir / "config.json", config.to_dict())
    if status == "incomplete":  # killed while training: metrics still say running, no history
        io.write_json(run_dir / "metrics.json", {"status": "running"})
        return run_dir, None
    if status == "failed":
        io.write_json(run_dir / "metrics.json", {"status": "failed", "error": "RuntimeError: boom"})
        return run_dir, None
    diverged = status == "diverged"
    train_loss = math.nan if diverged else float(rng.uniform(0.05, 0.3)) + (0.5 if status == "capped" else 0.0)
    test_loss = math.nan if diverged else (test_loss if test_loss is not None else train_loss + float(rng.uniform(0, .1)))
    steps_per_epoch = math.ceil(4000 / bs)
    epochs = 3
    history = pd.DataFrame({
        "epoch": range(1, epochs + 1),
        "epoch_seconds": [2.0, 1.0, 1.0] if config.sam == "none" else [3.0, 2.0, 2.0],
        "steps": [steps_per_epoch * (e + 1) for e in range(epochs)],
        "lr": [config.scaled_lr] * epochs,
        "loss": [1.0, 0.5, 0.3],
        "test_loss": [1.0, 0.5, 0.35],
    })
    io.write_text(run_dir / "history.csv", history.to_csv(index=False))
    capped = status == "capped"  # finished ok at its step cap, above its loss target
    metrics = {
        "status": "diverged" if diverged else "ok",
        "stop_reason": "diverged" if diverged else ("target_loss" if config.target_loss and not capped else "steps"),
        "converged": None if config.target_loss is None else bool(not diverged and train_loss <= config.target_loss),
        "val_loss": math.nan if diverged else train_loss + 0.05,
        "train_loss": train_loss, "test_loss": test_loss,
        "train_accuracy": math.nan if diverged else 0.97, "test_accuracy": math.nan if diverged else 0.95,
        "wall_seconds": 5.0, "train_seconds": float(history["epoch_seconds"].sum()),
        "samples_per_second": 1000.0, "steps": int(history["steps"].iloc[-1]), "epochs_run": epochs,
        "lr_effective": config.scaled_lr, "n_train": 4000,
        "sharpness_status": "skipped: diverged" if diverged else "ok",
    }
    for k in MEASURES:
        metrics[k] = None if diverged else float(rng.uniform(1, 10)) * (bs / 32) ** 0.5
    if config.target_loss is not None:  # milestones: the loss target, and one epoch
        metrics.update(_snapshots(metrics, bs, diverged, capped, config.target_loss))
    io.write_json(run_dir / "metrics.json", metrics)
    return run_dir, metrics


def _snapshots(metrics, bs, diverged, capped, target):
    """metrics.json's snapshots of a run with milestones loss=<target> and epochs=1: the loss milestone
    at the run's final numbers (not reached by a capped or diverged run), epoch 1 a little worse."""
    if diverged:
        return {"snapshots": [], "milestones_missing": [f"loss={target:g}", "epochs=1"]}
    per_epoch = math.ceil(4000 / bs)
    final = {k: metrics[k] for k in ("train_loss", "train_accuracy", "val_loss", "test_loss", "test_accuracy",
                                     *MEASURES)}
    epoch1 = {**final, "milestone": "epochs=1", "kind": "epochs", "at": 1, "step": per_epoch, "epoch": 1.0,
              "train_loss": final["train_loss"] + 0.2, "test_loss": final["test_loss"] + 0.2,
              "test_accuracy": final["test_accuracy"] - 0.01 * (bs / 32), "grad_norm": 0.5, "weight_norm": 10.0}
    if capped:
        return {"snapshots": [epoch1], "milestones_missing": [f"loss={target:g}"]}
    at_loss = {**final, "milestone": f"loss={target:g}", "kind": "loss", "at": target, "step": metrics["steps"],
               "epoch": metrics["steps"] / per_epoch, "grad_norm": 0.2, "weight_norm": 11.0}
    return {"snapshots": [epoch1, at_loss], "milestones_missing": []}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(123)
    base = {"dataset": "mnist5k", "target_loss": 0.3, "steps": 100, "lr": 0.1, "verbose": 0}
    written = {}
    planned = []

    def add(notebook, bs, point, seed, nb_base, **kw):
        run_dir, metrics = _write_run(root, notebook, bs, point, seed, {**base, **nb_base}, rng=rng, **kw)
        written[str(run_dir)] = (notebook, bs, point, seed, kw.get("status", "ok"), metrics)
        return run_dir

    cells = []
    for bs in BATCHES:
        # baseline: SGD; at 256 seed 2 diverged, at 32 seed 1 stopped at its cap above the target
        for seed in SEEDS:
            status = "diverged" if (bs == 256 and seed == 2) else "capped" if (bs == 32 and seed == 1) else "ok"
            add("baseline", bs, {}, seed, {}, status=status)
        # sam_sgd: SAM with m-sharpness; at 256 one run failed and one was never written (missing)
        for point in ({"m": None}, {"m": 16}):
            for seed in SEEDS:
                if bs == 256 and point["m"] == 16 and seed == 2:
                    planned.append((bs, point, seed))  # in study.json, never written
                    continue
                status = "failed" if (bs == 256 and point["m"] == 16 and seed == 1) else "ok"
                add("sam_sgd", bs, point, seed, {"sam": "sam"}, status=status)
        # lr_scaling: rule x sam
        for rule in ("none", "linear"):
            for sam in ("none", "sam"):
                for seed in SEEDS:
                    add("lr_scaling", bs, {"lr_scaling": rule, "sam": sam}, seed, LR_BASE)
        io.write_json(root / "runs" / "sam_sgd" / str(bs) / "status.json",
                      {"status": "failed" if bs == 256 else "ok"})
    # study.json as the runner writes it (cells and planned runs)
    for nb, grid, nb_base in (("baseline", {}, {}),
                              ("sam_sgd", {"m": [None, 16]}, {"sam": "sam"}),
                              ("lr_scaling", {"lr_scaling": ["none", "linear"], "sam": ["none", "sam"]}, LR_BASE)):
        for bs in BATCHES:
            cell = layout.cell_dir(root, nb, bs)
            cells.append(layout.cell_record(nb, bs, cell, cell_runs({**base, **nb_base}, bs, SEEDS, grid, cell)))
    io.write_json(root / "study.json", {"study": "synthetic", "description": "test", "seeds": list(SEEDS),
                                        "base": base, "sharpness": {}, "notebooks": {
                                            "baseline": {"batch_sizes": list(BATCHES), "base": {}, "grid": {}},
                                            "sam_sgd": {"batch_sizes": list(BATCHES), "base": {"sam": "sam"},
                                                        "grid": {"m": [None, 16]}},
                                            "lr_scaling": {"batch_sizes": list(BATCHES), "base": LR_BASE,
                                                           "grid": {"lr_scaling": ["none", "linear"],
                                                                    "sam": ["none", "sam"]}}},
                                        "cells": cells})
    rep = report.make_report(root)
    return {"root": root, "written": written, "planned_missing": planned, "report": rep}


def _t_ci(values):
    v = np.asarray(values, dtype=float)
    mean = v.mean()
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return mean, mean - half, mean + half


def test_results_csv_has_one_row_per_written_run_plus_missing_ones(study):
    results = pd.read_csv(study["root"] / "results.csv")
    written = set(study["written"])
    assert len(results) == len(written) + len(study["planned_missing"])
    # run_dir is relative to the study folder: results.csv names no machine's paths
    assert {str(Path(p).relative_to(study["root"])) for p in written} <= set(results["run_dir"])
    assert not any(Path(p).is_absolute() for p in results["run_dir"])
    missing = results[results["status"] == "missing"]
    assert len(missing) == len(study["planned_missing"]) == 1
    assert missing.iloc[0]["notebook"] == "sam_sgd" and missing.iloc[0]["batch_size"] == 256
    for column in ("notebook", "optimizer", "sam", "rho", "m", "batch_size", "lr", "seed", "epochs", "steps",
                   "stop_rule", "train_loss", "test_loss", "train_accuracy", "test_accuracy", *MEASURES,
                   "wall_seconds", "status"):
        assert column in results.columns, column
    # values are those written
    for run_dir, (nb, bs, point, seed, status, metrics) in study["written"].items():
        row = results[results["run_dir"] == str(Path(run_dir).relative_to(study["root"]))].iloc[0]
        assert (row["notebook"], row["batch_size"], row["seed"]) == (nb, bs, seed)
        assert row["status"] == ("ok" if status == "capped" else status)  # capped: finished ok, above target
        if status == "ok":
            assert row["test_loss"] == pytest.approx(metrics["test_loss"])
            assert row["lambda_max"] == pytest.approx(metrics["lambda_max"])
    main = results[results["notebook"] != "lr_scaling"]
    assert set(main["stop_rule"]) == {"target_loss=0.3 (cap 100 steps)"}
    assert set(results[results["notebook"] == "lr_scaling"]["stop_rule"]) == {"steps=100"}
    capped = results[(results["notebook"] == "baseline") & (results["batch_size"] == 32) & (results["seed"] == 1)]
    assert capped.iloc[0]["converged"] == False  # noqa: E712
    lr = results[(results["notebook"] == "lr_scaling") & (results["batch_size"] == 256)]
    assert set(lr["lr"].round(6)) == {0.1, 0.8}  # effective lr: none and linear (k = 256/32)


def test_findings_cis_equal_t_based_cis_computed_here(study):
    results = pd.read_csv(study["root"] / "results.csv")
    findings = json.loads((study["root"] / "findings.json").read_text())
    html = (study["root"] / "report.html").read_text()
    entry = findings["largest_batch"]["SGD"]
    assert entry["batch_size"] == 256
    main = results[(results["notebook"] != "lr_scaling") & (results["batch_size"] == 256)
                   & (results["status"] == "ok") & (results["converged"] == True)]  # noqa: E712
    sgd = main[main["sam"] == "none"]
    sam = main[(main["sam"] == "sam") & main["m"].isna()]
    assert len(sgd) == 2 and len(sam) == 3  # SGD: seed 2 diverged, never averaged
    for method, rows in (("SGD", sgd), ("SGD+SAM", sam)):
        for metric in ("test_loss", "test_accuracy", "lambda_max"):
            values = rows[metric].to_numpy()
            mean, lo, hi = _t_ci(values)
            got = entry["methods"][method][metric]
            assert got["n"] == len(values)
            assert (got["mean"], got["lo"], got["hi"]) == pytest.approx((mean, lo, hi), rel=1e-12, abs=1e-12)
        # the paragraph states the same numbers
        mean, lo, hi = _t_ci(rows["test_loss"].to_numpy())
        assert f"{mean:.3g} (95 % CI {lo:.3g}–{hi:.3g}, n={len(rows)})" in html
    # the diverged SGD run is counted as not compared, not averaged
    assert entry["methods"]["SGD"]["not_compared"] == 1 and entry["methods"]["SGD"]["runs"] == 3


def test_gap_closure_is_computed_from_the_compared_runs_and_stated_first(study):
    results = pd.read_csv(study["root"] / "results.csv")
    f = json.loads((study["root"] / "findings.json").read_text())
    (g,) = f["gap_closure"]  # SGD under the same lr: the only family and rule of the main runs here
    assert (g["family"], g["lr_rule"]) == ("sgd", "same")
    ok = results[(results["notebook"] != "lr_scaling") & (results["status"] == "ok") & (results["converged"] == True)]  # noqa: E712
    shared = [0]  # seed 1 missed its target at 32, seed 2 diverged at 256: only seed 0 has all three runs
    sel = lambda nb, bs, m: ok[(ok["notebook"] == nb) & (ok["batch_size"] == bs) & ok["m"].isna()  # noqa: E731
                               & ok["seed"].isin(shared)]["test_loss"].mean()
    base_lb, sam_lb, base_sb = sel("baseline", 256, None), sel("sam_sgd", 256, None), sel("baseline", 32, None)
    assert g["n_seeds"] == 1 and (g["small_batch"], g["large_batch"]) == (32, 256)
    assert g["estimate"] == pytest.approx((base_lb - sam_lb) / (base_lb - base_sb))
    assert f["text"][0] == f["answer"][0] and "batch 256" in f["text"][0] and "batch 32" in f["text"][0]
    # the paragraph opens with where the seed study's result reproduces, and repeats none of the bullets
    assert f["headline"].startswith(f["seed_result"]) and f["seed_result"] not in f["text"]
    assert not [t for t in f["text"] if t in f["headline"]]


def test_snapshots_csv_has_one_row_per_run_and_milestone_and_feeds_the_answer_table(study):
    snaps = pd.read_csv(study["root"] / "snapshots.csv")
    assert list(snaps.columns[:len(tables.SNAPSHOT_COLUMNS)]) == tables.SNAPSHOT_COLUMNS
    assert set(snaps["notebook"]) == {"baseline", "sam_sgd"}  # the lr sweep's runs have no milestones
    # 16 written runs of the comparisons with 2 milestones each; the failed and the never-written run: the one
    # milestone of their config (loss=0.3), not reached
    assert len(snaps) == 16 * 2 + 2
    not_reached = snaps[~snaps["reached"]]
    assert sorted(zip(not_reached["batch_size"], not_reached["run"], not_reached["milestone"], not_reached["status"])) == [
        (32, "seed=1", "loss=0.3", "ok"),  # stopped at its cap above the target
        (256, "m=16,seed=1", "loss=0.3", "failed"), (256, "m=16,seed=2", "loss=0.3", "missing"),
        (256, "seed=2", "epochs=1", "diverged"), (256, "seed=2", "loss=0.3", "diverged")]
    assert not_reached["test_loss"].isna().all()
    reached = snaps[snaps["reached"]]
    assert np.allclose(reached["test_error"], 1 - reached["test_accuracy"])
    f = json.loads((study["root"] / "findings.json").read_text())
    rows = {(r["lr_rule"], r["compare_at"]): r for r in f["answer_table"]}
    assert set(rows) == {("same", "epochs"), ("same", "loss")}  # lr_scaling none; scaled: no run at batch 256
    loss = rows[("same", "loss")]
    assert (loss["small_batch"], loss["large_batch"], loss["n_missing"]) == (32, 256, 2)  # capped + diverged
    sb = reached[(reached["milestone"] == "loss=0.3") & (reached["batch_size"] == 32) & (reached["sam"] == "none")]
    assert loss["test_error"]["sb"] == pytest.approx(sb["test_error"].mean())
    html = (study["root"] / "report.html").read_text()
    assert "stop rule: at loss=0.3" in (study["root"] / "figures" / "fig1_sgd_loss.svg").read_text()
    assert "<table class='answer'>" in html and html.index("<table class='answer'>") < html.index("<ul class='findings'>")


def test_mean_ci_matches_scipy_and_handles_small_samples():
    values = [0.3, 0.5, 0.4, 0.45]
    ci = study_stats.mean_ci(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (ci["lo"], ci["hi"]) == pytest.approx((lo, hi))
    assert study_stats.mean_ci([1.0, math.nan])["n"] == 1 and math.isnan(study_stats.mean_ci([1.0])["lo"])
    assert study_stats.mean_ci([])["n"] == 0
    assert study_stats.fmt_ci(study_stats.mean_ci([])) == "n/a"


def test_every_figure_is_written_as_png_and_svg(study):
    folder = study["root"] / "figures"
    for name in figures.FIGURES:
        for ext in ("png", "svg"):
            path = folder / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, path
    assert sorted(study["report"].files) == study["report"].files
    assert all((study["root"] / f).is_file() for f in study["report"].files)


def test_diverged_failed_and_missing_runs_are_present_and_flagged(study):
    results = pd.read_csv(study["root"] / "results.csv")
    findings = json.loads((study["root"] / "findings.json").read_text())
    html = (study["root"] / "report.html").read_text()
    diverged = results[results["status"] == "diverged"]
    assert len(diverged) == 1
    row = diverged.iloc[0]
    assert (row["notebook"], row["batch_size"], row["seed"]) == ("baseline", 256, 2)
    assert math.isnan(row["test_loss"]) and math.isnan(row["lambda_max"])
    failed = results[results["status"] == "failed"]
    assert len(failed) == 1 and failed.iloc[0]["error"] == "RuntimeError: boom"
    assert failed.iloc[0]["cell_status"] == "failed"
    flagged = {(b["notebook"], b["batch_size"], b["run"], b["status"]) for b in findings["not_ok"]}
    assert ("baseline", 256, "seed=2", "diverged") in flagged
    assert ("sam_sgd", 256, "m=16,seed=1", "failed") in flagged
    assert ("sam_sgd", 256, "m=16,seed=2", "missing") in flagged
    assert "Runs not ok (3)" in html
    left = {(b["notebook"], b["batch_size"], b["run"], b["status"]) for b in findings["not_compared"]}
    assert left == flagged | {("baseline", 32, "seed=1", "target not reached")}
    assert re.search(r"4 run\(s\) of the comparisons are shown but not compared", html)


def test_report_states_parameters_and_stop_rules(study):
    html = (study["root"] / "report.html").read_text()
    assert "steps=100" in html and "target_loss=0.3" in html and "Hoffer" in html
    assert "lr_scaling:" in html  # the params (notebooks and their grids) are printed
    for name in figures.FIGURES:
        assert name in html


def test_collect_reads_an_interrupted_run_as_incomplete(tmp_path):
    _write_run(tmp_path, "baseline", 64, {}, 0, {"steps": 10}, status="incomplete")
    df = tables.collect(tmp_path)
    assert list(df["status"]) == ["incomplete"] and df.iloc[0]["stop_rule"] == "steps=10"
    rep = report.make_report(tmp_path)  # nothing finished: every figure still written, no crash
    assert all(p.is_file() for p in rep.figures.values())
    assert any("1 runs (1 incomplete)" in t for t in rep.text)


def test_a_missing_run_takes_its_columns_from_the_planned_config(study):
    results = pd.read_csv(study["root"] / "results.csv")
    missing = results[results["status"] == "missing"].iloc[0]
    assert (missing["sam"], missing["m"], missing["seed"], missing["method"]) == ("sam", 16, 2, "SGD+SAM (m=16)")
    assert missing["stop_rule"] == "target_loss=0.3 (cap 100 steps)" and missing["lr"] == pytest.approx(0.1)


def test_results_carry_the_new_metrics_and_take_recorded_step_seconds(tmp_path):
    run_dir, _ = _write_run(tmp_path, "baseline", 64, {}, 0, {"steps": 10, "target_loss": 0.5})
    io.update_json(run_dir / "metrics.json", converged=True, val_loss=0.4, val_accuracy=0.9, grad_norm=1.5,
                   weight_norm=30.0, step_seconds=0.25)
    row = tables.collect(tmp_path).iloc[0]
    assert row["converged"] is True or row["converged"] == True  # noqa: E712
    assert (row["val_loss"], row["val_accuracy"], row["grad_norm"], row["weight_norm"]) == (0.4, 0.9, 1.5, 30.0)
    assert row["step_seconds"] == 0.25 and row["seconds_per_epoch"] == 0.25 * math.ceil(4000 / 64)
    # a run without a target or a validation loss, and one compiled call (no steady-state step time)
    single, _ = _write_run(tmp_path, "baseline", 64, {}, 1, {"steps": 10})
    metrics = {k: v for k, v in io.read_json(single / "metrics.json").items() if k not in ("converged", "val_loss")}
    io.write_json(single / "metrics.json", {**metrics, "step_seconds": math.nan})
    row = tables.run_record(single)
    assert row["converged"] is None and math.isnan(row["val_loss"]) and math.isnan(row["grad_norm"])
    assert row["step_seconds"] == pytest.approx(4.0 / (3 * math.ceil(4000 / 64)))  # train seconds over steps
    assert row["run_dir"] == str(single)  # no study folder given: the path as given
    assert row["n_test"] is None
    io.update_json(single / "metrics.json", n_test=1000)
    assert tables.run_record(single)["n_test"] == 1000
    # the training subset is part of the results table: as configured, None for the whole set
    assert tables.run_record(single)["train_subset"] is None
    io.update_json(single / "config.json", train_subset=2000)
    assert tables.run_record(single)["train_subset"] == 2000


def test_the_headline_names_the_matched_loss_figure_by_its_number(study):
    text = json.loads((study["root"] / "findings.json").read_text())["headline"]
    assert f"(Fig. {figures.number('fig9_matched_loss')} shows the training loss each reached)" in text
    assert answer_text.headline({"not_compared": [{}]}, matched_figure=3).count("Fig. 3") == 1


@pytest.mark.parametrize("base", ["SGD", "SGD+momentum"])
def test_base_optimizer_sharpness_and_sam_cost_are_stated_whichever_sgd_the_study_trained(base):
    """'SGD+momentum' has a '+' but is a base optimizer: its sharpness per batch size (the seed study's
    Fig. 2) and SAM's cost over it must reach the findings text and the headline (which read what a
    method is from the findings' ``methods`` fields, not from its label)."""
    ci = {"mean": 4.0, "lo": 3.0, "hi": 5.0, "n": 5}
    trend = {"lambda_max": {"small": {"mean": 6.5}, "large": {"mean": 3.0}, "smallest_batch": 32,
                            "largest_batch": 1000, "ratio": 0.46, "spearman_rho": -0.85, "spearman_p": 1e-4,
                            "n_runs": 15}}
    optimizer = {"SGD": "sgd", "SGD+momentum": "momentum"}[base]
    methods = {base: {"optimizer": optimizer, "sam": "none", "m": None},
               f"{base}+SAM": {"optimizer": optimizer, "sam": "sam", "m": None}}
    f = {"methods": methods,
         "sharpness_by_batch": {base: {"lambda_max": {32: ci}}, f"{base}+SAM": {"lambda_max": {32: ci}}},
         "sharpness_trend": {base: trend}, "cost_ratio": {f"{base}+SAM": {"all": {"mean": 2.1, "lo": 1.7, "hi": 2.4, "n": 15},
                                                      "at_largest": {"mean": 2.2, "lo": 1.1, "hi": 3.3, "n": 5},
                                                      "largest_batch": 1000}}}
    text = details.findings_text(f)
    assert [t for t in text if t.startswith("Sharpness of ")] == [
        f"Sharpness of {base} minima vs batch size (all at the same training loss): Hessian λ_max B=32: "
        "4 (95 % CI 3–5, n=5)."]
    head = answer_text.headline(f)
    assert f"of {base} minima, all at the same training loss, goes from 6.5 at batch 32 to 3 at 1000" in head
    assert f"times {base}'s seconds per step" in head


_IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const found = [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                                                 height: i.naturalHeight, shown: i.getBoundingClientRect().width}));
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str | None:
    import shutil

    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)


def test_report_html_shows_every_figure_in_a_real_browser(study, tmp_path):
    """Headless Chromium loads report.html (a copy with a script that records, after load, what each
    <img> decoded to) and every figure has decoded (naturalWidth > 0) and takes space on the page."""
    import html as html_lib
    import subprocess

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here (Debian package 'chromium'; .ci/run installs it on CI)")
    page = tmp_path / "report.html"
    page.write_text((study["root"] / "report.html").read_text().replace("</body>", _IMAGE_CHECK + "</body>"))
    proc = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    match = re.search(r'<pre id="image-check">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"Chromium gave no result (exit {proc.returncode}): {proc.stderr[-2000:]}"
    images = json.loads(html_lib.unescape(match.group(1)))
    # the synthetic study trained SGD only: its Adam figures are left out of the page, and said so
    adam = [n for n in figures.FIGURES if figures.FIGURE_FAMILY.get(n) == "adam"]
    assert adam and [i["alt"] for i in images] == [n for n in figures.FIGURES if n not in adam]
    text = (study["root"] / "report.html").read_text()
    assert "Not shown: " + ", ".join(f"Fig. {figures.number(n)} ({n})" for n in adam) in text
    assert all((study["root"] / "figures" / f"{n}.png").is_file() for n in adam)
    for image in images:
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image  # decoded
        assert image["shown"] > 100, image  # laid out on the page, not hidden or collapsed


_ORDER_CHECK = """<script>
window.addEventListener("load", () => {
  const table = document.querySelector("table.answer");
  const blocks = [...document.body.querySelectorAll("p, ul, ol")].filter(e => !table || !table.contains(e));
  const out = document.createElement("pre");
  out.id = "order-check";
  out.textContent = JSON.stringify({
    table: !!table,
    rows: table ? table.querySelectorAll("tr").length - 1 : 0,
    first_h2: document.querySelector("h2") ? document.querySelector("h2").textContent : null,
    after_table: blocks.map(e => ({tag: e.tagName, cls: e.className,
                                   after: !!table && !!(table.compareDocumentPosition(e) & Node.DOCUMENT_POSITION_FOLLOWING)})),
    abstract: (document.querySelector("p.abstract") || {}).textContent,
    findings: [...document.querySelectorAll("ul.findings li")].length,
  });
  document.body.appendChild(out);
});
</script>"""


def test_the_answer_table_comes_before_any_finding_in_a_real_browser(study, tmp_path):
    """The report reads as a paper: headless Chromium lays out report.html and the answer table (one
    row per answer-table row of findings.json) comes before every paragraph and list of the page (the
    findings paragraph and the details list among them)."""
    import html as html_lib
    import subprocess

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here (Debian package 'chromium'; .ci/run installs it on CI)")
    f = json.loads((study["root"] / "findings.json").read_text())
    assert f["answer_table"] and list(f)[0] == "answer_table"  # the answer first in findings.json too
    page = tmp_path / "report.html"
    page.write_text((study["root"] / "report.html").read_text().replace("</body>", _ORDER_CHECK + "</body>"))
    proc = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    match = re.search(r'<pre id="order-check">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"Chromium gave no result (exit {proc.returncode}): {proc.stderr[-2000:]}"
    got = json.loads(html_lib.unescape(match.group(1)))
    assert got["table"] and got["rows"] == len(f["answer_table"]) and got["first_h2"] == "The answer"
    assert {b["cls"] for b in got["after_table"]} >= {"abstract", "findings"}
    assert all(b["after"] for b in got["after_table"]), [b for b in got["after_table"] if not b["after"]]
    assert got["abstract"] == f["headline"] and got["findings"] == len(f["text"])
    # and in the DOM as dumped: the table's position precedes the first paragraph and the first list
    dom = proc.stdout
    at = dom.index('<table class="answer"')
    assert at < dom.index('<p class="abstract"') and at < dom.index('<ul class="findings"')
    assert at < min(m.start() for m in re.finditer(r"<(p|ul|ol)[ >]", dom))


def test_report_command_rewrites_a_study_from_its_runs_without_weights(study, tmp_path, capsys):
    import shutil

    from samlib import cli

    copy = tmp_path / "copy"
    shutil.copytree(study["root"], copy)
    for name in ("findings.json", "results.csv", "report.html"):
        (copy / name).unlink()
    assert cli.main(["report", str(copy)]) == 0
    again = json.loads((copy / "findings.json").read_text())
    first = json.loads((study["root"] / "findings.json").read_text())
    assert again["gap_closure"] == first["gap_closure"] and again["headline"] == first["headline"]
    out = capsys.readouterr().out
    assert (copy / "report.html").is_file() and f"written in {copy}:" in out and "\n  report.html\n" in out
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert "holds no study" in capsys.readouterr().err


def _recomputed(study: str, tmp_path: Path, keys: tuple[str, ...] = ()):
    """docs/results/<study>/ as a fresh clone has it (no weights, no executed notebooks), its findings
    recomputed from its runs and checked against the committed findings.json (`keys` beyond the common
    ones); the committed records name no machine's folders. Returns (committed, copy, results, saved)."""
    import shutil

    committed = Path(__file__).resolve().parents[1] / "docs" / "results" / study
    if not (committed / "findings.json").is_file():
        pytest.skip(f"docs/results/{study} is not in this checkout")
    copy = tmp_path / study
    shutil.copytree(committed, copy, ignore=shutil.ignore_patterns("*.h5", "*.ipynb", "kernel.log", "figures"))
    df = tables.collect(copy)
    snapshots = tables.collect_snapshots(copy)
    f = {**findings.compute_findings(df, snapshots, tuning.planned_with(copy)), "time_split": timing.study_split(copy)}
    saved = json.loads((committed / "findings.json").read_text())
    assert list(saved)[0] == "answer_table"
    for key in ("answer_table", "gap_closure", "seed_result", "sharpness_vs_generalization", "time_split", "cost_ratio",
                *keys):
        assert json.loads(json.dumps(f[key])) == saved[key], key
    assert details.findings_text(f) + [timing.sentence(f["time_split"])] == saved["text"]
    # the committed records travel: no machine's folders in them (run_dir is relative to the study)
    assert set(df["run_dir"]) == {str(p.relative_to(copy)) for p in layout.run_dirs(copy)}
    for path in [committed / n for n in ("results.csv", "findings.json", "report.html", "study.json")]:
        assert not re.search(r"/(work|root|home|tmp|Users)/", path.read_text()), path
    return committed, copy, df, saved


def test_the_committed_untuned_mnist_study_is_what_the_code_computes_from_its_committed_runs(tmp_path):
    """docs/results/cpu_untuned/ (the first, untuned MNIST study) as a fresh clone has it (no weights, no executed notebooks): recomputing the
    findings from its runs gives the committed findings.json, so the README's numbers are the code's."""
    committed, copy, df, saved = _recomputed("cpu_untuned", tmp_path, ("lr_scaling",))
    assert len(saved["answer_table"]) == 12
    # every row of the answer table has its five seed pairs, and every run reached every milestone
    assert all(r["n_seeds"] == 5 and r["n_missing"] == 0 for r in saved["answer_table"])
    # the lr sweep's lr 0.15 at batch 32 ends at train loss ~ln 10: collapsed by the one rule
    # (rundir.is_collapsed), counted and listed as such, never averaged; no ok row sits at chance
    collapsed = df[df["status"] == "collapsed"]
    assert len(df) == 133 and df["status"].value_counts().to_dict() == {"ok": 129, "collapsed": 4}
    assert set(collapsed["notebook"]) == {"lr_scaling"} and set(collapsed["lr"].round(6)) == {0.15}
    assert (abs(collapsed["train_loss"] - math.log(10)) < 0.05 * math.log(10)).all()
    ok = df[df["status"] == "ok"]
    assert not (abs(ok["test_loss"] - math.log(10)) <= 0.05 * math.log(10)).any()


def test_the_report_names_the_params_file_without_a_machines_folders(tmp_path):
    repo = Path(report.__file__).resolve().parents[2]
    assert report.shown_path("params/cpu.yaml", tmp_path) == "params/cpu.yaml"  # relative: as given
    assert report.shown_path(repo / "params" / "cpu.yaml", tmp_path) == "params/cpu.yaml"
    assert report.shown_path(tmp_path / "p.yaml", tmp_path) == "p.yaml"
    assert report.shown_path("/elsewhere/x/study.yaml", tmp_path) == "study.yaml"
    assert report.shown_path("", tmp_path) == ""


def test_each_report_links_the_studies_beside_it_and_not_itself(tmp_path):
    for name in ("cpu", "fashion", "notes"):
        (tmp_path / name).mkdir()
    for name in ("cpu", "fashion"):
        (tmp_path / name / "report.html").write_text("<html></html>")
    (tmp_path / "notes" / "readme.txt").write_text("no report here")
    assert report.companions(tmp_path / "fashion") == ["cpu"]
    assert report.companions(tmp_path / "cpu") == ["fashion"]
    assert "href='../cpu/report.html'" in report.companions_html(tmp_path / "fashion")
    assert report.companions_html(tmp_path / "notes") == "<p class='companions'>Other studies beside this one: " \
        "<a href='../cpu/report.html'>cpu</a>, <a href='../fashion/report.html'>fashion</a>.</p>"
    alone = tmp_path / "solo" / "study"
    alone.mkdir(parents=True)
    assert report.companions_html(alone) == ""


def test_the_committed_studies_link_each_other():
    """Every committed study's report links every other committed study beside it, so a study added or
    renamed under docs/results had its siblings' link lines re-made (report.companions_html)."""
    results = Path(__file__).resolve().parents[1] / "docs" / "results"
    studies = sorted(p.name for p in results.iterdir() if (p / "report.html").is_file())
    if len(studies) < 2:
        pytest.skip("docs/results does not hold two committed studies")
    for a in studies:
        text = (results / a / "report.html").read_text()
        for b in studies:
            assert b == a or f"href='../{b}/report.html'" in text, (a, b)


def test_the_committed_untuned_fashion_study_is_what_the_code_computes_and_tests_on_10000_images(tmp_path):
    """docs/results/fashion_untuned/ (the first, untuned Fashion-MNIST study) as a fresh clone has it: the
    findings recompute from the committed runs; every run was tested on Fashion-MNIST's full 10,000 test
    images; the answer table has SGD under both lr rules after 10 epochs and at two loss milestones, each
    with its five seed pairs."""
    committed, copy, df, saved = _recomputed("fashion_untuned", tmp_path)
    table = saved["answer_table"]
    assert {r["dataset"] for r in table} == {"Fashion-MNIST"} and {r["optimizer"] for r in table} == {"sgd"}
    assert [(r["lr_rule"], r["compare_at"], r["at"]) for r in table] == [
        (rule, kind, at) for rule in ("same", "scaled") for kind, at in (("epochs", 10), ("loss", 0.4), ("loss", 0.3))]
    assert all(r["n_seeds"] >= 5 for r in table)
    assert len(df) == 40 and set(df["n_test"]) == {10000} and set(df["dataset"]) == {"fashion_mnist"}
    assert set(df["train_subset"]) == {5000} and set(df["n_train"]) == {4380}  # 500 a class, 62 of them to validation
    for run in layout.run_dirs(copy):
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["n_test"] == 10000, run


def test_the_committed_mnist_tuning_study_settles_every_choice_and_feeds_the_curve_study(tmp_path, monkeypatch):
    """docs/results/cpu_tuning: its tuning recomputes from its runs; every method at every batch size has
    a choice that is interior or bounded by an lr that failed (never at a grid edge), each lr with both
    seeds; and params/cpu.yaml plans each of its runs at exactly that choice."""
    from samlib.study import load_params, plan_cells

    committed, copy, df, saved = _recomputed("cpu_tuning", tmp_path, ("tuning",))
    table = saved["tuning"]
    # a tuning study says what it is, and nothing of comparisons it does not make
    assert saved["headline"] == answer_text.TUNING_ONLY and "Stop rule" not in " ".join(saved["text"])
    assert {(t["sam"], t["batch_size"]) for t in table} == {(s, b) for s in ("none", "sam")
                                                            for b in (32, 64, 128, 256, 512, 1024)}
    for t in table:
        choice = t["choice"]
        assert choice["lr"] is not None and (choice["interior"] or choice["bounded_by_failure"]), t
        assert all(g["seeds"] == 2 for g in t["grid"])
    repo = Path(__file__).resolve().parents[1]
    params = load_params(repo / "params" / "cpu.yaml", repo / "notebooks")
    cells = plan_cells(params, tmp_path / "out")
    chosen = {(t["sam"], t["batch_size"]): t["choice"]["lr"] for t in table}
    planned = {(c.sam, c.batch_size): c.lr for cell in cells for c in cell.configs}
    assert planned == chosen and all(c.lr_tuned for cell in cells for c in cell.configs)
    # the curve study carries the choices it was planned with: study.json, then its findings' tuning
    from samlib.study import runner

    monkeypatch.chdir(repo)  # the params file names the tuning study relative to the repository
    runner._write_plan(params, tmp_path / "out" / "cpu", cells)
    carried = tuning.planned_with(tmp_path / "out" / "cpu")
    assert [{k: v for k, v in t.items() if k != "source"} for t in carried] == table
    assert {t["source"] for t in carried} == {"docs/results/cpu_tuning"}


def _assert_complete_tuned_rows(rows):
    """Every answer row of a committed tuned curve: 5 paired seeds with none missing, Holm's p, the
    "no gap larger than" bound, the detectable effect and the mismatch present, the seeds × test images CI
    around the gap, and a loss row's minima matched within 5 % in training loss."""
    for r in rows:
        assert r["n_seeds"] == 5 and r["n_missing"] == 0, r
        for key in ("holm_p", "upper", "mde", "mismatch"):
            assert r[key] is not None, (key, r)
        assert r["gap_two_way"]["lo"] <= r["gap"]["mean"] <= r["gap_two_way"]["hi"]
        if r["compare_at"] == "loss":
            assert abs(r["mismatch"]) <= 0.05


def test_the_committed_mnist_curve_study_recomputes_and_answers_on_the_tuned_rule(tmp_path):
    """docs/results/cpu: its findings recompute from its runs (answer table, curve, tuning it was
    planned with, remedies); the answer table compares every batch size of the curve with batch 32 on the
    tuned rule, at loss 0.01 (near interpolation) among its milestones, with Holm, the bound, the residual
    mismatch, the detectable effect and a CI over seeds and test images, 5 paired seeds in every row."""
    committed, copy, df, saved = _recomputed("cpu", tmp_path, ("tuning", "curve", "remedies"))
    rows = saved["answer_table"]
    assert {r["lr_rule"] for r in rows} == {"tuned"}
    assert {r["large_batch"] for r in rows} == {64, 128, 256, 512, 1024} and {r["small_batch"] for r in rows} == {32}
    assert 0.01 in {r["at"] for r in rows if r["compare_at"] == "loss"}
    _assert_complete_tuned_rows(rows)
    fits = {(e["method"], e["milestone"]): e["fit"] for e in saved["curve"]}
    sgd = fits[("SGD+momentum", "loss=0.01")]
    assert sgd["lo"] < sgd["b_crit"] < sgd["hi"] and sgd["n"] == 30
    assert {t["source"] for t in saved["tuning"]} == {"docs/results/cpu_tuning"}


def test_the_committed_fashion_tuning_study_settles_every_choice_and_feeds_the_fashion_curve(tmp_path):
    """docs/results/fashion_tuning: its tuning recomputes from its runs; SGD+momentum and SAM at batch 32 to
    2,048 each have a choice that is interior or bounded by an lr that failed, every lr with both seeds;
    params/fashion.yaml plans each of its runs at exactly that choice."""
    from samlib.study import load_params, plan_cells

    committed, copy, df, saved = _recomputed("fashion_tuning", tmp_path, ("tuning",))
    table = saved["tuning"]
    assert {(t["sam"], t["batch_size"]) for t in table} == {(s, b) for s in ("none", "sam")
                                                            for b in (32, 128, 512, 1024, 2048)}
    for t in table:
        choice = t["choice"]
        assert choice["lr"] is not None and (choice["interior"] or choice["bounded_by_failure"]), t
        assert all(g["seeds"] == 2 for g in t["grid"])
    assert set(df["dataset"]) == {"fashion_mnist"} and set(df["n_train"]) == {4380}
    repo = Path(__file__).resolve().parents[1]
    cells = plan_cells(load_params(repo / "params" / "fashion.yaml", repo / "notebooks"), tmp_path / "out")
    chosen = {(t["sam"], t["batch_size"]): t["choice"]["lr"] for t in table}
    assert {(c.sam, c.batch_size): c.lr for cell in cells for c in cell.configs} == chosen


def test_the_committed_fashion_curve_study_recomputes_and_answers_on_the_tuned_rule(tmp_path):
    """docs/results/fashion: its findings recompute from its runs; the answer table compares batch 128 to
    2,048 (2,048 >= a quarter of the 4,380 training images) with batch 32 on the tuned rule, at loss 0.4
    and 0.3 matched within 5 % and after 10 epochs, 5 paired seeds with nothing missing, CIs over seeds
    and Fashion-MNIST's 10,000 test images; the critical batch size of SGD and of SAM is located."""
    committed, copy, df, saved = _recomputed("fashion", tmp_path, ("tuning", "curve", "remedies"))
    rows = saved["answer_table"]
    assert {r["lr_rule"] for r in rows} == {"tuned"} and {r["dataset"] for r in rows} == {"Fashion-MNIST"}
    assert {r["large_batch"] for r in rows} == {128, 512, 1024, 2048} and {r["small_batch"] for r in rows} == {32}
    assert {(r["compare_at"], r["at"]) for r in rows} == {("epochs", 10), ("loss", 0.4), ("loss", 0.3)}
    _assert_complete_tuned_rows(rows)
    assert len(df) == 50 and set(df["n_test"]) == {10000} and set(df["n_train"]) == {4380}
    fits = {(e["method"], e["milestone"]): e["fit"] for e in saved["curve"]}
    for method in ("SGD+momentum", "SGD+momentum+SAM"):
        fit = fits[(method, "loss=0.3")]
        assert fit["bounded"] and fit["lo"] < fit["b_crit"] < fit["hi"] and fit["n"] == 25
    assert {t["source"] for t in saved["tuning"]} == {"docs/results/fashion_tuning"}


#: the remedies studies of issue 22: (tuning study, curve study, data set, largest batch, main tuning study, how
#: many lrs SAM-over-LARS was tried at before its grid was stopped by hand, every one failed: the params say why)
REMEDY_STUDIES = [("remedies_tuning", "remedies_curve", "mnist5k", 1024, "cpu_tuning", 4),
                  ("fashion_remedies_tuning", "fashion_remedies_curve", "fashion_mnist", 2048, "fashion_tuning", 2)]
REMEDY_METHODS = {("momentum", "sam", 32), ("momentum", "looksam", None), ("lars", "none", None), ("lars", "sam", None),
                  ("lamb", "none", None)}  #: (optimizer, sam, m) of the remedies


@pytest.mark.parametrize("study, curve, dataset, largest, main, failed_lrs", REMEDY_STUDIES)
def test_the_committed_remedies_tuning_studies_settle_every_choice_and_feed_their_curves(tmp_path, monkeypatch, study,
                                                                                          curve, dataset, largest, main,
                                                                                          failed_lrs):
    """docs/results/<prefix>remedies_tuning: its tuning recomputes from its runs; each of the five remedies
    at the largest batch has a choice that is interior or bounded by an lr that failed, or (SAM-over-LARS)
    failed at every lr of at least `failed_lrs`, every lr with both seeds; the remedies curve plans each
    settled remedy at exactly that choice, and SGD and SAM at the main tuning study's."""
    from samlib.study import load_params, plan_cells

    committed, copy, df, saved = _recomputed(study, tmp_path, ("tuning",))
    table = saved["tuning"]
    assert {(t["optimizer"], t["sam"], t["m"], t["batch_size"]) for t in table} == {
        (o, s, m, largest) for o, s, m in REMEDY_METHODS}
    for t in table:
        choice = t["choice"]
        assert t["dataset"] == dataset and all(g["seeds"] == 2 for g in t["grid"]), t
        if choice["lr"] is None:  # a method no lr of which worked on both seeds: every lr failed, none is planned
            assert len(t["grid"]) >= failed_lrs and all(g["seeds_out"] > 0 and g["val_loss"] is None for g in t["grid"]), t
            continue
        assert choice["interior"] or choice["bounded_by_failure"], t
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # the curve's params name the tuning studies relative to the repository
    main_choices = tuning.choices_of(repo / "docs" / "results" / main)
    cells = plan_cells(load_params(repo / "params" / f"{curve}.yaml", repo / "notebooks"), tmp_path / "out")
    planned = {(c.optimizer, c.sam, c.m, c.batch_size): c.lr for cell in cells for c in cell.configs}
    for (o, s, m, bs), lr in planned.items():
        own = [t["choice"]["lr"] for t in table if (t["optimizer"], t["sam"], t["m"], t["batch_size"]) == (o, s, m, bs)]
        assert lr == (own[0] if own else main_choices[(dataset, o, s, m, bs)]), (o, s, m, bs)
    tuned = {(t["optimizer"], t["sam"], t["m"]) for t in table if t["choice"]["lr"] is not None}
    assert {(o, s, m) for o, s, m, bs in planned if bs == largest} == tuned | {("momentum", "none", None),
                                                                              ("momentum", "sam", None)}


@pytest.mark.parametrize("study, curve, dataset, largest, main, failed_lrs", REMEDY_STUDIES)
def test_the_committed_remedies_curves_recompute_with_every_method_at_the_largest_batch(tmp_path, study, curve, dataset,
                                                                                        largest, main, failed_lrs):
    """docs/results/<prefix>remedies_curve: its findings recompute from its runs; its remedies table has SGD,
    SAM and every remedy its tuning study settled (of m-SAM, LookSAM, LARS, LAMB, SAM-over-LARS; at least
    four) at the largest batch at every loss milestone and at
    the evaluations milestone, each over 5 paired seeds (missing ones counted), with gradient evaluations,
    test error, the gap to SGD at batch 32 or at the same compute, and the lr its tuning study chose."""
    committed, copy, df, saved = _recomputed(curve, tmp_path, ("tuning", "remedies"))
    rows = saved["remedies"]
    chosen = {(t["optimizer"], t["sam"], t["m"], t["batch_size"]): t["choice"]["lr"] for t in saved["tuning"]}
    assert {t["source"] for t in saved["tuning"]} == {f"docs/results/{main}", f"docs/results/{study}"}
    methods = {(t["optimizer"], t["sam"], t["m"]) for t in saved["tuning"] if t["batch_size"] == largest
               and t["choice"]["lr"] is not None and t["source"] == f"docs/results/{study}"}
    assert methods <= REMEDY_METHODS and len(methods) >= 4
    methods |= {("momentum", "none", None), ("momentum", "sam", None)}
    for milestone in {r["milestone"] for r in rows}:
        at = {(r["optimizer"], r["sam"], r["m"]): r for r in rows if r["milestone"] == milestone and r["batch_size"] == largest}
        assert set(at) == methods, milestone
        for key, r in at.items():
            assert r["n_runs"] == 5 and r["n_seeds"] + r["n_missing"] == 5 and r["lr"] == chosen[(*key, largest)]
            if r["n_seeds"]:
                assert r["test_error"]["n"] == r["n_seeds"] and r["grad_evals"]["mean"] > 0
            if r["n_seeds"] >= 2 and not r["reference"]:
                assert r["gap"]["lo"] <= r["gap"]["mean"] <= r["gap"]["hi"] and r["holm_p"] is not None
    assert {r["kind"] for r in rows} == {"loss", "evals"}
    assert {(r["reference_method"], r["reference_batch"]) for r in rows if r["kind"] == "loss"} == {("SGD+momentum", 32)}
