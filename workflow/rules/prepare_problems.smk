rule prepare_problems:
    output:
        train=fill(PROBLEMS, split="train"),
        eval=fill(PROBLEMS, split="eval"),
        dev=fill(PROBLEMS, split="dev"),
        rejects=REJECTS,
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
