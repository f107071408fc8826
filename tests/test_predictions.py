"""Per-test-image predictions (`Config.record_predictions`): every snapshot and the final metrics say
which test images the network classifies correctly, as packed bits in base64 (`samlib.rundir`'s
`encode_correct` / `decode_correct`), from the very pass that gives the recorded test accuracy."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest

from samlib.config import Config, SharpnessSettings
from samlib.data import Data
from samlib.rundir import decode_correct, encode_correct, measure_run
from samlib.train import train_and_evaluate

TIMING = ("wall_seconds", "train_seconds", "step_seconds", "check_seconds", "snapshot_seconds",
          "samples_per_second")


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1001])
def test_decode_reads_back_what_encode_wrote(n):
    rng = np.random.default_rng(n)
    for correct in (rng.random(n) < 0.7, np.ones(n, bool), np.zeros(n, bool)):
        text = encode_correct(correct)
        assert isinstance(text, str) and len(base64.b64decode(text)) == math.ceil(n / 8)
        assert text == base64.b64encode(np.packbits(correct, bitorder="little")).decode()  # the format, as stated
        back = decode_correct(text, n)
        assert back.dtype == bool
        np.testing.assert_array_equal(back, correct)
    with pytest.raises(ValueError, match="bits"):
        decode_correct(encode_correct(np.ones(n, bool)), n + 8)


def test_the_first_example_is_the_lowest_bit():
    assert encode_correct([True] + [False] * 7) == base64.b64encode(bytes([1])).decode()
    assert encode_correct([False] * 8 + [True]) == base64.b64encode(bytes([0, 1])).decode()


def tiny_data(n_train=160, n_test=37, seed=0) -> Data:
    rng = np.random.default_rng(seed)
    x = rng.random((n_train + n_test, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n_train + n_test).astype("int32")
    return Data(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    values = dict(optimizer="momentum", lr=0.05, batch_size=16, epochs=6, verbose=0, check_every=3,
                  loss_milestones=[2.29, 2.28], epoch_milestones=[1], eval_batch_size=16)
    folder = tmp_path_factory.mktemp("pred")
    data = tiny_data()
    on = train_and_evaluate(Config(**values, record_predictions=True, run_dir=str(folder / "on")), data)
    off = train_and_evaluate(Config(**values), data)
    return on, off, data


def test_each_snapshot_and_the_final_metrics_say_which_test_images_are_right(runs):
    on, _, data = runs
    m = on.metrics
    assert {s["milestone"] for s in m["snapshots"]} == {"loss=2.29", "loss=2.28", "epochs=1"}
    for record in [*m["snapshots"], m]:
        assert record["n_test"] == 37
        correct = decode_correct(record["test_correct"], record["n_test"])
        assert correct.mean() == record["test_accuracy"]  # exactly: the same hits, the same division
    final = np.asarray(on.model(data.x_test, training=False)).argmax(1) == data.y_test
    np.testing.assert_array_equal(decode_correct(m["test_correct"], 37), final)
    saved = json.loads((Path(on.run_dir) / "metrics.json").read_text())
    assert saved["test_correct"] == m["test_correct"] and saved["snapshots"] == m["snapshots"]


def test_recording_predictions_changes_no_other_number(runs):
    on, off, _ = runs
    a, b = on.metrics, off.metrics
    assert "test_correct" not in b and all("test_correct" not in s and "n_test" not in s for s in b["snapshots"])
    assert {k: v for k, v in a.items() if k not in TIMING + ("test_correct", "snapshots")} == {
        k: v for k, v in b.items() if k not in TIMING + ("snapshots",)}
    assert [{k: v for k, v in s.items() if k not in ("test_correct", "n_test")} for s in a["snapshots"]] == b["snapshots"]


def test_measuring_a_run_keeps_what_training_recorded_of_its_snapshots(runs):
    on, _, data = runs
    before = on.metrics["snapshots"]
    measure_run(on.run_dir, SharpnessSettings(subset=40, measures=("sam",)), data=data)
    measure_run(on.run_dir, SharpnessSettings(subset=40, measures=("noise_scale",)), data=data)  # measured again
    snaps = json.loads((Path(on.run_dir) / "metrics.json").read_text())["snapshots"]
    for old, new in zip(before, snaps, strict=True):
        assert new["test_correct"] == old["test_correct"] and new["n_test"] == old["n_test"]
        assert "sam_sharpness" not in new and new["micro_batch"] == 20  # b = 32, capped at N/2 of 40
        assert math.isfinite(new["b_simple"]) and new["b_simple"] > 0
