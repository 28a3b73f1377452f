"""Output versions of the stages, passed to each rule's params.

Snakemake reruns a job when its params change, but it does not track the code of this package.
Bump a stage's number when its code changes what it writes for the same config; that stage and
what depends on it rerun. Kept apart from the stage modules so that parsing the Snakefile imports
no torch.
"""

STAGE_VERSIONS = {
    "prepare_model": 2,
    "prepare_problems": 2,
    "select_problems": 2,
    "generate_traces": 3,
    "query_critic": 3,
    "build_teacher_contexts": 4,
    "score_traces": 1,
    "precompute_teacher_logprobs": 3,
    "distill_student": 5,
    "train_grpo": 3,
    "analyse_advantages": 1,
    "evaluate": 4,
    "check_premise": 3,
    "report": 4,
}
