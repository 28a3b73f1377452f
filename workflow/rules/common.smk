# Config validation, wildcard constraints and input functions. No logic beyond path lookup.
# Each rule's params carry its stage's config section plus its STAGE_VERSIONS entry: package
# code is not tracked by Snakemake, so a stage whose output changes bumps that number.
import re

from pipeline.config import canonical, merged, validate_config, with_run_seed
from pipeline.engines.run_server import register_run, serve_settings, stop_run_server
from pipeline.versions import STAGE_VERSIONS

validate_config(config)
# The run's own vLLM server on the solver, when an engine section says server_url: auto (else None).
SERVE = serve_settings(config)


onstart:
    if SERVE is not None:
        register_run(SERVE)  # the first job that needs the server starts it


onsuccess:
    stop_run_server()


onerror:
    stop_run_server()


EXPERIMENT = config["experiment"]
# Every context kind a self-teacher can see; the analysis compares all of them.
CONTEXT_KINDS = ["reference", "critique", "critique_full_quote", "critique_labels_only"]
# Variant arms: a context kind with some distill options overridden (e.g. a token mask).
VARIANTS = {variant["name"]: variant for variant in EXPERIMENT.get("variants") or []}
# Arms with a self-teacher: main kinds, the ablation kinds, then the variants.
SD_CONDITIONS = [c for c in EXPERIMENT["conditions"] if c != "grpo"]
if EXPERIMENT["ablations"]:
    SD_CONDITIONS += ["critique_full_quote", "critique_labels_only"]
SD_CONDITIONS += list(VARIANTS)
# The values {condition} takes in self-distillation jobs (a context kind, or a variant arm).
SD_CONDITION_PATTERN = "|".join(CONTEXT_KINDS + list(VARIANTS))
ROUNDS = EXPERIMENT["rounds"]
# The problem splits every checkpoint is evaluated on: eval (judged) and/or dev (chosen on).
EVAL_SPLITS = EXPERIMENT.get("eval_splits") or ["eval"]
# Each run seed is a whole experiment under results/seed_{seed}/; the report aggregates them.
SEEDS = EXPERIMENT["seeds"]
# The analysis and the premise check look at the first seed's shared round-0 traces.
ANALYSIS_SEED = SEEDS[0]
# Traces are sampled for rounds 0..R-1; each trains round r+1's student, up to round R.
TRACE_ROUNDS = list(range(ROUNDS))
# select_problems (optional): the later stages read the selected problems instead of the candidates.
SELECTION = config.get("select_problems", {"enabled": False})
SELECT = SELECTION["enabled"]

# The path layout, written once: one template per artifact kind. Rules name these in input: and
# output:, input functions fill them in (fill); moving an artifact is a one-line change here. Logs
# and benchmarks follow the rule's name and stay in the rules.
MODEL = "resources/models/{model}"
PROBLEMS = "results/problems/{split}.parquet"  # prepare_problems: train, eval, dev
REJECTS = "results/problems/rejects.parquet"
SELECTED_PROBLEMS = "results/problems/selection/{split}.parquet"  # select_problems: train, eval, dev
SELECTION_SAMPLES = "results/problems/selection/solver_samples.parquet"
CRITIC_ANSWERS = "results/problems/selection/critic_answers.parquet"
DROPPED = "results/problems/selection/dropped.parquet"
SELECTION_SUMMARY = "results/problems/selection/summary.json"
TRACES = "results/seed_{seed}/traces/{condition}/round_{round}.parquet"
CRITIQUES = "results/seed_{seed}/critiques/{condition}/round_{round}.parquet"
CONTEXTS = "results/seed_{seed}/contexts/{condition}/round_{round}.parquet"
TRACE_SCORES = "results/seed_{seed}/trace_scores/{condition}/round_{round}.parquet"
TEACHER_LOGPROBS = "results/seed_{seed}/teacher_logprobs/{condition}/round_{round}.parquet"
STUDENT = "results/seed_{seed}/students/{condition}/round_{round}"
TRAIN_LOG = "results/seed_{seed}/train_logs/{condition}/round_{round}.parquet"
EVAL_SAMPLES = "results/seed_{seed}/{split}/{condition}/round_{round}.parquet"
EVAL_SUMMARY = "results/seed_{seed}/{split}/{condition}/round_{round}.json"
PREMISE_SAMPLES = "results/seed_{seed}/premise/samples.parquet"
PREMISE_ADVANTAGES = "results/seed_{seed}/premise/advantages.parquet"
PREMISE_TABLE = "results/seed_{seed}/premise/table.json"
ADVANTAGE_TOKENS = "results/seed_{seed}/advantages/tokens.parquet"
ADVANTAGE_AGGREGATES = "results/seed_{seed}/advantages/aggregates.parquet"
ADVANTAGE_FIGURE_HTML = "results/seed_{seed}/advantages/figure.html"
ADVANTAGE_FIGURE_PNG = "results/seed_{seed}/advantages/figure.png"
REPORT = "results/report.html"


def fill(template, **values):
    """``template`` with the given wildcards filled in; the others stay wildcards (``{name}``) for Snakemake."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m[1]]) if m[1] in values else m[0], template)


# The base solver's folder, which most stages read.
SOLVER = fill(MODEL, model=config["solver"])


wildcard_constraints:
    split=r"eval|dev",
    model=r"[A-Za-z0-9._-]+",
    condition=r"[a-z_]+",
    seed=r"\d+",
    round=r"\d+",


def section(name):
    """One top-level config section, as a rule's params (key order does not count)."""
    return canonical(config[name])


def seeded_section(name):
    """A section whose seeds are offset by the run's {seed}, as a params input function."""
    return lambda wildcards: with_run_seed(section(name), int(wildcards.seed))


def model_spec(wildcards):
    """The `models` entry that prepare_models builds for one {model}."""
    return canonical(config["models"][wildcards.model])


def critic_rewrites(wildcards):
    """Whether a traces file needs the critic's rewrite: GRPO uses the reward, the reference arm the reference."""
    return wildcards.condition not in ("grpo", "reference")


def critic_model_dirs():
    """The critic model's folder when the critic is an LLM; none for the oracle."""
    critic = config["critic"]
    return [fill(MODEL, model=critic["model"])] if critic["backend"] == "llm" else []


def used_model_dirs():
    """Folders of the models some stage uses (only these are prepared)."""
    return [SOLVER, *critic_model_dirs()]


def student_model(wildcards):
    """The model that samples a round's traces: the base solver at round 0."""
    if int(wildcards.round) == 0:
        return SOLVER
    if wildcards.condition == "shared":
        raise ValueError("condition 'shared' exists only for round 0")
    return fill(STUDENT, seed=wildcards.seed, condition=wildcards.condition, round=wildcards.round)


def trace_conditions(round_index):
    """Trace jobs of a round: GRPO samples its own groups; round 0 of self-distillation is shared."""
    grpo = ["grpo"] if "grpo" in EXPERIMENT["conditions"] else []
    return grpo + (["shared"] if round_index == 0 and SD_CONDITIONS else SD_CONDITIONS)


def trace_source(wildcards):
    """Which traces job feeds a self-distillation arm's round: round 0 is the shared one."""
    return "shared" if int(wildcards.round) == 0 else wildcards.condition


def context_kind(arm):
    """The context kind an arm's teacher sees: a variant's, or the arm's own name."""
    return VARIANTS[arm]["context"] if arm in VARIANTS else arm


def teacher_source(arm, round_index):
    """Whose contexts and teacher log-probs a round uses: round 0's are shared by the arms of a kind,
    except a variant that changes the teacher's wording, which has its own."""
    shared = int(round_index) == 0 and "contexts" not in VARIANTS.get(arm, {})
    return context_kind(arm) if shared else arm


def contexts_section(wildcards):
    """The contexts section with the arm's variant overrides (a variant may change the wording)."""
    overrides = VARIANTS.get(wildcards.condition, {}).get("contexts", {})
    return canonical(merged(config["contexts"], overrides))


def arm_kind(wildcards):
    return context_kind(wildcards.condition)


def distill_section(wildcards):
    """The distill section with the arm's variant overrides and the run's seed offset."""
    overrides = VARIANTS.get(wildcards.condition, {}).get("distill", {})
    return with_run_seed(canonical(merged(config["distill"], overrides)), int(wildcards.seed))


def previous_teacher_logprobs(wildcards):
    """The stored teacher log-probs round {round}'s student is distilled on (round - 1's)."""
    prev = int(wildcards.round) - 1
    source = teacher_source(wildcards.condition, prev)
    return fill(TEACHER_LOGPROBS, seed=wildcards.seed, condition=source, round=prev)


def sd_traces(wildcards):
    return fill(TRACES, seed=wildcards.seed, condition=trace_source(wildcards), round=wildcards.round)


def sd_critiques(wildcards):
    return fill(CRITIQUES, seed=wildcards.seed, condition=trace_source(wildcards), round=wildcards.round)


def sd_trace_scores(wildcards):
    return fill(TRACE_SCORES, seed=wildcards.seed, condition=trace_source(wildcards), round=wildcards.round)


def teacher_model(wildcards):
    """The frozen initial solver, or this round's student (teacher.teacher: round_start)."""
    if config["teacher"]["teacher"] == "initial":
        return SOLVER
    return student_model(wildcards)


def critique_targets(seeds=None):
    """Every critique file the configured conditions and buildable rounds need (of ``seeds``, default all)."""
    return [
        fill(CRITIQUES, seed=seed, condition=condition, round=r)
        for seed in seeds or SEEDS
        for r in TRACE_ROUNDS
        for condition in trace_conditions(r)
    ]


def previous_round(pattern):
    """An input function filling {prev} = {round} - 1 (and the other wildcards) into ``pattern``."""

    def expand_previous(wildcards):
        return pattern.format(**dict(wildcards.items()), prev=int(wildcards.round) - 1)

    return expand_previous


def previous_sd_traces(wildcards):
    prev = int(wildcards.round) - 1
    source = "shared" if prev == 0 else wildcards.condition
    return fill(TRACES, seed=wildcards.seed, condition=source, round=prev)


def previous_student(wildcards):
    """The student a training job starts from: the base solver for round 1."""
    prev = int(wildcards.round) - 1
    if prev == 0:
        return SOLVER
    condition = wildcards.get("condition", "grpo")  # train_grpo's paths name the arm literally
    return fill(STUDENT, seed=wildcards.seed, condition=condition, round=prev)


def eval_model(wildcards):
    """The checkpoint an evaluate job samples: the base solver, or an arm's student of a round."""
    if wildcards.condition == "base":
        if int(wildcards.round) != 0:
            raise ValueError("condition 'base' exists only for round 0")
        return SOLVER
    if int(wildcards.round) == 0:
        raise ValueError(f"round 0 of {wildcards.condition} is the base solver: evaluate it as base/round_0")
    return fill(STUDENT, seed=wildcards.seed, condition=wildcards.condition, round=wildcards.round)


def arms():
    """Every arm this config trains: the self-distillation conditions, then grpo."""
    return SD_CONDITIONS + (["grpo"] if "grpo" in EXPERIMENT["conditions"] else [])


def eval_keys(split="eval"):
    """(seed, condition, round) of every checkpoint evaluated on a split: each arm's rounds 1..R per
    seed, and the base solver once (under the first seed: it is the same model in every seed)."""
    if split not in EVAL_SPLITS:
        return []
    base = [(SEEDS[0], "base", 0)]
    return base + [(seed, arm, r) for seed in SEEDS for arm in arms() for r in range(1, ROUNDS + 1)]


def eval_targets(split="eval"):
    """Summary JSON of every checkpoint on a split (in eval_keys(split) order)."""
    return [fill(EVAL_SUMMARY, seed=seed, split=split, condition=c, round=r) for seed, c, r in eval_keys(split)]


def eval_samples(split="eval"):
    """The samples Parquet beside each of eval_targets(split)."""
    return [fill(EVAL_SAMPLES, seed=seed, split=split, condition=c, round=r) for seed, c, r in eval_keys(split)]


def train_log_keys():
    """(seed, arm, round) of every training job."""
    return [[seed, arm, r] for seed in SEEDS for arm in arms() for r in range(1, ROUNDS + 1)]


def train_log_targets():
    """Training log of every arm's every round, per seed (in train_log_keys() order)."""
    return [fill(TRAIN_LOG, seed=seed, condition=arm, round=r) for seed, arm, r in train_log_keys()]


def student_targets():
    """Every arm's student of every round, per seed: `rule all` asks for each, so a missing one is rebuilt."""
    return [fill(STUDENT, seed=seed, condition=arm, round=r) for seed, arm, r in train_log_keys()]


def problems_file(split):
    """The problems a stage reads: select_problems' kept ones when it is on, else prepare_problems'."""
    return fill(SELECTED_PROBLEMS if SELECT else PROBLEMS, split=split)


def split_problems(wildcards):
    """The problems of an evaluate job's {split} (eval or dev)."""
    return problems_file(wildcards.split)


def selection_subsection(name):
    """One subsection of select_problems (solver, critic, filters), as a rule's params."""
    return canonical(SELECTION.get(name) or {})


def selection_critic_answers():
    """The critic's own answers to the candidates: needed only for an LLM critic (the oracle solves arith)."""
    return [CRITIC_ANSWERS] if config["critic"]["backend"] == "llm" else []


def selection_summaries():
    """select_problems' summary for the report, when the stage is on."""
    return [SELECTION_SUMMARY] if SELECT else []


def critic_gpus(wildcards=None):
    """Devices of a job that runs the critic model: its engine's tensor-parallel size (none for the oracle).

    query_critic passes its wildcards: traces that need no rewrite call no critic.
    """
    critic = config["critic"]
    if critic["backend"] != "llm" or (wildcards is not None and not critic_rewrites(wildcards)):
        return 0
    return critic.get("llm", {}).get("engine", {}).get("tensor_parallel_size", 1)


def selection_critic_gpus(wildcards=None):
    """Devices of select_problems_critic: the tensor-parallel size of its engine."""
    return (SELECTION.get("critic") or {}).get("engine", {}).get("tensor_parallel_size", 1)
