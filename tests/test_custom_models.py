"""Any model, any data (issue 23, item 4): the built-in BatchNorm ResNet (`samlib.models.build_resnet8`)
trained under SAM on each backend, a config's ``model``/``data`` naming a builder or loader of the
user's own (``package.module:function``), and study params that name them: planned, run, and a
missing module or function refused up front."""

from __future__ import annotations

import textwrap

import keras
import numpy as np
import pytest
import yaml

from samlib import io
from samlib.config import Config, ConfigError
from samlib.data import Data, load_data
from samlib.models import build_network, build_resnet8
from samlib.sam import SAM
from samlib.study import load_params, plan_cells
from samlib.study.cell import run_cell

USER_MODULE = '''
import keras
import numpy as np

from samlib.data import Data

def tiny_mlp(input_shape, num_classes, config):
    return keras.Sequential([keras.Input(shape=input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(8, activation="relu"), keras.layers.Dense(num_classes)],
                            name="tiny_mlp")

def not_a_model(input_shape, num_classes, config):
    return "a string"

def blobs():
    rng = np.random.default_rng(0)
    y = np.arange(240) % 3
    x = rng.normal(size=(240, 4)).astype("float32") + y[:, None]
    return x[:200], y[:200], x[200:], y[200:]
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``usermods.py`` (a model builder and a data loader of "the user's own") on sys.path."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "usermods.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    yield "usermods"


# ---------------------------------------------------------------------- resnet8
def test_resnet8_has_three_stages_of_one_residual_block_batchnorm_and_logits():
    net = build_resnet8((28, 28, 1), 10)
    assert net.count_params() == 78_426
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds.count("Add") == 3 and kinds.count("BatchNormalization") == 9
    assert kinds[-2:] == ["GlobalAveragePooling2D", "Dense"] and net.layers[-1].activation is keras.activations.linear
    assert keras.ops.convert_to_numpy(net(np.zeros((2, 28, 28, 1), "float32"))).shape == (2, 10)


def test_resnet8_trains_under_sam_and_updates_weights_and_batchnorm_statistics():
    """Three SAM steps with fit on tiny random data (on whichever backend this process runs)."""
    keras.utils.set_random_seed(0)
    net = build_resnet8((12, 12, 3), 4)
    model = SAM(net, rho=0.05)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((24, 12, 12, 3), dtype="float32"), rng.integers(0, 4, 24)
    trainable = [keras.ops.convert_to_numpy(w).copy() for w in net.trainable_weights]
    bn = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    moving = [keras.ops.convert_to_numpy(v).copy() for layer in bn for v in (layer.moving_mean, layer.moving_variance)]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 3
    assert np.isfinite(history.history["loss"]).all()
    after = [keras.ops.convert_to_numpy(w) for w in net.trainable_weights]
    assert all(not np.allclose(a, b) for a, b in zip(trainable, after))  # every kernel, gamma and beta moved
    moved = [keras.ops.convert_to_numpy(v) for layer in bn for v in (layer.moving_mean, layer.moving_variance)]
    assert all(not np.allclose(a, b) for a, b in zip(moving, moved))  # every BN layer's statistics too


# ---------------------------------------------------------------------- references in a config
def test_a_config_names_a_builder_and_a_loader_of_its_own(user_module):
    config = Config(model=f"{user_module}:tiny_mlp", data=f"{user_module}:blobs", val_fraction=0.1)
    assert config.to_dict()["model"] == "usermods:tiny_mlp" and config.to_dict()["data"] == "usermods:blobs"
    data = load_data(config)
    assert isinstance(data, Data) and data.input_shape == (4,) and data.num_classes == 3
    assert len(data.x_train) + len(data.x_val) == 200 and data.x_train.dtype == np.float32
    net = build_network(config, data)
    assert net.name == "tiny_mlp" and net.output_shape == (None, 3)
    with pytest.raises(TypeError, match="not_a_model"):
        build_network(config.replace(model=f"{user_module}:not_a_model"), data)


def test_defaults_leave_config_json_as_it_was():
    assert "model" not in Config().to_dict() and "data" not in Config().to_dict()
    assert Config(model="cnn").to_dict() == Config().to_dict()
    assert Config(model="resnet8").to_dict()["model"] == "resnet8"


@pytest.mark.parametrize("key,value,named", [
    ("model", "nosuch_module_xyz:build", "'nosuch_module_xyz'"),
    ("model", "samlib.models:nosuch", "'nosuch'"),
    ("model", "resnet9", "'package.module:function'"),
    ("data", "nosuch_module_xyz:load", "'nosuch_module_xyz'"),
    ("data", "samlib.data:nosuch", "'nosuch'"),
])
def test_a_reference_that_does_not_resolve_is_refused_naming_it(key, value, named):
    with pytest.raises(ConfigError, match=f"config key '{key}' has value '{value}'") as err:
        Config(**{key: value})
    assert named in str(err.value)


# ---------------------------------------------------------------------- studies
def _study(tmp_path, base, batch_sizes=(32,)):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir(exist_ok=True)
    for name in ("cells", "summary"):
        (nbdir / f"{name}.ipynb").write_text("{}")  # load_params only checks that they exist
    params = {"study": "own", "seeds": [0], "base": base, "sharpness": {"subset": 32, "measures": ["sam"]},
              "notebooks": {"cells": {"batch_sizes": list(batch_sizes)}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return load_params(path, nbdir)


def _run_only_cell(params, out):
    (cell,) = plan_cells(params, out)
    p = cell.parameters
    runs = run_cell(p["run_root"], p["batch_size"], p["seeds"], p["base"], p["grid"], p["sharpness"], log=None)
    assert list(runs["action"]) == ["trained+measured"]
    return cell, io.read_json(f"{runs['run_dir'].iloc[0]}/metrics.json"), io.read_json(f"{runs['run_dir'].iloc[0]}/config.json")


def test_a_study_naming_resnet8_plans_and_runs(tmp_path):
    params = _study(tmp_path, {"dataset": "mnist5k", "model": "resnet8", "steps": 2, "sam": "sam", "verbose": 0,
                               "train_subset": 400})
    cell, metrics, config = _run_only_cell(params, tmp_path / "out")
    assert [c.model for c in cell.configs] == ["resnet8"] and config["model"] == "resnet8"
    assert metrics["status"] == "ok" and metrics["steps"] == 2 and metrics["sharpness_status"] == "ok"


def test_a_study_naming_a_builder_and_loader_of_its_own_plans_and_runs(tmp_path, user_module):
    params = _study(tmp_path, {"model": "usermods:tiny_mlp", "data": "usermods:blobs", "steps": 3, "verbose": 0},
                    batch_sizes=(16,))
    cell, metrics, config = _run_only_cell(params, tmp_path / "out")
    assert config["model"] == "usermods:tiny_mlp" and config["data"] == "usermods:blobs"
    assert metrics["status"] == "ok" and metrics["steps"] == 3 and metrics["n_train"] == 176


def test_a_batch_size_above_a_loaders_training_examples_is_refused(tmp_path, user_module):
    from samlib.study import ParamsError

    with pytest.raises(ParamsError, match=r"'notebooks.cells.batch_sizes' has value 512.*usermods:blobs"):
        _study(tmp_path, {"data": "usermods:blobs"}, batch_sizes=(512,))


def test_a_notebook_kernel_imports_the_users_module_as_the_runner_does(tmp_path, user_module):
    # the runner validated 'usermods:tiny_mlp' through its own sys.path (the folder `python -m samlib
    # study` ran in, or PYTHONPATH); the notebook's kernel is another process, in the notebook's folder
    import nbformat

    from samlib.study.executors import execute_notebook_task, notebook_task

    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import usermods\nassert callable(usermods.tiny_mlp)")]
    nbformat.write(nb, nbdir / "own.ipynb")
    task = notebook_task("own", nbdir / "own.ipynb", tmp_path / "out.ipynb", {"x": 2}, tmp_path / "status.json",
                         tmp_path / "kernel.log", tmp_path, {})
    status = execute_notebook_task(task)
    assert status["status"] == "ok", status["error"]
