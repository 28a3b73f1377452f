# One job per self-distillation arm x round; the arm names the context kind.
rule build_teacher_contexts:
    input:
        traces=sd_traces,
        critiques=sd_critiques,
        problems=problems_file("train"),
        model=f"resources/models/{config['solver']}",
    wildcard_constraints:
        condition=SD_CONDITION_PATTERN,
    output:
        "results/seed_{seed}/contexts/{condition}/round_{round}.parquet",
    params:
        cfg=section("contexts"),
        version=STAGE_VERSIONS["build_teacher_contexts"],
    log:
        "logs/build_teacher_contexts/seed_{seed}/{condition}/round_{round}.log",
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/build_teacher_contexts.py"
