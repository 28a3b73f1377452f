# Round r's GRPO student + its group traces and rewards -> round r+1's student.
rule train_grpo:
    input:
        traces=previous_round(fill(TRACES, condition="grpo", round="{prev}")),
        critiques=previous_round(fill(CRITIQUES, condition="grpo", round="{prev}")),
        student=previous_student,
        initial=SOLVER,
    output:
        model=directory(fill(STUDENT, condition="grpo")),
        train_log=fill(TRAIN_LOG, condition="grpo"),
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
