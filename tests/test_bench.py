"""The benchmark runs and prints its table (speed itself is reported, never asserted)."""

from samlib.cli import main as cli_main


def test_bench_prints_a_row_per_method_and_batch_size(capsys):
    assert cli_main(["bench", "--methods", "sgd,sam,looksam", "--batch-sizes", "8", "--replicas", "1", "--rounds", "1", "--samples", "16"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["method", "batch", "replicas", "samples/s"]
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["sgd", "sam", "looksam"] and rows[0][-1] == "1.00x"
    assert all(float(r[3]) > 0 for r in rows)


def test_bench_rejects_unknown_method(capsys):
    assert cli_main(["bench", "--methods", "sgd,gsam"]) == 2
    assert "gsam" in capsys.readouterr().err
