"""One source for every default: the dataclasses, the schema and config/config.yaml agree.

Walked generically, no key listed by hand. The sections come from the rule scripts: every
``from_params(Class, ..., where="section")`` in ``workflow/scripts`` names a section of the config
and the dataclass built from it (the trainers': ``pipeline.launch.STAGES``). Then, for each section and each dataclass nested in it:

- **yaml = dataclass**: a value that config/config.yaml sets equals the dataclass's default for it, so
  that a key left out of a section (or an object built in Python) means what the shipped file says.
  A dataclass used by several sections with different shipped values (``EngineConfig``: the
  samplers run eager in bf16, the scorers are ``transformers``; ``OptimConfig``: distill and GRPO
  batch differently) cannot hold both in its own defaults: there, a key on which the sections
  disagree keeps the class's neutral default (what a partial section falls back to; for
  ``EngineConfig`` the engine's own, right on a GPU), and the field that holds the section carries
  the section's shipped values as its default instead (``TracesConfig.engine``,
  ``GrpoConfig.optim``, ...). Keys on which every section agrees are the class's default.
  ``models.<name>`` is left out: each entry describes its own model.
- **schema = dataclass**: a schema node and its dataclass have the same keys, the same enums for
  ``Literal`` fields; every non-None default is valid under the schema, and any ``default:`` the
  schema carries equals the dataclass's.
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import jsonschema
import pytest
import yaml

from pipeline import config as config_module
from pipeline.config import SCHEMA_PATH, from_params
from pipeline.launch import STAGES
from tests.conftest import DEFAULT_CONFIG, ROOT

SHIPPED = yaml.safe_load(DEFAULT_CONFIG.read_text())
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())


def script_sections() -> dict[str, type]:
    """``{"section.path": dataclass}`` from the ``from_params`` calls of the rule scripts (``models.*``
    for an f-string ``where``) and the trainers' table in :mod:`pipeline.launch`."""
    found: dict[str, type] = {}
    for script in sorted((ROOT / "workflow" / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "from_params"):
                continue
            where = next((k.value for k in node.keywords if k.arg == "where"), None)
            if isinstance(where, ast.Constant):
                path = where.value
            elif isinstance(where, ast.JoinedStr):
                path = "".join(v.value if isinstance(v, ast.Constant) else "*" for v in where.values)
            else:
                continue
            found[path] = getattr(config_module, node.args[0].id)
    for _, config_name, section in STAGES.values():  # the trainers' scripts build theirs in pipeline.launch
        found[section] = getattr(config_module, config_name)
    return found


SECTIONS = script_sections()


def unwrap(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner
    return tp


def default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def lookup(node: Any, path: str) -> Any:
    """The value at a dotted path of the shipped config (``*``: every entry of a mapping)."""
    values = [node]
    for key in path.split("."):
        nxt = []
        for value in values:
            if not isinstance(value, Mapping):
                continue
            nxt += list(value.values()) if key == "*" else ([value[key]] if key in value else [])
        values = nxt
    return values


def occurrences() -> Iterator[tuple[str, type, Mapping[str, Any]]]:
    """(path, dataclass, shipped section) for every script section and every dataclass nested in one."""
    seen = set()

    def walk(path: str, cls: type, section: Mapping[str, Any]) -> Iterator[tuple[str, type, Mapping[str, Any]]]:
        if (path, cls) in seen:
            return
        seen.add((path, cls))
        yield path, cls, section
        hints = typing.get_type_hints(cls)
        for key, value in section.items():
            inner = unwrap(hints.get(key))
            if dataclasses.is_dataclass(inner) and isinstance(value, Mapping):
                yield from walk(f"{path}.{key}", inner, value)

    for path, cls in SECTIONS.items():
        for i, section in enumerate(lookup(SHIPPED, path)):
            yield from walk(path.replace("*", str(i)) if "*" in path else path, cls, section)


OCCURRENCES = list(occurrences())


def effective(cls: type, section: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of ``cls`` as a section makes it: its values, the class defaults for the rest."""
    built = from_params(cls, section)
    return {f.name: getattr(built, f.name) for f in dataclasses.fields(cls)}


def disagreeing_keys(cls: type) -> set[str]:
    """Keys of ``cls`` on which the shipped sections that use it differ."""
    values = [effective(cls, section) for _, c, section in OCCURRENCES if c is cls]
    return {key for key in (values[0] if values else {}) if len({repr(v[key]) for v in values}) > 1}


def test_the_walk_finds_every_stage_section():
    assert {"problems", "traces", "teacher", "distill", "grpo", "evaluate", "premise"} <= set(SECTIONS)
    paths = {path for path, _, _ in OCCURRENCES}
    assert {"distill.optim", "grpo.lora", "traces.engine", "premise.score_engine", "problems.arith"} <= paths


SECTION_OCCURRENCES = [o for o in OCCURRENCES if not o[0].startswith("models.")]  # each entry: its own model


@pytest.mark.parametrize(("path", "cls", "section"), SECTION_OCCURRENCES, ids=[o[0] for o in SECTION_OCCURRENCES])
def test_shipped_values_are_the_dataclass_defaults(path, cls, section):
    shared = disagreeing_keys(cls)
    built = effective(cls, section)
    wrong = []
    for field in dataclasses.fields(cls):
        default = default_of(field)
        if field.name not in section or default is dataclasses.MISSING or field.name in shared:
            continue
        if dataclasses.is_dataclass(default) or isinstance(section[field.name], Mapping):
            continue  # a nested section: its own occurrence compares it key by key, below as a whole
        if built[field.name] != default:
            wrong.append(f"{path}.{field.name}: config.yaml {section[field.name]!r}, {cls.__name__} {default!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("path", "cls", "section"), OCCURRENCES, ids=[o[0] for o in OCCURRENCES])
def test_a_nested_sections_default_is_the_shipped_section(path, cls, section):
    """E.g. ``TracesConfig().engine`` is the shipped ``traces.engine``, ``GrpoConfig().optim`` the shipped ``grpo.optim``."""
    hints = typing.get_type_hints(cls)
    wrong = []
    for field in dataclasses.fields(cls):
        inner = unwrap(hints[field.name])
        value = section.get(field.name)
        if not dataclasses.is_dataclass(inner) or not isinstance(value, Mapping):
            continue
        default = default_of(field)
        if default is dataclasses.MISSING:
            continue
        shipped = from_params(inner, value)
        if default != shipped:
            wrong.append(f"{path}.{field.name}: config.yaml builds {shipped}, the default is {default}")
    assert not wrong, "\n".join(wrong)


def schema_node(path: str) -> Mapping[str, Any]:
    """The schema of a dotted config path (``$ref``s followed; a number or ``*`` is a mapping entry)."""

    def resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            node = SCHEMA["$defs"][node["$ref"].rpartition("/")[2]]
        return node

    node = SCHEMA
    for key in path.split("."):
        node = resolve(node)
        properties = node.get("properties", {})
        node = properties[key] if key in properties else node["additionalProperties"]
    return resolve(node)


def as_json(value: Any) -> Any:
    """A default as YAML would write it; a None field of a nested dataclass is a key left out."""
    if dataclasses.is_dataclass(value):
        return {f.name: as_json(v) for f in dataclasses.fields(value) if (v := getattr(value, f.name)) is not None}
    if isinstance(value, tuple | list):
        return [as_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: as_json(v) for k, v in value.items()}
    return value


SCHEMA_CLASSES = sorted({(path, cls) for path, cls, _ in OCCURRENCES} | set(SECTIONS.items()), key=str)


@pytest.mark.parametrize(("path", "cls"), SCHEMA_CLASSES, ids=[p for p, _ in SCHEMA_CLASSES])
def test_schema_and_dataclass_have_the_same_keys_enums_and_defaults(path, cls):
    node = schema_node(path.replace("models.0", "models.*"))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(node["properties"]) == set(fields), f"{path}: schema keys vs {cls.__name__} fields"
    wrong = []
    for name, field in fields.items():
        prop = node["properties"][name]
        tp = unwrap(hints[name])
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        enum = prop.get("enum") or prop.get("items", {}).get("enum")
        if typing.get_origin(item) is Literal and set(typing.get_args(item)) != set(enum or ()):
            wrong.append(f"{path}.{name}: schema enum {enum}, {cls.__name__} {typing.get_args(item)}")
        default = default_of(field)
        if default is dataclasses.MISSING or default is None:
            continue
        if "default" in prop and prop["default"] != as_json(default):
            wrong.append(f"{path}.{name}: schema default {prop['default']!r}, {cls.__name__} {default!r}")
        validator = jsonschema.Draft202012Validator({**prop, "$defs": SCHEMA["$defs"]})
        for error in validator.iter_errors(as_json(default)):
            wrong.append(f"{path}.{name}: the default {default!r} breaks the schema: {error.message}")
    assert not wrong, "\n".join(wrong)
