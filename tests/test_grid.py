import pytest

from samlib.config import ConfigError
from samlib.study.grid import cell_configs, expand_grid
from samlib.study.layout import run_dirname


def test_expand_grid_is_the_cartesian_product_in_sorted_key_order():
    points = expand_grid({"rho": [0.05, 0.1], "m": [None, 32], "sam": ["sam"]})
    assert len(points) == 4
    assert points[0] == {"m": None, "rho": 0.05, "sam": "sam"}
    assert {(p["m"], p["rho"]) for p in points} == {(None, 0.05), (None, 0.1), (32, 0.05), (32, 0.1)}
    assert expand_grid({}) == [{}] and expand_grid(None) == [{}]


def test_run_dirname_is_made_from_parameters_and_unique():
    assert run_dirname({}, 3) == "seed=3"
    assert run_dirname({"rho": 0.05, "m": None}, 0) == "m=none,rho=0.05,seed=0"
    names = {run_dirname(p, s) for p in expand_grid({"lr": [0.1, 0.01], "optimizer": ["sgd", "adam"]}) for s in (0, 1)}
    assert len(names) == 8


def test_cell_configs_set_batch_size_seed_and_run_dir(tmp_path):
    configs = cell_configs({"epochs": 1, "sam": "sam"}, 256, [0, 1], {"rho": [0.0, 0.1]}, tmp_path)
    assert len(configs) == 4
    assert {(c.rho, c.seed) for c in configs} == {(0.0, 0), (0.0, 1), (0.1, 0), (0.1, 1)}
    assert all(c.batch_size == 256 and c.epochs == 1 for c in configs)
    assert len({c.run_dir for c in configs}) == 4
    assert all(c.run_dir.startswith(str(tmp_path)) for c in configs)


def test_cell_configs_reject_bad_grid_values(tmp_path):
    with pytest.raises(ConfigError, match="'rho'"):
        cell_configs({}, 32, [0], {"rho": [-1.0]}, tmp_path)


def test_a_list_of_grids_is_their_union(tmp_path):
    grid = [{"m": [None, 32]}, {"sam": ["looksam"]}]
    assert expand_grid(grid) == [{"m": None}, {"m": 32}, {"sam": "looksam"}]
    configs = cell_configs({"sam": "sam"}, 512, [0], grid, tmp_path)
    assert [(c.sam, c.m) for c in configs] == [("sam", None), ("sam", 32), ("looksam", None)]
    assert len({c.run_dir for c in configs}) == 3
