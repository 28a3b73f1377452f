# Config validation, wildcard constraints and input functions. No logic beyond path lookup.
# Each rule's params carry its stage's config section plus its STAGE_VERSIONS entry: package
# code is not tracked by Snakemake, so a stage whose output changes bumps that number.
from pipeline.config import canonical, validate_config
from pipeline.versions import STAGE_VERSIONS

validate_config(config)

EXPERIMENT = config["experiment"]
SD_CONDITIONS = [c for c in EXPERIMENT["conditions"] if c != "grpo"]
if EXPERIMENT["ablations"]:
    SD_CONDITIONS += ["critique_full_quote", "critique_labels_only"]
# Arms with a self-teacher; each names its context kind.
SD_CONDITION_PATTERN = "reference|critique|critique_full_quote|critique_labels_only"
ROUNDS = EXPERIMENT["rounds"]
# Traces are sampled for rounds 0..R-1; each trains round r+1's student, up to round R.
TRACE_ROUNDS = list(range(ROUNDS))


wildcard_constraints:
    model=r"[A-Za-z0-9._-]+",
    condition=r"[a-z_]+",
    round=r"\d+",


def section(name):
    """One top-level config section, as a rule's params (key order does not count)."""
    return canonical(config[name])


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
    return f"results/students/{wildcards.condition}/round_{wildcards.round}"


def trace_conditions(round_index):
    """Trace jobs of a round: GRPO samples its own groups; round 0 of self-distillation is shared."""
    grpo = ["grpo"] if "grpo" in EXPERIMENT["conditions"] else []
    return grpo + (["shared"] if round_index == 0 and SD_CONDITIONS else SD_CONDITIONS)


def trace_source(wildcards):
    """Which traces job feeds a self-distillation arm's round: round 0 is the shared one."""
    return "shared" if int(wildcards.round) == 0 else wildcards.condition


def sd_traces(wildcards):
    return f"results/traces/{trace_source(wildcards)}/round_{wildcards.round}.parquet"


def sd_critiques(wildcards):
    return f"results/critiques/{trace_source(wildcards)}/round_{wildcards.round}.parquet"


def teacher_model(wildcards):
    """The frozen initial solver, or this round's student (teacher.teacher: round_start)."""
    if config["teacher"]["teacher"] == "initial":
        return f"resources/models/{config['solver']}"
    return student_model(wildcards)


def critique_targets():
    """Every critique file the configured conditions and buildable rounds need."""
    return [
        f"results/critiques/{condition}/round_{r}.parquet" for r in TRACE_ROUNDS for condition in trace_conditions(r)
    ]


def previous_round(pattern):
    """An input function filling {prev} = {round} - 1 (and the other wildcards) into ``pattern``."""

    def expand_previous(wildcards):
        return pattern.format(**dict(wildcards.items()), prev=int(wildcards.round) - 1)

    return expand_previous


def previous_sd_traces(wildcards):
    prev = int(wildcards.round) - 1
    source = "shared" if prev == 0 else wildcards.condition
    return f"results/traces/{source}/round_{prev}.parquet"


def previous_student(wildcards):
    """The student a training job starts from: the base solver for round 1."""
    prev = int(wildcards.round) - 1
    if prev == 0:
        return f"resources/models/{config['solver']}"
    condition = wildcards.get("condition", "grpo")  # train_grpo's paths name the arm literally
    return f"results/students/{condition}/round_{prev}"


def student_targets():
    """The last round's student of every arm (which pulls in every earlier stage)."""
    arms = SD_CONDITIONS + (["grpo"] if "grpo" in EXPERIMENT["conditions"] else [])
    return [f"results/students/{condition}/round_{ROUNDS}" for condition in arms]


def teacher_targets():
    """Teacher log-probs of every self-distillation arm for the buildable rounds."""
    return [
        f"results/teacher_logprobs/{condition}/round_{r}.parquet" for r in TRACE_ROUNDS for condition in SD_CONDITIONS
    ]
