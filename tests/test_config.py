"""Every config error path: one ConfigError naming the key, the value and what is allowed."""

import dataclasses
import math

import pytest

from samlib.config import Config, ConfigError, load_yaml_mapping, parse_override


def test_defaults_are_valid_and_frozen():
    config = Config.from_dict({})
    assert config.dataset == "mnist5k" and config.sam == "none"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]


def test_the_newer_keys_are_off_by_default_and_keep_their_values():
    config = Config()
    assert (config.warmup_steps, config.match_tolerance, config.record_predictions) == (None, None, False)
    given = Config.from_dict({"warmup_steps": 0, "match_tolerance": 1, "record_predictions": True})
    assert (given.warmup_steps, given.match_tolerance, given.record_predictions) == (0, 1.0, True)
    assert isinstance(given.match_tolerance, float) and Config.from_dict(given.to_dict()) == given


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("optimizer", "rmsprop", "sgd, momentum, adam, adamw, lars, lamb"),
        ("lr_scaling", "cubic", "none, linear, sqrt"),
        ("sam", "gsam", "none, sam, asam"),
        ("strategy", "tpu", "auto, none, mirrored"),
        ("precision", "float16", "float32, mixed_float16, mixed_bfloat16"),
        ("dataset", "imagenet", "mnist5k, mnist"),
        ("batch_size", 0, ">= 1"),
        ("epochs", 0, ">= 1"),
        ("steps", 0, ">= 1"),
        ("target_loss", -0.1, ">= 0"),
        ("lr", 0.0, "> 0"),
        ("lr", math.inf, "> 0"),
        ("momentum", 1.0, "< 1"),
        ("weight_decay", -1e-4, ">= 0"),
        ("base_batch_size", -5, ">= 1"),
        ("warmup_epochs", -1.0, ">= 0"),
        ("warmup_steps", -1, ">= 0"),
        ("match_tolerance", 0.0, "> 0"),
        ("match_tolerance", -0.1, "> 0"),
        ("rho", -0.05, ">= 0"),
        ("m", 0, ">= 1"),
        ("looksam_k", 0, ">= 1"),
        ("dropout", 1.0, "< 1"),
        ("seed", -1, ">= 0"),
        ("verbose", 3, "<= 2"),
    ],
)
def test_out_of_range_values_name_key_value_and_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({key: value})
    message = str(err.value)
    assert repr(key) in message
    assert repr(value) in message or repr(float(value)) in message  # ints given for float keys become floats
    assert allowed in message


@pytest.mark.parametrize(
    "key, value",
    [("batch_size", 32.5), ("batch_size", "64"), ("batch_size", True), ("lr", "0.1"), ("sync_perturbation", 1), ("dataset", 5), ("m", 2.0), ("epochs", None),
     ("warmup_steps", 2.5), ("warmup_steps", True), ("match_tolerance", "0.1"), ("record_predictions", 1),
     ("record_predictions", None)],
)
def test_wrong_types_are_rejected(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'.*{type(value).__name__}|'{key}'.*None"):
        Config.from_dict({key: value})


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'batchsize'.*allowed keys: .*batch_size"):
        Config.from_dict({"batchsize": 32})


def test_ints_are_accepted_for_float_fields_and_optional_fields_take_none():
    config = Config.from_dict({"lr": 1, "m": None, "steps": None, "data_dir": None})
    assert isinstance(config.lr, float) and config.lr == 1.0


@pytest.mark.parametrize("rule, expected", [("none", 0.1), ("linear", 0.8), ("sqrt", 0.1 * math.sqrt(8))])
def test_learning_rate_scaling_rules(rule, expected):
    config = Config.from_dict({"lr": 0.1, "batch_size": 1024, "base_batch_size": 128, "lr_scaling": rule})
    assert config.scaled_lr == pytest.approx(expected)


def test_replace_validates():
    config = Config.from_dict({"sam": "sam", "rho": 0.1, "m": 16, "batch_size": 512})
    assert config.replace(m=None) == Config.from_dict({"sam": "sam", "rho": 0.1, "batch_size": 512})
    with pytest.raises(ConfigError, match="'rho'"):
        config.replace(rho=-1.0)


def test_yaml_loading_and_overrides(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("batch_size: 64\nsam: asam\n")
    assert Config.from_yaml(path, rho=0.5).sam == "asam"
    assert parse_override("m=null") == ("m", None) and parse_override("lr=0.1") == ("lr", 0.1)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("lr0.1")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml_mapping(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml_mapping(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml_mapping(tmp_path / "bad.yaml")


# ---------------------------------------------------------------------- sharpness settings
def test_sharpness_settings_defaults_and_json_form():
    from samlib.config import MEASURES, SharpnessSettings

    s = SharpnessSettings()
    assert s.to_dict() == {"subset": 1000, "seed": 0, "measures": ["keskar", "lambda_max", "sam"],
                           "epsilons": [1e-3], "max_iter": 10, "iters": 100, "tol": 1e-3, "samples": 20,
                           "subspace_dim": None, "rho": 0.05, "batch_size": 1000}
    assert SharpnessSettings.from_dict(s.to_dict()) == s  # round trip, as metrics.json stores it
    given = SharpnessSettings.from_dict({"measures": ["trace"], "epsilons": [1, 5.0e-4], "tol": 1, "rho": 0})
    assert given.to_dict()["epsilons"] == [1.0, 5e-4] and isinstance(given.to_dict()["tol"], float)
    assert set(MEASURES) == {"keskar", "lambda_max", "trace", "sam", "noise_scale"}
    assert s.replace(subset=0).subset == 0


@pytest.mark.parametrize("values,key", [
    ({"subsett": 64}, "sharpness.subsett"),
    ({"measures": ["sharpest"]}, "sharpness.measures"),
    ({"measures": "sam"}, "sharpness.measures"),
    ({"iters": 2.5}, "sharpness.iters"),
    ({"subset": -1}, "sharpness.subset"),
    ({"tol": "1e-3"}, "sharpness.tol"),
    ({"epsilons": [1e-3, 0]}, "sharpness.epsilons"),
    ({"subspace_dim": True}, "sharpness.subspace_dim"),
])
def test_sharpness_settings_reject_unknown_keys_measures_and_wrong_kinds(values, key):
    from samlib.config import SharpnessSettings

    with pytest.raises(ConfigError) as err:
        SharpnessSettings.from_dict(values)
    message = str(err.value)
    assert f"'{key}'" in message and repr(next(iter(values.values()))) in message and "allowed" in message
    with pytest.raises(ConfigError, match="'sharpness.notebooks.lr_scaling."):
        SharpnessSettings.from_dict(values, where="sharpness.notebooks.lr_scaling")
