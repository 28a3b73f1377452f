# One job per condition x round. Round 0 of the self-distillation conditions is the single
# {condition}=shared job, so every self-distillation arm starts from the very same traces.
rule generate_traces:
    input:
        problems=problems_file("train"),
        model=student_model,
    output:
        TRACES,
    log:
        "logs/generate_traces/seed_{seed}/{condition}/round_{round}.log",
    benchmark:
        "benchmarks/generate_traces/seed_{seed}/{condition}/round_{round}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=1,
    params:
        cfg=seeded_section("traces"),
        version=STAGE_VERSIONS["generate_traces"],
    script:
        "../scripts/generate_traces.py"
