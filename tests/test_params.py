"""Bad input that must stop `python -m samlib study` (and `train`) before anything runs: exit code 2,
one message naming the key, and nothing written. Also the one validation scheme of `samlib.validate`
behind Config, SharpnessSettings and the params file, and `data.train_size` against `data.load`.

IDX folders are written here with struct (as tests/test_data.py does); the notebooks are stubs that
would write a marker file if they ever ran.
"""

from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from samlib import cli, data, measures
from samlib import config as config_module
from samlib.config import Config, ConfigError, SharpnessSettings, check_data, load_yaml_mapping
from samlib.study import load_params

REPO = Path(__file__).resolve().parents[1]
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype=np.uint8)
    return struct.pack(">I", 0x0800 | a.ndim) + struct.pack(f">{a.ndim}i", *a.shape) + a.tobytes()


def idx_folder(folder: Path, n_train: int = 40, n_test: int = 10, gz: bool = True, classes: int = 4) -> Path:
    """A tiny IDX data set: n_train 6x6 images, labels cycling over `classes` classes."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n_train, 6, 6)), np.arange(n_train) % classes,
              rng.integers(0, 256, (n_test, 6, 6)), np.arange(n_test) % classes]
    folder.mkdir(parents=True, exist_ok=True)
    for stem, a in zip(STEMS, arrays):
        blob = idx_bytes(a)
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(blob) if gz else blob)
    return folder


def stub_notebooks(tmp_path: Path) -> Path:
    """notebooks/stub.ipynb and summary.ipynb: each writes tmp_path/ran if it is ever executed."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir(parents=True)
    for name in ("stub", "summary"):
        nb = new_notebook()
        params = new_code_cell('run_root = ""\nbatch_size = 0\nseeds = []\nbase = {}\ngrid = {}\n'
                               'sharpness = {}\nstudy_dir = ""\n')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, new_code_cell(f"open({str(tmp_path / 'ran')!r}, 'w').close()")]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, str(nbdir / f"{name}.ipynb"))
    return nbdir


def params_text(base: dict | None = None, notebook: dict | None = None) -> str:
    spec = {"batch_sizes": [8, 16], **(notebook or {})}
    return yaml.safe_dump({"study": "t", "seeds": [0, 1], "base": {"epochs": 1, **(base or {})},
                           "notebooks": {"stub": spec}}, sort_keys=False)


def run_study(tmp_path: Path, text: str, capsys) -> tuple[int, str]:
    """`python -m samlib study` on a params file with `text`; asserts nothing was written or run."""
    nbdir = stub_notebooks(tmp_path)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    code = cli.main(["study", str(path), "--out", str(out), "--notebooks", str(nbdir), "--no-progress"])
    captured = capsys.readouterr()
    assert not out.exists(), sorted(out.rglob("*"))  # no study.json, no cell folder, nothing
    assert not (tmp_path / "ran").exists()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert str(path) in captured.err
    return code, captured.err


# ---------------------------------------------------------------------- a key given twice
def test_a_key_given_twice_at_the_top_exits_2_naming_key_and_lines(tmp_path, capsys):
    text = params_text() + "seeds: [7]\n"
    code, err = run_study(tmp_path, text, capsys)
    assert code == 2
    assert "'seeds'" in err and "twice" in err and "line 2 " in err and f"line {len(text.splitlines())};" in err


def test_a_key_given_twice_deep_inside_exits_2(tmp_path, capsys):
    text = "study: t\nseeds: [0]\nnotebooks:\n  stub:\n    batch_sizes: [8]\n    base: {rho: 0.1, rho: 0.2}\n"
    code, err = run_study(tmp_path, text, capsys)
    assert code == 2 and "'rho'" in err and "line 6" in err


def test_the_quick_study_with_a_second_seeds_key_is_rejected(tmp_path):
    path = tmp_path / "quick.yaml"
    path.write_text((REPO / "params" / "quick.yaml").read_text() + "seeds: [7]\n")
    with pytest.raises(ConfigError, match="'seeds' is given twice"):
        load_params(path, REPO / "notebooks")
    assert load_params(REPO / "params" / "quick.yaml", REPO / "notebooks").seeds == (0, 1, 2)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n")
    assert load_yaml_mapping(path) == {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 2}}


# ---------------------------------------------------------------------- batch size vs training set
def test_a_batch_size_above_the_training_set_exits_2(tmp_path, capsys):
    code, err = run_study(tmp_path, params_text(notebook={"batch_sizes": [32, 100000]}), capsys)
    assert code == 2
    assert "'notebooks.stub.batch_sizes'" in err and "100000" in err and "3500" in err  # mnist5k after the split


def test_the_batch_size_limit_is_the_split_training_set_of_an_idx_folder(tmp_path, capsys):
    folder = idx_folder(tmp_path / "idx", n_train=40)  # 10 per class; val_fraction 0.125 keeps 9 each
    n = len(data.load(f"idx:{folder}", val_fraction=0.125).y_train)
    assert n == 36
    ok = tmp_path / "ok.yaml"
    ok.write_text(params_text({"dataset": f"idx:{folder}"}, {"batch_sizes": [8, n]}))
    load_params(ok, stub_notebooks(tmp_path / "ok"))  # n itself fits
    code, err = run_study(tmp_path, params_text({"dataset": f"idx:{folder}"}, {"batch_sizes": [8, n + 1]}), capsys)
    assert code == 2 and "'notebooks.stub.batch_sizes'" in err and f"<= {n}" in err


def test_the_train_command_rejects_a_batch_size_above_the_training_set(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--set", "batch_size=100000", "--set", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert "'batch_size'" in err and "3500" in err and not run.exists()


# ---------------------------------------------------------------------- data folders
@pytest.mark.parametrize("base, key", [
    ({"dataset": "idx:/nonexistent"}, "base.dataset"),
    ({"dataset": "mnist", "data_dir": "/nonexistent"}, "base.data_dir"),
])
def test_a_missing_data_folder_exits_2_naming_key_and_folder(tmp_path, capsys, base, key):
    code, err = run_study(tmp_path, params_text(base), capsys)
    assert code == 2 and f"'{key}'" in err and "/nonexistent" in err


def test_a_folder_without_the_idx_files_exits_2_naming_the_missing_files(tmp_path, capsys):
    folder = idx_folder(tmp_path / "idx")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    (folder / "train-images-idx3-ubyte.gz").unlink()
    notebook = {"grid": {"dataset": ["mnist5k", f"idx:{folder}"]}}
    code, err = run_study(tmp_path, params_text(notebook=notebook), capsys)
    assert code == 2 and "'notebooks.stub.grid.dataset'" in err and str(folder) in err
    assert "t10k-labels-idx1-ubyte" in err and "train-images-idx3-ubyte" in err
    assert "train-labels-idx1-ubyte" not in err.split("expected")[0]  # the files it has are not named missing


def test_train_size_matches_load_without_loading(tmp_path, monkeypatch):
    for gz in (True, False):
        folder = idx_folder(tmp_path / f"idx-{gz}", n_train=23, gz=gz, classes=3)
        for fraction in (0.0, 0.125, 0.3):
            assert data.train_size(f"idx:{folder}", None, fraction) == len(data.load(f"idx:{folder}", val_fraction=fraction).y_train)
            assert data.train_size("mnist", str(folder), fraction) == data.train_size(f"idx:{folder}", None, fraction)
    assert data.train_size("mnist5k", None, 0.125) == len(data.load("mnist5k", val_fraction=0.125).y_train) == 3500
    monkeypatch.setattr(data, "_load", lambda *a: pytest.fail("train_size must not load a data set"))
    assert data.train_size("mnist5k") == 4000
    assert data.train_size("mnist") == data.train_size("fashion_mnist") == 60000
    assert data.train_size("cifar10") == 50000 and data.train_size("cifar10", None, 0.1) == 45000
    with pytest.raises(data.DataError, match="data_dir"):
        data.train_size("cifar10", str(tmp_path))


def test_check_data_names_the_key_and_plain_construction_reads_no_files():
    config = Config(dataset="idx:/nonexistent", batch_size=10**6)  # builds: no file is read
    with pytest.raises(ConfigError, match=r"config key 'dataset' has value 'idx:/nonexistent'.*/nonexistent"):
        check_data(config)
    with pytest.raises(ConfigError, match="'batch_size' has value 1000000.*<= 3500"):
        check_data(Config(batch_size=10**6))
    assert check_data(Config(batch_size=3500)) == 3500


# ---------------------------------------------------------------------- one validation scheme
def test_direct_construction_validates_and_normalises():
    with pytest.raises(ConfigError, match="config key 'lr' has value -1; allowed: a number > 0"):
        Config(lr=-1)
    with pytest.raises(ConfigError, match="'seed' has value -2"):
        dataclasses.replace(Config(), seed=-2)
    assert isinstance(Config(lr=1).lr, float) and Config(lr=1) == Config.from_dict({"lr": 1})
    with pytest.raises(ConfigError, match="key 'iters' has value 0; allowed: an integer >= 1"):
        SharpnessSettings(iters=0)
    s = SharpnessSettings(measures=["sam"], epsilons=[1], tol=1)
    assert s.measures == ("sam",) and s.epsilons == (1.0,) and isinstance(s.tol, float)
    assert s == SharpnessSettings.from_dict(s.to_dict())


def test_measure_names_come_from_the_registry():
    assert config_module.MEASURES == measures.NAMES
    assert SharpnessSettings().measures == measures.DEFAULT_MEASURES


def test_one_message_shape_with_the_yaml_hint_for_numbers_written_1e_3(tmp_path):
    hint = "(YAML reads numbers like 1e-3 as strings: write 1.0e-3)"
    for build in (lambda: Config.from_dict({"rho": "1e-3"}), lambda: SharpnessSettings.from_dict({"tol": "1e-3"}),
                  lambda: SharpnessSettings.from_dict({"epsilons": [1.0e-3, "5e-4"]})):
        with pytest.raises(ConfigError) as err:
            build()
        assert hint in str(err.value) and "has value" in str(err.value) and "allowed:" in str(err.value)
    path = tmp_path / "p.yaml"
    path.write_text(params_text({"lr": "1e-3"}))
    with pytest.raises(ConfigError) as err:
        load_params(path, stub_notebooks(tmp_path))
    assert f"{path}: key 'base.lr' has value '1e-3' of type str; allowed: a number > 0 {hint}" == str(err.value)
