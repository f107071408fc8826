"""samlib.study.remedies on a synthetic snapshots table written here (no training): SGD+momentum at batch 32
and 1024, SAM, LARS and LAMB at 1024, three seeds each on the tuned lr rule, two loss milestones; every
number checked against one computed here by hand (scipy's t quantiles, Holm's rule written out)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from samlib.rundir import encode_correct
from samlib.study import answer, details, figures, remedies, report, selections

SEEDS = (0, 1, 2)
AT = (0.1, 0.03)  # loss milestones, in the order training reaches them
#: (optimizer, sam, batch size) -> (lr, steps to loss 0.03 per seed, test error there per seed)
ARMS = {
    ("momentum", "none", 32): (0.0316, [900, 960, 930], [0.020, 0.024, 0.022]),
    ("momentum", "none", 1024): (0.316, [120, 130, 125], [0.031, 0.036, 0.030]),
    ("momentum", "sam", 1024): (0.316, [110, 118, 121], [0.027, 0.029, 0.026]),
    ("lars", "none", 1024): (1.0, [100, 105, 140], [0.029, 0.033, 0.035]),
    ("lamb", "none", 1024): (0.01, [90, 95, 99], [0.025, 0.030, 0.031]),
}
MISSED = {("lamb", "none", 1024, 2): "ok",  # finished ok at its cap above loss 0.03: not reached
          ("lars", "none", 1024, 1): "diverged"}  # diverged before loss 0.03


def _row(optimizer, sam, bs, seed, at, lr, steps, error, status="ok", reached=True, **extra):
    return {"notebook": "curve", "run": f"seed={seed}", "optimizer": optimizer, "sam": sam, "m": math.nan,
            "batch_size": bs, "lr": lr, "lr_scaling": "none", "lr_tuned": True, "seed": seed, "dataset": "mnist5k",
            "status": status, "milestone": f"loss={at:g}", "kind": "loss", "at": at, "reached": reached,
            "step": steps if reached else math.nan, "train_loss": at * 0.98 if reached else math.nan,
            "test_error": error if reached else math.nan, "mismatch": 0.02 if reached else math.nan, **extra}


def snapshots_table(with_extras: bool = True) -> pd.DataFrame:
    """The synthetic study: at loss 0.1 every run is at half its steps and its error + 0.01; at 0.03 the
    ARMS numbers, the MISSED runs not reaching it; plus runs the table must leave out."""
    rows = []
    for (opt, sam, bs), (lr, steps, errors) in ARMS.items():
        for seed, s, e in zip(SEEDS, steps, errors):
            rows.append(_row(opt, sam, bs, seed, 0.1, lr, s // 2, e + 0.01))
            status = MISSED.get((opt, sam, bs, seed))
            rows.append(_row(opt, sam, bs, seed, 0.03, lr, s, e, status=status or "ok", reached=status is None))
    if with_extras:
        untuned = _row("momentum", "none", 1024, 0, 0.03, 0.1, 50, 0.5)
        tuning = _row("lars", "none", 1024, 0, 0.03, 3.16, 40, 0.9)
        rows += [{**untuned, "lr_tuned": False}, {**tuning, "notebook": selections.TUNING_NOTEBOOK},
                 {**untuned, "kind": "epochs", "milestone": "epochs=10", "at": 10}]
    return pd.DataFrame(rows)


def _t_ci(values):
    v = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return v.mean(), v.mean() - half, v.mean() + half


def _find(table, method, bs, at=0.03):
    (row,) = [r for r in table if r["method"] == method and r["batch_size"] == bs and r["at"] == at]
    return row


def test_one_row_per_method_batch_and_milestone_of_the_tuned_runs_in_order():
    table = remedies.remedies_table(snapshots_table())
    assert [(r["milestone"], r["method"], r["batch_size"]) for r in table] == [
        (f"loss={at:g}", m, bs) for at in AT for m, bs in
        (("SGD+momentum", 32), ("SGD+momentum", 1024), ("SGD+momentum+SAM", 1024), ("LARS", 1024), ("LAMB", 1024))]
    assert all(set(r) == set(remedies.KEYS) for r in table)
    ref = [r for r in table if r["reference"]]
    assert [(r["method"], r["batch_size"]) for r in ref] == [("SGD+momentum", 32)] * 2
    assert {(r["reference_method"], r["reference_batch"]) for r in table} == {("SGD+momentum", 32)}
    assert {r["dataset"] for r in table} == {"MNIST (mnist5k)"}
    lars = _find(table, "LARS", 1024)
    assert (lars["optimizer"], lars["sam"], lars["m"], lars["lr"]) == ("lars", "none", None, 1.0)
    # the untuned run (lr 0.1, error 0.5) and the tuning notebook's run (error 0.9) are nowhere
    assert _find(table, "SGD+momentum", 1024)["lr"] == 0.316 and _find(table, "SGD+momentum", 1024)["n_runs"] == 3


def test_gradient_evaluations_and_test_error_are_t_cis_over_the_seeds_that_reached():
    table = remedies.remedies_table(snapshots_table())
    for (opt, sam, bs), (lr, steps, errors) in ARMS.items():
        row = _find(table, selections.method_label(opt, sam), bs)
        kept = [i for i, s in enumerate(SEEDS) if (opt, sam, bs, s) not in MISSED]
        per_step = 2.0 if sam == "sam" else 1.0
        assert row["grad_evals_per_step"] == per_step
        for key, values in (("grad_evals", [per_step * steps[i] for i in kept]), ("steps", [steps[i] for i in kept]),
                            ("test_error", [errors[i] for i in kept])):
            mean, lo, hi = _t_ci(values)
            assert (row[key]["mean"], row[key]["lo"], row[key]["hi"]) == pytest.approx((mean, lo, hi), rel=1e-12)
            assert row[key]["n"] == len(kept)
        assert (row["n_seeds"], row["n_missing"], row["n_runs"]) == (len(kept), 3 - len(kept), 3)
    sam = _find(table, "SGD+momentum+SAM", 1024)
    assert sam["grad_evals"]["mean"] == pytest.approx(2 * (110 + 118 + 121) / 3)  # twice SAM's steps


def test_missing_runs_are_counted_never_averaged():
    table = remedies.remedies_table(snapshots_table())
    lamb, lars = _find(table, "LAMB", 1024), _find(table, "LARS", 1024)
    assert (lamb["n_seeds"], lamb["n_missing"]) == (2, 1) and (lars["n_seeds"], lars["n_missing"]) == (2, 1)
    assert lamb["test_error"]["mean"] == pytest.approx((0.025 + 0.030) / 2)  # seed 2 (not reached) left out
    assert lars["grad_evals"]["mean"] == pytest.approx((100 + 140) / 2)  # seed 1 (diverged) left out
    assert lamb["gap"]["n"] == 2 and lars["gap"]["n"] == 2  # and out of the pairs
    # at loss 0.1 every run reached: nothing missing
    assert all(r["n_missing"] == 0 and r["n_seeds"] == 3 for r in remedies.remedies_table(snapshots_table())
               if r["at"] == 0.1)
    # a method none of whose runs reached: a row of counts with no numbers
    snaps = snapshots_table()
    snaps.loc[(snaps["optimizer"] == "lamb") & (snaps["at"] == 0.03), ["reached", "status"]] = [False, "failed"]
    lamb = _find(remedies.remedies_table(snaps), "LAMB", 1024)
    assert (lamb["n_seeds"], lamb["n_missing"], lamb["test_error"]["mean"], lamb["gap"]["mean"]) == (0, 3, None, None)


def test_gaps_to_the_reference_are_paired_by_seed_with_holm_adjusted_p():
    table = remedies.remedies_table(snapshots_table())
    ref_err = dict(zip(SEEDS, ARMS[("momentum", "none", 32)][2]))
    expected_p = {}
    for at in AT:
        for (opt, sam, bs), (_, _, errors) in ARMS.items():
            row = _find(table, selections.method_label(opt, sam), bs, at)
            if (opt, bs) == ("momentum", 32):
                assert row["reference"] and row["gap"] is None and row["p"] is None and row["holm_p"] is None
                continue
            shift = 0.01 if at == 0.1 else 0.0  # both sides shift alike at loss 0.1
            seeds = [s for s in SEEDS if at == 0.1 or (opt, sam, bs, s) not in MISSED]
            diffs = [errors[s] + shift - (ref_err[s] + shift) for s in seeds]
            mean, lo, hi = _t_ci(diffs)
            assert (row["gap"]["mean"], row["gap"]["lo"], row["gap"]["hi"]) == pytest.approx((mean, lo, hi), rel=1e-9)
            p = stats.ttest_rel([errors[s] for s in seeds], [ref_err[s] for s in seeds]).pvalue
            assert row["p"] == pytest.approx(p, rel=1e-9)
            expected_p[(opt, sam, bs, at)] = p
            assert row["mismatch"] == pytest.approx(0.0, abs=1e-12)  # same training loss as the reference
            assert row["snapshot_mismatch"] == pytest.approx(0.02) and row["gap_two_way"] is None
    # Holm by hand over the 8 tests of the data set: sort ascending, (m - i)·p, running maximum, cap 1
    order = sorted(expected_p, key=expected_p.get)
    running, holm = 0.0, {}
    for i, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * expected_p[key]))
        holm[key] = running
    for (opt, sam, bs, at), adjusted in holm.items():
        assert _find(table, selections.method_label(opt, sam), bs, at)["holm_p"] == pytest.approx(adjusted, rel=1e-9)
    assert len(holm) == 8 and max(holm.values()) <= 1.0


def test_the_two_way_gap_is_the_answers_where_predictions_were_recorded():
    snaps = snapshots_table(with_extras=False)
    rng = np.random.default_rng(0)
    n = 40
    snaps["n_test"] = n
    snaps["test_correct"] = [encode_correct(rng.random(n) > e) for e in snaps["test_error"].fillna(0.5)]
    table = remedies.remedies_table(snaps)
    row = _find(table, "LARS", 1024)
    at = snaps[(snaps["at"] == 0.03) & selections.comparable_snapshots(snaps)]
    lars = at[at["optimizer"] == "lars"]
    ref = at[(at["optimizer"] == "momentum") & (at["sam"] == "none") & (at["batch_size"] == 32)]
    assert row["gap_two_way"] == answer.two_way_gap(lars, ref) and row["gap_two_way"]["n_seeds"] == 2


def test_looksam_and_m_sam_cost_what_they_evaluate():
    snaps = snapshots_table(with_extras=False)
    extra = [_row("momentum", "looksam", 1024, s, 0.03, 0.1, 100, 0.03, looksam_k=4) for s in SEEDS]
    extra += [{**_row("momentum", "sam", 1024, s, 0.03, 0.1, 100, 0.03), "m": 32} for s in SEEDS]
    table = remedies.remedies_table(pd.concat([snaps, pd.DataFrame(extra)], ignore_index=True))
    look, msam = _find(table, "SGD+momentum+LookSAM", 1024), _find(table, "SGD+momentum+SAM (m=32)", 1024)
    assert look["grad_evals_per_step"] == 1.25 and look["grad_evals"]["mean"] == pytest.approx(125.0)
    assert msam["grad_evals_per_step"] == 2.0 and msam["grad_evals"]["mean"] == pytest.approx(200.0)


def test_no_reference_no_tuned_runs_no_table():
    assert remedies.remedies_table(None) == [] and remedies.remedies_table(pd.DataFrame()) == []
    snaps = snapshots_table(with_extras=False)
    assert remedies.remedies_table(snaps.assign(lr_tuned=False)) == []  # same lr rule: not a remedies study
    no_ref = remedies.remedies_table(snaps[snaps["batch_size"] == 1024])  # SGD at 1024 is then the smallest
    assert {r["reference_batch"] for r in no_ref} == {1024}
    no_sgd = remedies.remedies_table(snaps[snaps["optimizer"] != "momentum"])
    assert no_sgd and all(r["gap"] is None and r["reference_method"] is None for r in no_sgd)
    only_ref = remedies.remedies_table(snaps[(snaps["optimizer"] == "momentum") & (snaps["batch_size"] == 32)
                                             & (snaps["sam"] == "none")])
    assert only_ref and not remedies.has_remedies(only_ref) and remedies.remedies_lines(only_ref) == []


def test_lars_and_lamb_are_families_of_their_own():
    snaps = snapshots_table(with_extras=False)
    assert set(selections.in_family(snaps, "sgd")["optimizer"]) == {"momentum"}
    assert set(selections.in_family(snaps, "LARS")["optimizer"]) == {"lars"}
    assert set(selections.in_family(snaps, "lamb")["optimizer"]) == {"lamb"}
    # the answer table's SGD rows see SGD+momentum and SAM alone: LARS and LAMB are not pooled into them
    rows = [r for r in answer.answer_table(snapshots_table()) if r["optimizer"] == "sgd" and r["at"] == 0.03]
    (row,) = rows
    assert row["test_error"]["lb"] == pytest.approx(np.mean(ARMS[("momentum", "none", 1024)][2]))


def test_details_report_and_figure_show_the_remedies():
    snaps = snapshots_table()
    table = remedies.remedies_table(snaps)
    (line,) = remedies.remedies_lines(table)
    assert line in details.findings_text({"remedies": table})
    assert line.startswith("Remedies at batch 1024 on MNIST (mnist5k), to loss=0.03")
    lamb = _find(table, "LAMB", 1024)
    assert "LAMB (lr 0.01): 92.5 (95 % CI 60.7 to 124) gradient evaluations" in line and "[1 of 3 runs missing]" in line
    assert f"Holm p {lamb['holm_p']:.2g}" in line and "against SGD+momentum at batch 32" in line
    assert details.findings_text({"remedies": []}) == details.findings_text({})  # nothing added without it
    html = remedies.remedies_html(table)
    assert html.count("<tr>") == len(table) + 1 and "SGD+momentum (reference)" in html
    assert remedies.remedies_html([]) == ""
    assert "fig14_remedies" in figures.FIGURES and figures.REMEDIES in figures.SNAPSHOT_FIGURES
    fig = figures.figure(figures.REMEDIES, snaps, snapshots=snaps)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.get_legend().get_texts()) == 5  # four methods and the reference
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "LARS, batch 1024 (1 of 3 missed it)" in labels and "SGD+momentum, batch 1024" in labels
    lamb_missed = (snaps["optimizer"] == "lamb") & (snaps["at"] == 0.03)  # every LAMB run misses 0.03
    none = snaps.assign(reached=~lamb_missed & snaps["reached"], step=snaps["step"].mask(lamb_missed),
                        test_error=snaps["test_error"].mask(lamb_missed), train_loss=snaps["train_loss"].mask(lamb_missed),
                        mismatch=snaps["mismatch"].mask(lamb_missed))
    ax = figures.figure(figures.REMEDIES, none, snapshots=none).axes[0]
    assert len(ax.get_legend().get_texts()) == 4 and [t.get_text() for t in ax.texts] == [
        "not shown: LAMB, batch 1024 (3 of 3 missed it)"]
    empty = figures.figure(figures.REMEDIES, snaps, snapshots=snaps.assign(lr_tuned=False))
    assert empty.axes[0].texts  # the placeholder's words
    assert report.remedies_html is remedies.remedies_html


REMEDIES = {("momentum", "sam", 32), ("momentum", "looksam", None), ("lars", "none", None), ("lars", "sam", None),
            ("lamb", "none", None)}  #: (optimizer, sam, m) of the remedies the tuning studies tune


@pytest.mark.parametrize("prefix, dataset, largest, main_tuning, evals, tuned", [
    ("", "mnist5k", 1024, "cpu_tuning", 220, REMEDIES - {("lars", "sam", None)}),  # SAM-over-LARS: every lr failed
    ("fashion_", "fashion_mnist", 2048, "fashion_tuning", 240, REMEDIES - {("lars", "sam", None)})])  # collapsed
def test_the_remedies_params_pairs_plan_every_method_at_its_tuned_lr(tmp_path, prefix, dataset, largest, main_tuning,
                                                                     evals, tuned):
    """params/<prefix>remedies_tuning.yaml tunes the remedies at the largest batch size (no longer
    SAM-over-LARS, whose every lr tried failed); params/<prefix>remedies_curve.yaml plans them there, and SGD+momentum and SAM there and SGD+momentum at
    batch 32, each at the lr its tuning study chose: the remedies' from the remedies tuning, SGD's and SAM's
    from the main tuning (here findings.json files written in the test, with an lr per method)."""
    import json

    import yaml

    from samlib.study import load_params, plan_cells

    repo = Path(__file__).resolve().parents[1]
    tuning_cells = plan_cells(load_params(repo / "params" / f"{prefix}remedies_tuning.yaml", repo / "notebooks"), tmp_path)
    planned = {(c.optimizer, c.sam, c.m, c.batch_size) for cell in tuning_cells for c in cell.configs}
    assert planned == {(o, s, m, largest) for o, s, m in tuned}
    assert all(c.dataset == dataset for cell in tuning_cells for c in cell.configs)
    main = {("momentum", "none", None, 32): 0.0316, ("momentum", "none", None, largest): 0.316,
            ("momentum", "sam", None, largest): 0.1}
    own = {key: 0.001 * (i + 1) for i, key in enumerate(sorted(planned, key=str))}

    def tuning_study(name, lrs):
        entries = [{"dataset": dataset, "optimizer": o, "sam": s, "m": m, "batch_size": b, "grid": [],
                    "choice": {"lr": lr, "val_loss": 0.1, "interior": True, "bounded_by_failure": False,
                               "at_edge": False}} for (o, s, m, b), lr in lrs.items()]
        (tmp_path / name).mkdir()
        (tmp_path / name / "findings.json").write_text(json.dumps({"tuning": entries}))
        return str(tmp_path / name)

    folders = {f"docs/results/{main_tuning}": tuning_study("main", main),
               f"docs/results/{prefix}remedies_tuning": tuning_study("remedies", own)}
    curve = yaml.safe_load((repo / "params" / f"{prefix}remedies_curve.yaml").read_text())
    for spec in curve["notebooks"].values():
        named = [spec["tuned_lr"]] if isinstance(spec["tuned_lr"], str) else spec["tuned_lr"]
        assert set(named) <= set(folders)
        spec["tuned_lr"] = [folders[f] for f in named]
    (tmp_path / "curve.yaml").write_text(yaml.safe_dump(curve, sort_keys=False))
    cells = plan_cells(load_params(tmp_path / "curve.yaml", repo / "notebooks"), tmp_path / "out")
    got = {(c.optimizer, c.sam, c.m, c.batch_size): c.lr for cell in cells for c in cell.configs}
    assert got == {**main, **own}
    configs = [c for cell in cells for c in cell.configs]
    assert all(c.lr_tuned and c.record_predictions and c.evals_milestones == (evals,) for c in configs)
    assert {c.seed for c in configs} == {0, 1, 2, 3, 4} and len(configs) == 5 * len(got)


def test_the_report_shows_the_remedies_table_only_when_there_is_one(tmp_path):
    import json

    table = remedies.remedies_table(snapshots_table())
    json.dumps(table)  # findings.json holds it as it is
    study = tmp_path / "study"
    study.mkdir()

    def body(found):
        rep = report.Report(study, pd.DataFrame(), {}, found, [], study / "report.html")
        return report._html_body(rep)

    with_table = body({"remedies": table})
    assert "<h2>Remedies at matched cost (Fig. 14)</h2>" in with_table and "table class='answer remedies'" in with_table
    assert with_table.index("Remedies at matched cost") < with_table.index("<h2>Details</h2>")
    assert "Remedies" not in body({"remedies": []}) and "Remedies" not in body({})


#: at the same 500 gradient evaluations at batch 1024 (SGD's 500 steps, SAM's 250): test error per seed
AT_EVALS = {("momentum", "none"): [0.028, 0.030, 0.029], ("momentum", "sam"): [0.024, 0.027, 0.025],
            ("lars", "none"): [0.031, 0.029, 0.034]}


def _with_evals_and_seconds() -> pd.DataFrame:
    snaps = snapshots_table(with_extras=False)
    seconds = {"none": 0.05, "sam": 0.09}  # seconds a step by SAM mode, per seed +1 %
    snaps["step_seconds"] = [seconds[s] * (1 + 0.01 * seed) for s, seed in zip(snaps["sam"], snaps["seed"])]
    extra = []
    for (opt, sam), errors in AT_EVALS.items():
        for seed, e in zip(SEEDS, errors):
            row = _row(opt, sam, 1024, seed, 0.0, ARMS[(opt, sam, 1024)][0], 250 if sam == "sam" else 500, e)
            extra.append({**row, "kind": "evals", "milestone": "evals=500", "at": 500.0, "train_loss": 0.02,
                          "mismatch": math.nan, "step_seconds": seconds[sam] * (1 + 0.01 * seed)})
    return pd.concat([snaps, pd.DataFrame(extra)], ignore_index=True)


def test_at_the_same_gradient_evaluations_each_method_is_paired_with_sgd_at_its_own_batch():
    table = remedies.remedies_table(_with_evals_and_seconds())
    evals = [r for r in table if r["kind"] == "evals"]
    assert [(r["milestone"], r["method"], r["batch_size"]) for r in evals] == [
        ("evals=500", m, 1024) for m in ("SGD+momentum", "SGD+momentum+SAM", "LARS")]
    assert table[-3:] == evals  # after the loss milestones
    sgd, sam, lars = evals
    assert sgd["reference"] and sgd["gap"] is None and (sgd["reference_batch"], sam["reference_batch"]) == (1024, 1024)
    assert sam["grad_evals"]["mean"] == pytest.approx(500.0) and sam["steps"]["mean"] == pytest.approx(250.0)
    for row, key in ((sam, ("momentum", "sam")), (lars, ("lars", "none"))):
        diffs = np.subtract(AT_EVALS[key], AT_EVALS[("momentum", "none")])
        mean, lo, hi = _t_ci(diffs)
        assert (row["gap"]["mean"], row["gap"]["lo"], row["gap"]["hi"]) == pytest.approx((mean, lo, hi), rel=1e-9)
        assert row["p"] == pytest.approx(stats.ttest_rel(AT_EVALS[key], AT_EVALS[("momentum", "none")]).pvalue)
    # the loss rows keep their reference (SGD+momentum at batch 32) and Holm runs over all 10 tests
    assert {r["reference_batch"] for r in table if r["kind"] == "loss"} == {32}
    ps = [r["p"] for r in table if r["p"] is not None]
    assert len(ps) == 10
    order = np.argsort(ps)
    running, holm = 0.0, {}
    for i, j in enumerate(order):
        running = max(running, min(1.0, (len(ps) - i) * ps[j]))
        holm[j] = running
    assert [r["holm_p"] for r in table if r["p"] is not None] == pytest.approx([holm[j] for j in range(len(ps))])
    (line,) = [x for x in remedies.remedies_lines(table) if x.startswith("At the same compute")]
    assert "500 gradient evaluations, batch 1024" in line and "LARS" in line


def test_training_seconds_to_a_milestone_are_steps_times_seconds_a_step():
    table = remedies.remedies_table(_with_evals_and_seconds())
    for (opt, sam, bs), (_, steps, _) in ARMS.items():
        row = _find(table, selections.method_label(opt, sam), bs)
        kept = [i for i, s in enumerate(SEEDS) if (opt, sam, bs, s) not in MISSED]
        per_step = {"none": 0.05, "sam": 0.09}[sam]
        mean, lo, hi = _t_ci([steps[i] * per_step * (1 + 0.01 * SEEDS[i]) for i in kept])
        assert (row["seconds"]["mean"], row["seconds"]["lo"], row["seconds"]["hi"]) == pytest.approx((mean, lo, hi))
    assert remedies.remedies_table(snapshots_table())[0]["seconds"]["mean"] is None  # not recorded: no number
    assert "training seconds" in remedies.remedies_html(table)


def test_the_readmes_remedies_rows_carry_the_tables_numbers_at_the_largest_batch_and_lowest_loss():
    """remedies_rows_markdown: the reference row, then each method at batch 1024 at loss 0.03, with the
    test error (percent, t CI over the seeds that reached) and the gap written out from ARMS here."""
    text = remedies.remedies_rows_markdown(remedies.remedies_table(snapshots_table()))
    lines = text.splitlines()
    assert "gradient evaluations to loss 0.03" in lines[0] and "gap to SGD+momentum at batch 32" in lines[0]
    body = [line.split(" | ") for line in lines[2:]]
    assert [row[1] for row in body] == ["SGD+momentum, batch 32", "SGD+momentum, batch 1024",
                                       "SGD+momentum+SAM, batch 1024", "LARS, batch 1024", "LAMB, batch 1024"]
    assert body[0][5] == "reference"
    mean, lo, hi = _t_ci([0.027, 0.029, 0.026])  # SAM's test errors at 0.03
    assert body[2][4] == f"{100 * mean:.2f} ({100 * lo:.2f}–{100 * hi:.2f})"
    assert body[2][3].startswith(f"{2 * (110 + 118 + 121) / 3:.3g} (")  # twice its steps, as evaluations
    gap = np.mean([0.027 - 0.020, 0.029 - 0.024, 0.026 - 0.022])
    assert body[2][5].startswith(f"+{100 * gap:.2g} (")
    assert all(row[6] == "–" and row[7] == "– |" for row in body)  # no evaluations milestone in this table
    mean, lo, hi = _t_ci([100, 140])  # LARS: seed 1 diverged before 0.03 (MISSED), counted, not averaged
    assert body[3][3] == f"{mean:.3g} ({lo:.3g}–{hi:.3g}); 1 of 3 missed it"
    assert body[1][3].endswith(")") and body[4][3].endswith("; 1 of 3 missed it")
