"""The direct answer from a results table built by hand here."""

import math

import pandas as pd
import pytest

from samlib.study import answer


def row(notebook, bs, seed, test_loss, sam="none", optimizer="momentum", m=None, acc=0.9, converged=True,
        status="ok", lr=0.1, val_loss=0.2, method=None):
    label = method or {("none", None): "SGD", ("sam", None): "SGD+SAM"}.get((sam, m), f"SGD+SAM(m={m})")
    return {"notebook": notebook, "batch_size": bs, "seed": seed, "test_loss": test_loss, "sam": sam,
            "optimizer": optimizer, "m": m, "test_accuracy": acc, "converged": converged, "status": status,
            "lr": lr, "val_loss": val_loss, "method": label, "train_loss": 0.1}


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


def test_gap_closure_of_sgd_by_hand():
    g = answer.gap_closure(table())["sgd"]
    # means: base SB 0.11, base LB 0.21, SAM LB 0.16 -> (0.21 - 0.16) / (0.21 - 0.11) = 0.5
    assert g["estimate"] == pytest.approx(0.5)
    assert (g["small_batch"], g["large_batch"], g["n_seeds"], g["metric"]) == (32, 1000, 3, "test_loss")
    assert g["ci_low"] <= 0.5 <= g["ci_high"] and g["significant_gap"]
    # test error: 0.03 (SB), 0.05 (LB), 0.04 (SAM LB) at every seed -> exactly half
    assert g["test_error"]["estimate"] == pytest.approx(0.5)
    assert "adam" not in answer.gap_closure(table())  # no Adam runs: no Adam entry


def test_runs_that_missed_their_target_or_diverged_are_not_compared():
    df = table()
    assert len(answer.not_compared(df)) == 2
    assert 3 not in answer.gap_closure(df)["sgd"]["seeds"]  # seed 3's SAM run did not converge
    assert set(answer.compared(df)["seed"]) == {0, 1, 2}


def test_paired_differences_per_batch_size_and_method():
    p = answer.paired(table())
    sam = p[(p["batch_size"] == 1000) & (p["method"] == "SGD+SAM") & (p["metric"] == "test_loss")].iloc[0]
    assert sam["mean"] == pytest.approx(((0.14 - 0.20) + (0.18 - 0.22) + (0.16 - 0.21)) / 3)
    assert sam["n"] == 3 and sam["base"] == "SGD"
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
    sel = answer.lr_selection(pd.DataFrame(rows))
    assert sel[sel["batch_size"] == 32]["lr"].tolist() == [0.01, 0.01]
    assert sel[sel["batch_size"] == 32]["test_loss"].tolist() == [0.5, 0.5]  # the chosen run's test loss
    fit = answer.lr_slopes(sel)["SGD"]
    assert fit["slope"] == pytest.approx(math.log(16) / math.log(16))  # 0.01 -> 0.16 over 32 -> 512: slope 1
    assert fit["at_edge"] == 4  # every choice lies on the sweep's edge: the slope is only a bound


def test_answer_sentence_states_the_closure_or_that_there_is_no_gap():
    text = answer.sentences(answer.gap_closure(table()))[0]
    assert text.startswith("SAM at batch 1000 closes 50 %") and "32" in text
    flat = table()
    flat.loc[(flat["notebook"] == "baseline") & (flat["batch_size"] == 1000), "test_loss"] = [0.12, 0.10, 0.11, math.nan]
    assert "not significant" in answer.sentences(answer.gap_closure(flat))[0]
