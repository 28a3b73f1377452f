# Self-distillation of a solver from a frozen critic's feedback. Stages live in workflow/rules/,
# one file each; their logic lives in the `pipeline` package. See README.md.
from snakemake.utils import min_version

min_version("9.27")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare_models.smk"
include: "workflow/rules/prepare_problems.smk"
include: "workflow/rules/select_problems.smk"
include: "workflow/rules/generate_traces.smk"
include: "workflow/rules/query_critic.smk"
include: "workflow/rules/build_teacher_contexts.smk"
include: "workflow/rules/score_traces.smk"
include: "workflow/rules/precompute_teacher_logprobs.smk"
include: "workflow/rules/distill_student.smk"
include: "workflow/rules/train_grpo.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/check_premise.smk"
include: "workflow/rules/analyse_advantages.smk"
include: "workflow/rules/report.smk"


# The report, and every checkpoint by name: Snakemake skips a missing intermediate file whose
# consumers are up to date, so a student lost to a killed rerun would otherwise never be rebuilt.
rule all:
    default_target: True
    input:
        rules.report.output,
        student_targets(),
