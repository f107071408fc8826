"""The study's wall-time split (samlib.study.timing), against sums worked out by hand."""

import pytest

from samlib import io
from samlib.study import timing


def test_a_runs_seconds_by_part():
    metrics = {"wall_seconds": 100.0, "train_seconds": 70.0, "check_seconds": 10.0, "snapshot_seconds": 5.0,
               "sharpness_seconds": 8.0,
               "snapshots": [{"sharpness_seconds": 3.0}, {"sharpness_seconds": 8.0}]}  # the 2nd shares the final's
    assert timing.run_seconds(metrics) == {"training": 70.0, "loss_checks": 10.0, "snapshots": 5.0,
                                           "validation_and_fit_overhead": 15.0, "sharpness": 11.0}


def test_the_split_of_a_study_folder(tmp_path):
    runs = tmp_path / "runs" / "baseline"
    io.write_json(runs / "32" / "seed=0" / "metrics.json", {"status": "ok", "wall_seconds": 40.0, "train_seconds": 30.0,
                                                           "check_seconds": 4.0, "sharpness_seconds": 6.0})
    io.write_json(runs / "32" / "seed=1" / "metrics.json", {"status": "ok", "wall_seconds": 20.0, "train_seconds": 16.0,
                                                           "check_seconds": 2.0, "snapshot_seconds": 1.0})
    io.write_json(runs / "32" / "status.json", {"seconds": 80.0})
    io.write_json(tmp_path / "summary.status.json", {"seconds": 9.0})
    split = timing.study_split(tmp_path)
    # runs: training 46, checks 6, snapshots 1, validation/overhead (40-34) + (20-19) = 7, sharpness 6 -> 66;
    # the cell's 80 s leave 14 s of start-up
    assert split["seconds"] == {"training": 46.0, "loss_checks": 6.0, "snapshots": 1.0,
                                "validation_and_fit_overhead": 7.0, "sharpness": 6.0, "startup_and_other": 14.0}
    assert split["total"] == 80.0 and split["summary"] == 9.0
    assert split["share"]["training"] == pytest.approx(46 / 80)
    assert split["checks_and_validation_share"] == pytest.approx(13 / 80)
