"""Typed stage configs and validation of the whole config against the JSON Schema.

Snakemake validates the merged config with :func:`validate_config` before any job runs. Each rule
then passes only its own section through ``params:``; the stage script turns that section into one
of the frozen dataclasses with :func:`from_params`, whose ``__post_init__`` checks what the
schema cannot express. A dataclass default is the value config/config.yaml ships for that key, so
that a key left out means what the shipped file says (tests/test_config_defaults.py checks it against
the file and the schema).

The package, by concept: ``validation`` (the schema check and the section helpers), ``typed``
(:func:`from_params`), ``data`` and ``training`` (the typed sections). Every name is importable from
``pipeline.config`` as before.
"""

from __future__ import annotations

from pipeline.config.data import (
    ARITH_OPS,
    CPU_SAMPLER,
    EXACT_SCORER,
    FAST_SCORER,
    ArithOp,
    ArithSettings,
    ContextKind,
    ContextsConfig,
    ContextTemplates,
    CriticConfig,
    DatasetSource,
    EngineConfig,
    Layout,
    LayoutClosings,
    LLMCriticConfig,
    ModelSpec,
    ProblemsConfig,
    PromptConfig,
    TeacherConfig,
    TracesConfig,
)
from pipeline.config.training import (
    AdvantagesConfig,
    CriticSolveConfig,
    DistillConfig,
    EvaluateConfig,
    GrpoConfig,
    LoraSettings,
    OptimConfig,
    PremiseConfig,
    SelectionFilters,
    SelectionSamplingConfig,
)
from pipeline.config.typed import from_params
from pipeline.config.validation import SCHEMA_PATH, ConfigError, canonical, merged, validate_config, with_run_seed

__all__ = [
    "ARITH_OPS",
    "AdvantagesConfig",
    "ArithOp",
    "ArithSettings",
    "CPU_SAMPLER",
    "ConfigError",
    "ContextKind",
    "ContextTemplates",
    "ContextsConfig",
    "CriticConfig",
    "CriticSolveConfig",
    "DatasetSource",
    "DistillConfig",
    "EXACT_SCORER",
    "EngineConfig",
    "EvaluateConfig",
    "FAST_SCORER",
    "GrpoConfig",
    "LLMCriticConfig",
    "Layout",
    "LayoutClosings",
    "LoraSettings",
    "ModelSpec",
    "OptimConfig",
    "PremiseConfig",
    "ProblemsConfig",
    "PromptConfig",
    "SCHEMA_PATH",
    "SelectionFilters",
    "SelectionSamplingConfig",
    "TeacherConfig",
    "TracesConfig",
    "canonical",
    "from_params",
    "merged",
    "validate_config",
    "with_run_seed",
]
