"""The answer table (`samlib.study.answer`) from a snapshots table made by hand here (3 seeds):
every mean, gap, SAM effect, closure and detectable half-width worked out by hand; a run that missed
its milestone and a collapsed one are left out and counted; the batch-32 runs (the base batch size)
serve both lr rules. Also: a run folder's snapshot rows (`tables.snapshot_records`) and the collapse
rule (`rundir.is_collapsed`, `tables.run_status`)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from samlib import io
from samlib.rundir import is_collapsed
from samlib.study import answer, answer_text, selections, tables

T2 = stats.t.ppf(0.975, 2)  # 3 pairs
T1 = stats.t.ppf(0.975, 1)  # 2 pairs


def snap(bs, seed, err, *, rule="linear", sam="none", m=None, notebook=None, milestone="loss=0.1", reached=True,
         status="ok", lam=None, optimizer="momentum", train_loss=0.09, grad=0.5, step=100):
    kind, at = milestone.split("=")
    return {"notebook": notebook or ("baseline" if sam == "none" else "sam_sgd"), "run": f"seed={seed}",
            "optimizer": optimizer, "sam": sam, "m": m, "batch_size": bs, "base_batch_size": 32, "lr_scaling": rule,
            "seed": seed, "dataset": "mnist5k", "status": status, "milestone": milestone, "kind": kind,
            "at": float(at), "reached": reached, "test_error": err if reached else math.nan,
            "test_loss": 10 * err if reached else math.nan, "train_loss": train_loss if reached else math.nan,
            "grad_norm": grad if reached else math.nan, "lambda_max": lam if reached else math.nan,
            "keskar_1e-03": 2 * lam if reached and lam is not None else math.nan, "step": step if reached else math.nan}


SB = [0.030, 0.032, 0.034]  # SGD at batch 32 (the base batch size: both rules)
SB_SAM = [0.029, 0.031, 0.033]
LB = [0.040, 0.045, 0.047]  # scaled lr, batch 1000
LB_SAM = [0.042, 0.046, 0.050]
LB_SAME = [0.050, 0.054, None]  # same lr, batch 1000: seed 2 never reached loss 0.1
LB_SAME_SAM = [0.060, 0.053, 0.055]  # seed 0 collapsed


def table():
    rows = []
    for s in range(3):
        rows += [snap(32, s, SB[s], lam=6.0, train_loss=0.095, grad=0.2, step=500),
                 snap(32, s, SB_SAM[s], sam="sam", lam=4.0),
                 snap(1000, s, LB[s], lam=3.0, train_loss=0.098, grad=0.9, step=40),
                 snap(1000, s, LB_SAM[s], sam="sam", lam=2.0),
                 snap(1000, s, LB_SAME[s] or 0.0, rule="none", reached=LB_SAME[s] is not None, lam=5.0),
                 snap(1000, s, LB_SAME_SAM[s], rule="none", sam="sam", status="collapsed" if s == 0 else "ok", lam=7.0),
                 # neither m-SAM nor the lr sweep nor another data set enters the rows
                 snap(1000, s, 0.9, sam="sam", m=128, lam=1.0),
                 snap(1000, s, 0.9, notebook="lr_scaling", lam=1.0),
                 # after 5 epochs: no gap at all (the same error at both batch sizes)
                 snap(32, s, 0.05, milestone="epochs=5", lam=1.0), snap(1000, s, 0.05, milestone="epochs=5", lam=1.0),
                 snap(1000, s, 0.04, milestone="epochs=5", sam="sam", lam=1.0)]
    rows.append(snap(64, 0, 0.1, optimizer="adam"))  # Adam at one batch size only: no Adam rows
    return pd.DataFrame(rows)


def _row(t, rule, kind):
    found = [r for r in t if r["lr_rule"] == rule and r["compare_at"] == kind]
    assert len(found) == 1
    return found[0]


def _ci(diffs, t):
    d = np.asarray(diffs)
    half = t * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half, half


def test_the_rows_and_their_order():
    t = answer.answer_table(table())
    assert [(r["dataset"], r["optimizer"], r["lr_rule"], r["compare_at"], r["at"]) for r in t] == [
        ("MNIST (mnist5k)", "sgd", "same", "epochs", 5), ("MNIST (mnist5k)", "sgd", "same", "loss", 0.1),
        ("MNIST (mnist5k)", "sgd", "scaled", "epochs", 5), ("MNIST (mnist5k)", "sgd", "scaled", "loss", 0.1)]
    assert all(list(r) == answer.KEYS for r in t)
    assert {(r["small_batch"], r["large_batch"]) for r in t} == {(32, 1000)}
    assert answer.answer_table(pd.DataFrame()) == [] and answer.answer_table(None) == []


def test_scaled_lr_at_the_same_loss_by_hand():
    r = _row(answer.answer_table(table()), "scaled", "loss")
    assert r["n_seeds"] == 3 and r["n_missing"] == 0
    assert r["test_error"] == pytest.approx({"sb": 0.032, "lb": 0.044, "lb_sam": 0.046, "sb_sam": 0.031})
    assert r["test_loss"] == pytest.approx({"sb": 0.32, "lb": 0.44, "lb_sam": 0.46, "sb_sam": 0.31})
    assert r["lambda_max"] == {"sb": 6.0, "lb": 3.0, "lb_sam": 2.0, "sb_sam": 4.0}
    assert r["keskar"] == {"sb": 12.0, "lb": 6.0, "lb_sam": 4.0, "sb_sam": 8.0} and r["which_keskar"] == "keskar_1e-03"
    assert r["steps"] == {"sb": 500, "lb": 40, "lb_sam": 100, "sb_sam": 100}
    assert r["train_loss"]["lb"] == pytest.approx(0.098) and r["grad_norm"]["lb"] == pytest.approx(0.9)
    # gap: LB - SB per seed = 0.010, 0.013, 0.013: mean 0.012, sd sqrt(3e-6), half t * 0.001
    mean, lo, hi, half = _ci([0.010, 0.013, 0.013], T2)
    assert mean == pytest.approx(0.012) and half == pytest.approx(T2 * 0.001)
    assert (r["gap"]["mean"], r["gap"]["lo"], r["gap"]["hi"]) == pytest.approx((mean, lo, hi))
    assert r["upper"] == pytest.approx(hi)  # "no gap larger than" the CI's upper limit
    # t = 0.012 / 0.001 = 12 on 2 df: p = 0.00687 (tables); at 80 % power (t_.975,2 + t_.8,2)·sd/√3
    assert r["p"] == pytest.approx(0.0068729, rel=1e-4)
    assert r["mde"] == pytest.approx((4.302653 + 1.060660) * math.sqrt(3e-6) / math.sqrt(3), rel=1e-5)
    # Holm over the table's three tests (p 0.00687, 0.0303, 1.0): the smallest times 3
    assert r["holm_p"] == pytest.approx(3 * 0.0068729, rel=1e-4)
    assert r["mismatch"] == pytest.approx(math.log(0.098 / 0.095))  # the LB minima 3 % higher in loss
    # SAM effect: LB+SAM - LB = 0.002, 0.001, 0.003: mean 0.002, sd 0.001
    mean, lo, hi, _ = _ci([0.002, 0.001, 0.003], T2)
    assert (r["sam_effect"]["mean"], r["sam_effect"]["lo"], r["sam_effect"]["hi"]) == pytest.approx((mean, lo, hi))
    # the gap is significant but SAM's effect is not (its CI holds 0): no closure, a ratio over noise
    assert r["gap"]["lo"] > 0 and lo < 0 and r["closure"] is None
    assert r["seed_claims"] == {"large_batch_worse": True, "sam_worse": True, "sam_sharper": False,
                                "reproduces": True}


def test_same_lr_leaves_out_a_run_that_missed_its_milestone_and_a_collapsed_one():
    r = _row(answer.answer_table(table()), "same", "loss")
    # batch 32 (the base batch size) is the same runs as under the scaled rule
    assert r["test_error"]["sb"] == pytest.approx(0.032) and r["test_error"]["sb_sam"] == pytest.approx(0.031)
    assert r["n_missing"] == 2  # seed 2's LB run did not reach loss 0.1; seed 0's LB+SAM run collapsed
    assert r["test_error"]["lb"] == pytest.approx(0.052) and r["test_error"]["lb_sam"] == pytest.approx(0.054)
    # gap over seeds 0, 1: 0.020, 0.022
    mean, lo, hi, half = _ci([0.020, 0.022], T1)
    assert r["n_seeds"] == 2
    assert (r["gap"]["mean"], r["gap"]["lo"], r["gap"]["hi"]) == pytest.approx((mean, lo, hi))
    assert r["upper"] == pytest.approx(hi) and half == pytest.approx(T1 * 0.001)
    # t = 0.021 / 0.001 = 21 on 1 df: p = 0.0303; Holm's second smallest of three, times 2: 0.0606
    assert r["p"] == pytest.approx(0.0302923, rel=1e-4) and r["holm_p"] == pytest.approx(2 * 0.0302923, rel=1e-4)
    # SAM effect: only seed 1 has both LB runs: one pair, no interval
    assert r["sam_effect"]["mean"] == pytest.approx(0.053 - 0.054)
    assert r["sam_effect"]["lo"] is None and r["sam_effect"]["hi"] is None
    assert r["lambda_max"]["lb"] == 5.0 and r["lambda_max"]["lb_sam"] == 7.0  # the collapsed run's 7.0 left out too
    # its CI excludes 0, but not after Holm's correction: the large batch is not called worse here
    assert r["seed_claims"] == {"large_batch_worse": False, "sam_worse": False, "sam_sharper": True,
                                "reproduces": False}


def test_closure_where_gap_and_sam_effect_are_both_real_has_a_fieller_interval():
    rows = []
    for s, (sb, lb, lb_sam) in enumerate([(0.030, 0.050, 0.040), (0.031, 0.052, 0.041), (0.032, 0.054, 0.043)]):
        rows += [snap(32, s, sb), snap(1000, s, lb), snap(1000, s, lb_sam, sam="sam")]
    r = answer.answer_table(pd.DataFrame(rows))[0]
    # per seed: LB − LB+SAM = 0.010, 0.011, 0.011 over LB − SB = 0.020, 0.021, 0.022
    assert r["closure"]["estimate"] == pytest.approx((0.032 / 3) / 0.021)
    num, den = np.array([0.010, 0.011, 0.011]), np.array([0.020, 0.021, 0.022])
    cov = np.cov(num, den, ddof=1) / 3
    for theta in (r["closure"]["lo"], r["closure"]["hi"]):  # Fieller: (a − θb)² = t²(v_a − 2θc + θ²v_b)
        lhs = (num.mean() - theta * den.mean()) ** 2
        assert lhs == pytest.approx(T2**2 * (cov[0, 0] - 2 * theta * cov[0, 1] + theta**2 * cov[1, 1]))


def test_no_gap_gives_no_closure_and_says_how_large_a_gap_could_hide():
    r = _row(answer.answer_table(table()), "scaled", "epochs")
    assert r["gap"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0} and r["upper"] == 0.0 and r["p"] == 1.0
    assert r["closure"] is None and r["seed_claims"]["reproduces"] is False
    assert r["sam_effect"]["mean"] == pytest.approx(-0.01)


def test_lr_rules_of_a_run():
    rules = selections.lr_rules_of
    assert rules({"lr_scaling": "none", "batch_size": 1000, "base_batch_size": 32}) == ("same",)
    assert rules({"lr_scaling": "sqrt", "batch_size": 1000, "base_batch_size": 32}) == ("scaled",)
    assert rules({"lr_scaling": "linear", "batch_size": 32, "base_batch_size": 32}) == ("same", "scaled")
    assert rules({"lr_scaling": "none", "batch_size": 32.0, "base_batch_size": 32.0}) == ("same", "scaled")
    assert selections.dataset_label("fashion_mnist") == "Fashion-MNIST"
    assert selections.dataset_label("mnist5k") == "MNIST (mnist5k)"


def test_snapshot_records_of_a_run_folder(tmp_path):
    run = tmp_path / "runs" / "baseline" / "64" / "seed=0"
    io.write_json(run / "config.json", {"dataset": "mnist5k", "batch_size": 64, "seed": 0, "optimizer": "sgd",
                                        "lr": 0.1, "loss_milestones": [0.1, 0.03], "epoch_milestones": [2],
                                        "target_loss": None, "epochs": 10, "verbose": 0})
    snapshot = {"milestone": "loss=0.1", "kind": "loss", "at": 0.1, "step": 120, "epoch": 1.92, "train_loss": 0.09,
                "train_accuracy": 0.97, "val_loss": 0.12, "val_accuracy": 0.96, "test_loss": 0.13,
                "test_accuracy": 0.955, "weight_norm": 10.0, "subset_loss": 0.091, "grad_norm": 0.4,
                "lambda_max": 5.5, "keskar_1e-03": 3.0, "sharpness_settings": {"subset": 1000}}
    io.write_json(run / "metrics.json", {"status": "ok", "train_loss": 0.02, "train_accuracy": 0.99,
                                         "snapshots": [snapshot, {**snapshot, "milestone": "epochs=2", "kind": "epochs",
                                                                  "at": 2, "step": 125, "epoch": 2.0}],
                                         "milestones_missing": ["loss=0.03"]})
    rows = tables.snapshot_records(run, study_dir=tmp_path)
    assert [(r["milestone"], r["kind"], r["at"], r["reached"]) for r in rows] == [
        ("loss=0.1", "loss", 0.1, True), ("epochs=2", "epochs", 2.0, True), ("loss=0.03", "loss", 0.03, False)]
    first = rows[0]
    assert {k: first[k] for k in ("notebook", "run", "batch_size", "seed", "dataset", "status", "run_dir")} == {
        "notebook": "baseline", "run": "seed=0", "batch_size": 64, "seed": 0, "dataset": "mnist5k", "status": "ok",
        "run_dir": "runs/baseline/64/seed=0"}
    assert first["test_error"] == pytest.approx(0.045) and first["train_error"] == pytest.approx(0.03)
    assert (first["step"], first["epoch"], first["lambda_max"], first["keskar_1e-03"]) == (120, 1.92, 5.5, 3.0)
    assert "sharpness_settings" not in first
    assert all(math.isnan(rows[2][k]) for k in ("test_loss", "test_error", "step", "grad_norm"))
    # a planned run never written: every milestone of its config, none reached
    planned = tables.snapshot_records(tmp_path / "runs" / "baseline" / "64" / "seed=1", config={
        "dataset": "mnist5k", "batch_size": 64, "seed": 1, "loss_milestones": [0.1], "epochs": 10})
    assert [(r["milestone"], r["reached"], r["status"]) for r in planned] == [("loss=0.1", False, "missing")]


def test_collapse_is_one_rule_and_a_collapsed_run_is_never_compared(tmp_path):
    ln10 = math.log(10)
    assert is_collapsed(ln10 * 1.04, 0.5) and is_collapsed(ln10 * 0.96, 0.5) and not is_collapsed(ln10 * 0.94, 0.5)
    assert is_collapsed(0.1, 0.15) and not is_collapsed(0.1, 0.151)  # accuracy <= 1.5 / K
    assert is_collapsed(math.log(2), 0.9, num_classes=2) and not is_collapsed(math.log(2), 0.9)
    assert not is_collapsed(None, None) and not is_collapsed(math.nan, 0.9)
    run = tmp_path / "runs" / "baseline" / "32" / "seed=0"
    io.write_json(run / "metrics.json", {"status": "ok", "train_loss": 2.30, "train_accuracy": 0.11})
    row = tables.run_record(run)
    assert row["status"] == "collapsed"
    df = pd.DataFrame([{**row, "converged": True}])
    assert not selections.comparable(df).any() and len(selections.not_compared(df)) == 1
    io.update_json(run / "metrics.json", steps=10)  # a smoke-test run of a few steps: not yet a collapse
    assert tables.run_record(run)["status"] == "ok"
    io.update_json(run / "metrics.json", steps=100)  # rundir.collapse_patience: two epochs, at least 100 steps
    assert tables.run_record(run)["status"] == "collapsed"
    io.write_json(run / "metrics.json", {"status": "ok", "train_loss": 0.2, "train_accuracy": 0.11, "num_classes": 100})
    assert tables.run_record(run)["status"] == "ok"  # 0.11 is above chance for 100 classes


def test_the_seed_result_names_the_regimes_where_it_reproduces_and_why():
    t = answer.answer_table(table())
    text = answer_text.seed_result(t)
    # scaled lr at loss 0.1 (gap after Holm, SAM +0.2 points); same lr at loss 0.1 has λ_max 7 > 5 with
    # SAM but its gap (p 0.03) is not significant after Holm (0.06): it no longer counts
    assert text.startswith("The seed study's result (the large batch worse, and SAM at the large batch worse or "
                           "sharper) reproduces in 1 of 4 regimes: SGD, scaled lr, at loss 0.1 (gap +1.2 points")
    assert "λ_max 2 with SAM vs 3" in text
    assert "where batch 1000 has training loss 0.098 vs 0.095 and gradient norm 0.9 vs 0.2 against batch 32" in text
    # scaled lr after 5 epochs (no gap) and same lr at loss 0.1 (upper limit 3.4 points); same lr after 5
    # epochs: no run of that rule at batch 1000 has it
    assert text.endswith("Elsewhere: in 2 the large batch is not significantly worse after Holm's correction (the data "
                         "exclude gaps larger than +0 to +3.4 points, the CIs' upper limits); in 1 fewer than two "
                         "seeds have both batch sizes at the milestone.")
    assert answer_text.seed_result([]) is None


def test_the_seed_figures_are_drawn_at_the_smallest_loss_milestone_every_batch_size_reached():
    from samlib.study import figures

    df = table()
    assert figures.seed_milestone(df) == "loss=0.1"
    smaller = pd.DataFrame([snap(32, s, 0.03, milestone="loss=0.05") for s in range(3)])  # batch 32 only
    assert figures.seed_milestone(pd.concat([df, smaller], ignore_index=True)) == "loss=0.1"
    assert figures.seed_milestone(df[df["kind"] == "epochs"]) == "epochs=5"
    assert figures.seed_milestone(pd.DataFrame()) is None


def test_a_rule_borrows_the_other_rules_base_batch_runs_only_when_it_has_none_of_its_own():
    def row(scaling, bs, lr, sam="none"):
        return {"notebook": "baseline", "optimizer": "momentum", "sam": sam, "m": float("nan"), "batch_size": bs,
                "base_batch_size": 32, "lr_scaling": scaling, "lr": lr}

    shared = pd.DataFrame([row("linear", 32, 0.005), row("linear", 1000, 0.156), row("none", 1000, 0.005)])
    assert selections.in_lr_rule(shared, "same")["lr"].tolist() == [0.005, 0.005]  # the batch-32 run is borrowed
    assert selections.in_lr_rule(shared, "scaled")["lr"].tolist() == [0.005, 0.156]
    # a study that chose another lr for the same rule runs its own batch-32 runs: nothing is borrowed
    own = pd.concat([shared, pd.DataFrame([row("none", 32, 0.05)])], ignore_index=True)
    assert selections.in_lr_rule(own, "same")["lr"].tolist() == [0.005, 0.05]
    assert selections.in_lr_rule(own, "scaled")["lr"].tolist() == [0.005, 0.156]


def test_side_by_side_puts_each_regimes_rows_of_both_data_sets_together():
    def row(dataset, optimizer, rule, kind, at):
        return {"dataset": dataset, "optimizer": optimizer, "lr_rule": rule, "compare_at": kind, "at": at}

    mnist = [row("MNIST", "sgd", "same", "epochs", 10), row("MNIST", "sgd", "same", "loss", 0.1),
             row("MNIST", "sgd", "same", "loss", 0.03), row("MNIST", "sgd", "scaled", "loss", 0.1),
             row("MNIST", "adam", "same", "loss", 0.1)]
    fashion = [row("Fashion", "sgd", "same", "epochs", 10), row("Fashion", "sgd", "same", "loss", 0.4),
               row("Fashion", "sgd", "same", "loss", 0.3), row("Fashion", "sgd", "scaled", "loss", 0.4)]
    both = answer.side_by_side([mnist, fashion])
    assert [(r["dataset"], r["lr_rule"], r["compare_at"], r["at"]) for r in both] == [
        ("MNIST", "same", "epochs", 10), ("Fashion", "same", "epochs", 10),
        ("MNIST", "same", "loss", 0.1), ("MNIST", "same", "loss", 0.03),
        ("Fashion", "same", "loss", 0.4), ("Fashion", "same", "loss", 0.3),
        ("MNIST", "scaled", "loss", 0.1), ("Fashion", "scaled", "loss", 0.4),
        ("MNIST", "same", "loss", 0.1)]
    assert both[-1]["optimizer"] == "adam"
    assert answer.side_by_side([mnist]) == mnist  # one study: its own order


def test_the_tuned_rule_compares_every_batch_size_with_the_smallest_and_borrows_nothing():
    rows = []
    for s in range(3):
        for bs, err in ((32, 0.030), (128, 0.031), (512, 0.036)):
            rows += [snap(bs, s, err + 0.001 * s, rule="none", lam=2.0), snap(bs, s, err + 0.002, rule="none", sam="sam",
                                                                           lam=1.0)]
    tuned = pd.DataFrame(rows).assign(lr_tuned=True)
    same = table()  # the same-lr and scaled runs of the other tests, lr_tuned absent
    t = answer.answer_table(pd.concat([same, tuned], ignore_index=True))
    tuned_rows = [r for r in t if r["lr_rule"] == "tuned"]
    assert [(r["small_batch"], r["large_batch"]) for r in tuned_rows] == [(32, 128), (32, 512)]
    # per seed LB − SB: 0.001 at 128 and 0.006 at 512, the same for every seed (sd 0)
    assert [r["gap"]["mean"] for r in tuned_rows] == pytest.approx([0.001, 0.006])
    # the same and scaled rules still compare 32 with 1000, and never use a tuned run
    others = [r for r in t if r["lr_rule"] != "tuned" and r["compare_at"] == "loss"]
    assert {r["large_batch"] for r in others} == {1000}
    assert _row([r for r in t if r["lr_rule"] != "tuned"], "scaled", "loss")["test_error"]["sb"] == pytest.approx(0.032)
    # the compact table: one line per large batch of the tuned regime, named; the others one line a regime
    compact = answer_text.answer_rows_markdown(t, ["regime", "gap@loss"]).splitlines()[2:]
    assert [line.split(" | ")[0] for line in compact] == [
        "| MNIST (mnist5k): SGD, same lr", "| MNIST (mnist5k): SGD, scaled lr",
        "| MNIST (mnist5k): SGD, tuned lr, batch 128 vs 32", "| MNIST (mnist5k): SGD, tuned lr, batch 512 vs 32"]


def _encode(correct) -> str:
    """metrics.json's test_correct, written here as the format says: base64 of np.packbits, little-endian bits."""
    import base64

    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool), bitorder="little")).decode()


def test_the_gap_gets_a_ci_over_seeds_and_test_images_where_predictions_were_recorded():
    rng = np.random.default_rng(0)
    n, rows, diffs = 301, [], []
    for s in range(4):
        sb = rng.random(n) < 0.95  # right on ~95 % of the images
        lb = sb.copy()
        lb[rng.choice(n, 6, replace=False)] = False  # the large batch misses a few more
        for bs, correct in ((32, sb), (1000, lb)):
            r = snap(bs, s, 1 - correct.mean())
            rows.append({**r, "test_correct": _encode(correct), "n_test": n})
        diffs.append(lb.astype(float) * -1 + sb.astype(float))  # error LB − error SB per image
    t = answer.answer_table(pd.DataFrame(rows))
    r = _row(t, "scaled", "loss")
    two = r["gap_two_way"]
    d = np.stack(diffs)
    assert two["mean"] == pytest.approx(d.mean()) == pytest.approx(r["gap"]["mean"])
    assert two["n_seeds"] == 4 and two["n_images"] == n
    # the resampled images add their own variance: the two-way CI is wider than the seeds-only t-CI here
    assert two["lo"] < r["gap"]["lo"] and two["hi"] > r["gap"]["hi"]
    assert r["upper"] == pytest.approx(two["hi"])  # "no gap larger than" uses the wider interval
    assert _row(answer.answer_table(table()), "scaled", "loss")["gap_two_way"] is None  # no predictions
