# Config validation, wildcard constraints and input functions. No logic beyond path lookup.
# Each rule's params carry its stage's config section plus its STAGE_VERSIONS entry: package
# code is not tracked by Snakemake, so a stage whose output changes bumps that number.
from pipeline.config import canonical, validate_config, with_run_seed
from pipeline.versions import STAGE_VERSIONS

validate_config(config)

EXPERIMENT = config["experiment"]
SD_CONDITIONS = [c for c in EXPERIMENT["conditions"] if c != "grpo"]
if EXPERIMENT["ablations"]:
    SD_CONDITIONS += ["critique_full_quote", "critique_labels_only"]
# Arms with a self-teacher; each names its context kind.
SD_CONDITION_PATTERN = "reference|critique|critique_full_quote|critique_labels_only"
ROUNDS = EXPERIMENT["rounds"]
# Each run seed is a whole experiment under results/seed_{seed}/; the report aggregates them.
SEEDS = EXPERIMENT["seeds"]
# The analysis and the premise check look at the first seed's shared round-0 traces.
ANALYSIS_SEED = SEEDS[0]
# Every context kind a self-teacher can see; the analysis compares all of them.
CONTEXT_KINDS = ["reference", "critique", "critique_full_quote", "critique_labels_only"]
# The contexts the premise check re-solves with (besides none).
PREMISE_KINDS = ["reference", "critique"]
# Traces are sampled for rounds 0..R-1; each trains round r+1's student, up to round R.
TRACE_ROUNDS = list(range(ROUNDS))


wildcard_constraints:
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


def critic_model_dirs():
    """The critic model's folder when the critic is an LLM; none for the oracle."""
    critic = config["critic"]
    return [f"resources/models/{critic['model']}"] if critic["backend"] == "llm" else []


def used_model_dirs():
    """Folders of the models some stage uses (only these are prepared)."""
    return [f"resources/models/{config['solver']}", *critic_model_dirs()]


def student_model(wildcards):
    """The model that samples a round's traces: the base solver at round 0."""
    if int(wildcards.round) == 0:
        return f"resources/models/{config['solver']}"
    if wildcards.condition == "shared":
        raise ValueError("condition 'shared' exists only for round 0")
    return f"results/seed_{wildcards.seed}/students/{wildcards.condition}/round_{wildcards.round}"


def trace_conditions(round_index):
    """Trace jobs of a round: GRPO samples its own groups; round 0 of self-distillation is shared."""
    grpo = ["grpo"] if "grpo" in EXPERIMENT["conditions"] else []
    return grpo + (["shared"] if round_index == 0 and SD_CONDITIONS else SD_CONDITIONS)


def trace_source(wildcards):
    """Which traces job feeds a self-distillation arm's round: round 0 is the shared one."""
    return "shared" if int(wildcards.round) == 0 else wildcards.condition


def sd_traces(wildcards):
    return f"results/seed_{wildcards.seed}/traces/{trace_source(wildcards)}/round_{wildcards.round}.parquet"


def sd_critiques(wildcards):
    return f"results/seed_{wildcards.seed}/critiques/{trace_source(wildcards)}/round_{wildcards.round}.parquet"


def teacher_model(wildcards):
    """The frozen initial solver, or this round's student (teacher.teacher: round_start)."""
    if config["teacher"]["teacher"] == "initial":
        return f"resources/models/{config['solver']}"
    return student_model(wildcards)


def critique_targets(seeds=None):
    """Every critique file the configured conditions and buildable rounds need (of ``seeds``, default all)."""
    return [
        f"results/seed_{seed}/critiques/{condition}/round_{r}.parquet"
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
    return f"results/seed_{wildcards.seed}/traces/{source}/round_{prev}.parquet"


def previous_student(wildcards):
    """The student a training job starts from: the base solver for round 1."""
    prev = int(wildcards.round) - 1
    if prev == 0:
        return f"resources/models/{config['solver']}"
    condition = wildcards.get("condition", "grpo")  # train_grpo's paths name the arm literally
    return f"results/seed_{wildcards.seed}/students/{condition}/round_{prev}"


def eval_model(wildcards):
    """The checkpoint an evaluate job samples: the base solver, or an arm's student of a round."""
    if wildcards.condition == "base":
        if int(wildcards.round) != 0:
            raise ValueError("condition 'base' exists only for round 0")
        return f"resources/models/{config['solver']}"
    if int(wildcards.round) == 0:
        raise ValueError(f"round 0 of {wildcards.condition} is the base solver: evaluate it as base/round_0")
    return f"results/seed_{wildcards.seed}/students/{wildcards.condition}/round_{wildcards.round}"


def arms():
    """Every arm this config trains: the self-distillation conditions, then grpo."""
    return SD_CONDITIONS + (["grpo"] if "grpo" in EXPERIMENT["conditions"] else [])


def eval_targets():
    """Summary JSON of every checkpoint: the base solver and each arm's rounds 1..R, per seed."""
    return [
        f"results/seed_{seed}/eval/{condition}/round_{r}.json"
        for seed in SEEDS
        for condition, r in [("base", 0)] + [(arm, r) for arm in arms() for r in range(1, ROUNDS + 1)]
    ]


def train_log_keys():
    """(seed, arm, round) of every training job."""
    return [[seed, arm, r] for seed in SEEDS for arm in arms() for r in range(1, ROUNDS + 1)]


def train_log_targets():
    """Training log of every arm's every round, per seed (in train_log_keys() order)."""
    return [f"results/seed_{seed}/train_logs/{arm}/round_{r}.parquet" for seed, arm, r in train_log_keys()]


def student_targets():
    """Every arm's student of every round, per seed: `rule all` asks for each, so a missing one is rebuilt."""
    return [f"results/seed_{seed}/students/{arm}/round_{r}" for seed, arm, r in train_log_keys()]


def teacher_targets():
    """Teacher log-probs of every self-distillation arm for the buildable rounds."""
    return [
        f"results/seed_{seed}/teacher_logprobs/{condition}/round_{r}.parquet"
        for seed in SEEDS
        for r in TRACE_ROUNDS
        for condition in SD_CONDITIONS
    ]
