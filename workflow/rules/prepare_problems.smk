rule prepare_problems:
    output:
        train="results/problems/train.parquet",
        eval="results/problems/eval.parquet",
        dev="results/problems/dev.parquet",
        rejects="results/problems/rejects.parquet",
    log:
        "logs/prepare_problems/prepare_problems.log",
    benchmark:
        "benchmarks/prepare_problems/prepare_problems.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        cfg=section("problems"),
        version=STAGE_VERSIONS["prepare_problems"],
    script:
        "../scripts/prepare_problems.py"
