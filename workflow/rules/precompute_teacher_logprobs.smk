rule precompute_teacher_logprobs:
    input:
        contexts="results/seed_{seed}/contexts/{condition}/round_{round}.parquet",
        traces=sd_traces,
        critiques=sd_critiques,
        student_scores=sd_trace_scores,
        model=teacher_model,
    wildcard_constraints:
        condition=SD_CONDITION_PATTERN,
    output:
        "results/seed_{seed}/teacher_logprobs/{condition}/round_{round}.parquet",
    params:
        cfg=section("teacher"),
        version=STAGE_VERSIONS["precompute_teacher_logprobs"],
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=1,
    log:
        "logs/precompute_teacher_logprobs/seed_{seed}/{condition}/round_{round}.log",
    benchmark:
        "benchmarks/precompute_teacher_logprobs/seed_{seed}/{condition}/round_{round}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/precompute_teacher_logprobs.py"
