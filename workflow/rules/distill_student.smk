# Round r's student + its stored teacher log-probs -> round r+1's student (one job per arm x round).
# Params: the distill section with the arm's variant overrides (experiment.variants).
rule distill_student:
    input:
        teacher_logprobs=previous_teacher_logprobs,
        traces=previous_sd_traces,
        student=previous_student,
    output:
        model=directory(STUDENT),
        train_log=TRAIN_LOG,
    log:
        "logs/distill_student/seed_{seed}/{condition}/round_{round}.log",
    benchmark:
        "benchmarks/distill_student/seed_{seed}/{condition}/round_{round}.tsv"
    wildcard_constraints:
        condition=SD_CONDITION_PATTERN,
    conda:
        "../../envs/pipeline.yaml"
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=1,  # more (profile or --set-resources) runs the stage under torchrun
    params:
        cfg=distill_section,
        version=STAGE_VERSIONS["distill_student"],
    script:
        "../scripts/distill_student.py"
