import copy

import pytest
import yaml

from pipeline.config import ConfigError, ModelSpec, ProblemsConfig, from_params, validate_config, with_run_seed
from tests.conftest import DEFAULT_CONFIG, SMOKE_CONFIG


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


@pytest.mark.parametrize("path", [DEFAULT_CONFIG, SMOKE_CONFIG], ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    validate_config(yaml.safe_load(path.read_text()))


def test_misspelled_key_is_rejected_by_name(config):
    config["problems"]["n_trian"] = 3
    with pytest.raises(ConfigError, match=r"problems\.n_trian: unknown key"):
        validate_config(config)


def test_misspelled_top_level_section_is_rejected_by_name(config):
    config["problem"] = config.pop("problems")
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert "problem: unknown key" in str(err.value)
    assert "problems: required key is missing" in str(err.value)


def test_bad_value_names_the_key(config):
    config["problems"]["arith"]["ops"] = ["+", "^"]
    with pytest.raises(ConfigError, match=r"problems\.arith\.ops\.1: '\^' is not one of"):
        validate_config(config)


def test_solver_must_name_a_model(config):
    bad = copy.deepcopy(config)
    bad["solver"] = "nope"
    with pytest.raises(ConfigError, match="solver: 'nope' is not a key of models"):
        validate_config(bad)


def test_every_schema_key_has_a_description():
    from pipeline.config import SCHEMA_PATH

    def walk(node, where):
        if isinstance(node, dict):
            if "type" in node or "enum" in node:
                assert "description" in node, f"schema node {where} has no description"
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(yaml.safe_load(SCHEMA_PATH.read_text()), "<root>")


def test_from_params_builds_nested_typed_config(config):
    cfg = from_params(ProblemsConfig, config["problems"])
    assert cfg.arith.ops == ("+", "-", "*", "/")
    assert isinstance(cfg.arith.ops, tuple)


def test_from_params_rejects_unknown_key_and_cross_field_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        from_params(ProblemsConfig, {"bogus": 1})
    with pytest.raises(ConfigError, match="needs the key 'package'"):
        from_params(ModelSpec, {"source": "pypi_gguf"})


def test_canonical_sorts_keys_so_reordering_is_not_a_change():
    from pipeline.config import canonical

    a = canonical({"b": 1, "a": {"d": [{"y": 1, "x": 2}], "c": 3}})
    b = canonical({"a": {"c": 3, "d": [{"x": 2, "y": 1}]}, "b": 1})
    assert repr(a) == repr(b)
    assert list(a) == ["a", "b"]


def test_run_seed_offsets_every_seed_key_and_seed_0_changes_nothing():
    section = {"seed": 3, "optim": {"seed": 5, "lr": 0.1}, "engine": {"backend": "vllm"}}
    assert with_run_seed(section, 0) == section
    assert with_run_seed(section, 2) == {"seed": 5, "optim": {"seed": 7, "lr": 0.1}, "engine": {"backend": "vllm"}}


def test_seeds_must_be_a_nonempty_list(config):
    config["experiment"]["seeds"] = []
    with pytest.raises(ConfigError, match="experiment.seeds"):
        validate_config(config)
