"""Config validation: the whole config checked against the JSON Schema (every violation named by its
dotted key), then the cross-key rules the schema cannot express; and the helpers the rules use on
sections (canonical key order, merging overrides, offsetting seeds by the run seed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# pipeline/config/validation.py -> the repository root is three folders up
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The config breaks the schema; the message names each offending key."""


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return ".".join([*parts, ",".join(extra)]) if extra else ".".join(parts) or "<root>"
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return ".".join([*parts, ",".join(missing)])
    return ".".join(parts) or "<root>"


def validate_config(config: Mapping[str, Any], schema_path: Path = SCHEMA_PATH) -> None:
    """Raise :class:`ConfigError` listing every schema violation, each with its dotted key."""
    schema = yaml.safe_load(schema_path.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for err in errors:
            key = _key_path(err)
            if err.validator == "additionalProperties":
                lines.append(
                    f"  {key}: unknown key (allowed here: {', '.join(sorted(err.schema.get('properties', {})))})"
                )
            elif err.validator == "required":
                lines.append(f"  {key}: required key is missing")
            else:
                lines.append(f"  {key}: {err.message}")
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    names = [variant["name"] for variant in config["experiment"].get("variants") or []]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"invalid config:\n  experiment.variants: the name(s) {', '.join(repeated)} appear twice")
    if "dev" in (config["experiment"].get("eval_splits") or []) and not config["problems"].get("n_dev"):
        raise ConfigError("invalid config:\n  problems.n_dev: experiment.eval_splits has dev, so n_dev must be >= 1")
    references = {"solver": config["solver"]}
    if config["critic"]["backend"] == "llm":
        references["critic.model"] = config["critic"].get("model", "")
    selection = config.get("select_problems") or {}
    if selection.get("enabled") and config["critic"]["backend"] == "llm" and "critic" not in selection:
        raise ConfigError(
            "invalid config:\n  select_problems.critic: required when select_problems.enabled and critic.backend is llm"
        )
    for key, name in references.items():
        if name not in config["models"]:
            known = ", ".join(config["models"])
            raise ConfigError(f"invalid config:\n  {key}: {name!r} is not a key of models ({known})")


def canonical(section: Any) -> Any:
    """A config section with dict keys sorted recursively.

    Snakemake compares ``params`` by their repr, so key order would otherwise count as a change:
    reordering keys in a YAML file must not rerun a stage.
    """
    if isinstance(section, Mapping):
        return {key: canonical(section[key]) for key in sorted(section)}
    if isinstance(section, list | tuple):
        return [canonical(item) for item in section]
    return section


def merged(section: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``section`` with ``overrides`` applied; nested mappings merge key by key."""
    out = dict(section)
    for key, value in overrides.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = merged(out[key], value) if both else value
    return out


def with_run_seed(section: Any, run_seed: int) -> Any:
    """A config section with every ``seed`` key (at any depth) offset by the run's seed.

    Run seed 0 leaves the section as configured, so a one-seed experiment keeps its params.
    """
    if isinstance(section, Mapping):
        return {
            key: value + run_seed if key == "seed" else with_run_seed(value, run_seed) for key, value in section.items()
        }
    return section
