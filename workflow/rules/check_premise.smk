# The premise of self-distillation, measured once on the analysis seed's shared round-0 traces:
# the base solver re-solves each trace's problem with no context, the reference and the critique.
rule check_premise:
    input:
        traces="results/seed_{seed}/traces/shared/round_0.parquet",
        contexts=expand("results/seed_{{seed}}/contexts/{kind}/round_0.parquet", kind=PREMISE_KINDS),
        problems=problems_file("train"),
        model=f"resources/models/{config['solver']}",
    output:
        samples="results/seed_{seed}/premise/round_0.parquet",
        summary="results/seed_{seed}/premise/round_0.json",
    params:
        cfg=seeded_section("evaluate"),
        kinds=PREMISE_KINDS,
        version=STAGE_VERSIONS["check_premise"],
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=1,
    log:
        "logs/check_premise/seed_{seed}.log",
    benchmark:
        "benchmarks/check_premise/seed_{seed}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/check_premise.py"
