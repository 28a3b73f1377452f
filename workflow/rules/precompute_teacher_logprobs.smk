rule precompute_teacher_logprobs:
    input:
        contexts=CONTEXTS,
        traces=sd_traces,
        critiques=sd_critiques,
        student_scores=sd_trace_scores,
        model=teacher_model,
    output:
        TEACHER_LOGPROBS,
    log:
        "logs/precompute_teacher_logprobs/seed_{seed}/{condition}/round_{round}.log",
    benchmark:
        "benchmarks/precompute_teacher_logprobs/seed_{seed}/{condition}/round_{round}.tsv"
    wildcard_constraints:
        condition=SD_CONDITION_PATTERN,
    conda:
        "../../envs/pipeline.yaml"
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=1,
    params:
        cfg=section("teacher"),
        version=STAGE_VERSIONS["precompute_teacher_logprobs"],
    script:
        "../scripts/precompute_teacher_logprobs.py"
