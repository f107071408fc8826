"""The direct answer and the study's selections from results tables built by hand here. The rows
have no ``method`` label: what a method is comes from its fields (optimizer, sam, m) alone."""

import math

import pandas as pd
import pytest

from samlib.study import answer, answer_text, cellview, selections
from samlib.study.selections import Method


def row(notebook, bs, seed, test_loss, sam="none", optimizer="momentum", m=None, acc=0.9, converged=True,
        status="ok", lr=0.1, val_loss=0.2):
    return {"notebook": notebook, "batch_size": bs, "seed": seed, "test_loss": test_loss, "sam": sam,
            "optimizer": optimizer, "m": m, "test_accuracy": acc, "converged": converged, "status": status,
            "lr": lr, "val_loss": val_loss, "train_loss": 0.1, "lr_scaling": "none"}


def table():
    rows = []
    for s, (sb, lb, sam_lb) in enumerate([(0.10, 0.20, 0.14), (0.12, 0.22, 0.18), (0.11, 0.21, 0.16)]):
        rows += [row("baseline", 32, s, sb, acc=0.97), row("baseline", 1000, s, lb, acc=0.95),
                 row("sam_sgd", 1000, s, sam_lb, sam="sam", acc=0.96), row("sam_sgd", 32, s, sb - 0.01, sam="sam"),
                 row("sam_sgd", 1000, s, 0.0, sam="sam", m=128)]
    # a SAM run that missed its target and a diverged baseline run: shown, never compared
    rows.append(row("sam_sgd", 1000, 3, 0.01, sam="sam", converged=False))
    rows.append(row("baseline", 1000, 3, math.nan, status="diverged"))
    return pd.DataFrame(rows)


def _closure(gaps, family="sgd", rule="same"):
    (entry,) = [g for g in gaps if (g["family"], g["lr_rule"]) == (family, rule)]
    return entry


def test_gap_closure_of_sgd_by_hand():
    g = _closure(answer.gap_closure(table()))
    # means: base SB 0.11, base LB 0.21, SAM LB 0.16 -> (0.21 - 0.16) / (0.21 - 0.11) = 0.5
    assert g["estimate"] == pytest.approx(0.5)
    assert (g["small_batch"], g["large_batch"], g["n_seeds"], g["metric"]) == (32, 1000, 3, "test_loss")
    assert g["ci_low"] <= 0.5 <= g["ci_high"] and g["significant_gap"]
    # test error: 0.03 (SB), 0.05 (LB), 0.04 (SAM LB) at every seed -> exactly half
    assert g["test_error"]["estimate"] == pytest.approx(0.5)
    # no Adam runs and no scaled-lr runs: no entries for them
    assert [(g["family"], g["lr_rule"]) for g in answer.gap_closure(table())] == [("sgd", "same")]


def test_gap_closure_is_one_per_lr_rule_never_pooled_over_rules():
    """The same runs again under the scaled rule, with batch 1000 worse there by another 0.1: pooled,
    the closure would mix both regimes; per rule, each is its own (same: 0.5 as above; scaled: the base
    gap doubles to 0.2 while SAM gains the same 0.05, so 0.25)."""
    same = table()
    scaled = same.assign(lr_scaling="linear", base_batch_size=32)
    lb_base = (scaled["notebook"] == "baseline") & (scaled["batch_size"] == 1000)
    lb_sam = (scaled["notebook"] == "sam_sgd") & (scaled["batch_size"] == 1000)
    scaled.loc[lb_base | lb_sam, "test_loss"] += 0.1
    gaps = answer.gap_closure(pd.concat([same.assign(base_batch_size=32), scaled], ignore_index=True))
    assert [(g["family"], g["lr_rule"]) for g in gaps] == [("sgd", "same"), ("sgd", "scaled")]
    assert _closure(gaps, rule="same")["estimate"] == pytest.approx(0.5)
    assert _closure(gaps, rule="scaled")["estimate"] == pytest.approx(0.25)
    assert all(g["n_seeds"] == 3 for g in gaps)


def test_runs_that_missed_their_target_or_diverged_are_not_compared():
    df = table()
    assert len(selections.not_compared(df)) == 2
    assert 3 not in _closure(answer.gap_closure(df))["seeds"]  # seed 3's SAM run did not converge
    assert set(selections.compared(df)["seed"]) == {0, 1, 2}


def test_paired_differences_per_batch_size_and_method():
    p = answer.paired(table())
    sam = p[(p["batch_size"] == 1000) & (p["method"] == "SGD+momentum+SAM") & (p["metric"] == "test_loss")].iloc[0]
    assert sam["mean"] == pytest.approx(((0.14 - 0.20) + (0.18 - 0.22) + (0.16 - 0.21)) / 3)
    assert sam["n"] == 3 and sam["base"] == "SGD+momentum"
    at32 = p[(p["batch_size"] == 32) & (p["metric"] == "test_loss")].iloc[0]
    assert at32["mean"] == pytest.approx(-0.01) and at32["significant"]  # the same shift at every seed


def test_lr_is_selected_on_validation_loss_never_on_test_loss():
    rows = []
    for s in (0, 1):
        # at B = 32 the validation loss prefers lr 0.01 although lr 0.1 has the lower test loss
        rows += [row("lr_scaling", 32, s, test_loss=0.5, lr=0.01, val_loss=0.1),
                 row("lr_scaling", 32, s, test_loss=0.1, lr=0.1, val_loss=0.3),
                 row("lr_scaling", 512, s, test_loss=0.4, lr=0.01, val_loss=0.4),
                 row("lr_scaling", 512, s, test_loss=0.6, lr=0.16, val_loss=0.2)]
    sel = selections.lr_selection(pd.DataFrame(rows))
    assert sel[sel["batch_size"] == 32]["lr"].tolist() == [0.01, 0.01]
    assert sel[sel["batch_size"] == 32]["test_loss"].tolist() == [0.5, 0.5]  # the chosen run's test loss
    fit = answer.lr_slopes(sel)["SGD+momentum"]
    assert fit["slope"] == pytest.approx(math.log(16) / math.log(16))  # 0.01 -> 0.16 over 32 -> 512: slope 1
    assert fit["at_edge"] == 4  # every choice lies on the sweep's edge: the slope is only a bound


def test_answer_sentence_states_the_closure_or_that_there_is_no_gap():
    text = answer_text.sentences(answer.gap_closure(table()))[0]
    assert text.startswith("SAM at batch 1000 closes 50 %") and "32" in text and "SGD (same lr, final weights)" in text
    flat = table()
    flat.loc[(flat["notebook"] == "baseline") & (flat["batch_size"] == 1000), "test_loss"] = [0.12, 0.10, 0.11, math.nan]
    assert "not significant" in answer_text.sentences(answer.gap_closure(flat))[0]


def test_methods_are_told_apart_and_ordered_by_their_fields_not_by_their_labels():
    """Labels with '+' in them ('SGD+momentum', 'SGD+momentum+SAM (m=32)') are only drawn: a base
    optimizer is one without SAM, and the order is optimizer, then no SAM / SAM / ASAM / LookSAM, then
    the whole batch before m (larger m first)."""
    combos = [("adam", "sam", None), ("momentum", "sam", 32), ("sgd", "none", None), ("momentum", "none", 64),
              ("momentum", "asam", None), ("momentum", "sam", None), ("adamw", "none", None),
              ("momentum", "sam", 128), ("adam", "none", None), ("sgd", "looksam", None), ("sgd", "sam", None)]
    df = pd.DataFrame([row("sam_sgd", 256, 0, 0.1, sam=s, optimizer=o, m=m) for o, s, m in combos])
    assert [m.label for m in selections.method_order(df)] == [
        "SGD", "SGD+SAM", "SGD+LookSAM",
        "SGD+momentum", "SGD+momentum+SAM", "SGD+momentum+SAM (m=128)", "SGD+momentum+SAM (m=32)",
        "SGD+momentum+ASAM",
        "Adam", "Adam+SAM",
        "AdamW",
    ]
    # the base optimizer (m of a base run is not part of what it is) and its SAM methods
    assert [m.label for m, rows in selections.by_method(df) if m.is_base] == ["SGD", "SGD+momentum", "Adam", "AdamW"]
    assert list(selections.is_base(df)) == [s == "none" for _, s, _ in combos]
    assert list(selections.is_plain_sam(df)) == [s == "sam" and m is None for _, s, m in combos]
    momentum_m32 = Method.of("momentum", "sam", 32.0)  # m as results.csv reads it back: a float
    assert momentum_m32.base == Method("momentum") and momentum_m32.label == "SGD+momentum+SAM (m=32)"
    assert len(selections.select(df, momentum_m32)) == 1
    assert list(selections.in_family(df, "SGD")["optimizer"].unique()) == ["momentum", "sgd"]
    # paired: each SAM method against its own optimizer without SAM
    two = pd.DataFrame([row("sam_sgd", 256, s, loss, sam=sam, optimizer=o, m=m)
                        for s in (0, 1) for o, sam, m, loss in (("momentum", "none", None, 0.3), ("sgd", "none", None, 0.5),
                                                               ("momentum", "sam", 32, 0.2), ("sgd", "sam", None, 0.1))])
    p = answer.paired(two)
    p = p[p["metric"] == "test_loss"]
    assert list(zip(p["method"], p["base"], p["mean"].round(6))) == [("SGD+SAM", "SGD", -0.4),
                                                                     ("SGD+momentum+SAM (m=32)", "SGD+momentum", -0.1)]


def test_the_lr_notebooks_best_lr_is_the_reports_per_seed_choice():
    """Each seed chooses the lr of its lowest validation loss (`selections.best_lr`, what the report and
    Fig. 5 use); the lr notebook's sweep table marks the lr most seeds chose, even where the mean
    validation loss over seeds would pick another one."""
    val = {0: {0.1: 0.10, 0.2: 0.30}, 1: {0.1: 0.90, 0.2: 0.30}, 2: {0.1: 0.12, 0.2: 0.30}}  # means: 0.37 vs 0.30
    rows = [row("lr_scaling", 128, s, test_loss=0.5, sam=sam, lr=lr, val_loss=v + (0.01 if sam == "sam" else 0))
            for sam in ("none", "sam") for s, by_lr in val.items() for lr, v in by_lr.items()]
    df = pd.DataFrame(rows).assign(lr_scaling="none", train_loss=0.1, val_accuracy=0.9, steps=10)
    report = selections.lr_selection(df)
    assert list(zip(report["method"], report["seed"], report["lr"])) == [
        ("SGD+momentum", 0, 0.1), ("SGD+momentum", 1, 0.2), ("SGD+momentum", 2, 0.1),
        ("SGD+momentum+SAM", 0, 0.1), ("SGD+momentum+SAM", 1, 0.2), ("SGD+momentum+SAM", 2, 0.1)]
    sweep = cellview.lr_sweep(df)
    best = sweep[sweep["best"]]
    assert list(zip(best["method"], best["lr"])) == [("SGD+momentum", 0.1), ("SGD+momentum+SAM", 0.1)]
    assert list(sweep["chosen_by"]) == [2, 1, 2, 1]  # = the report's choices per lr
    assert sweep.loc[sweep["best"], "val_loss"].min() > sweep.loc[~sweep["best"], "val_loss"].max()  # not the mean's
