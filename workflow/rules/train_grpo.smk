# Round r's GRPO student + its group traces and rewards -> round r+1's student.
rule train_grpo:
    input:
        traces=previous_round("results/traces/grpo/round_{prev}.parquet"),
        critiques=previous_round("results/critiques/grpo/round_{prev}.parquet"),
        student=previous_student,
        initial=f"resources/models/{config['solver']}",
    output:
        model=directory("results/students/grpo/round_{round}"),
        train_log="results/train_logs/grpo/round_{round}.parquet",
    params:
        cfg=section("grpo"),
        version=STAGE_VERSIONS["train_grpo"],
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    log:
        "logs/train_grpo/round_{round}.log",
    benchmark:
        "benchmarks/train_grpo/round_{round}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/train_grpo.py"
