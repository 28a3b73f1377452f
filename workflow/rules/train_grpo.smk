# Round r's GRPO student + its group traces and rewards -> round r+1's student.
rule train_grpo:
    input:
        traces=previous_round("results/seed_{seed}/traces/grpo/round_{prev}.parquet"),
        critiques=previous_round("results/seed_{seed}/critiques/grpo/round_{prev}.parquet"),
        student=previous_student,
        initial=f"resources/models/{config['solver']}",
    output:
        model=directory("results/seed_{seed}/students/grpo/round_{round}"),
        train_log="results/seed_{seed}/train_logs/grpo/round_{round}.parquet",
    log:
        "logs/train_grpo/seed_{seed}/round_{round}.log",
    benchmark:
        "benchmarks/train_grpo/seed_{seed}/round_{round}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=1,  # more (profile or --set-resources) runs the stage under torchrun
    params:
        cfg=seeded_section("grpo"),
        version=STAGE_VERSIONS["train_grpo"],
    script:
        "../scripts/train_grpo.py"
