# select_problems (optional, select_problems.enabled): keep the candidates that are hard but
# learnable. Three jobs so that editing a threshold (select_problems.filters) reruns no sampling:
# the base solver's n samples per candidate, the critic's own answers (LLM critic only), the filter.
rule select_problems_solver:
    input:
        train="results/problems/train.parquet",
        eval="results/problems/eval.parquet",
        dev="results/problems/dev.parquet",
        model=f"resources/models/{config['solver']}",
    output:
        "results/problems/selection/solver_samples.parquet",
    log:
        "logs/select_problems_solver/select_problems_solver.log",
    benchmark:
        "benchmarks/select_problems_solver/select_problems_solver.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=1,
    params:
        cfg=selection_subsection("solver"),
        prompt=canonical(config["traces"]["prompt"]),
        version=STAGE_VERSIONS["select_problems"],
    script:
        "../scripts/select_problems_solver.py"


rule select_problems_critic:
    input:
        train="results/problems/train.parquet",
        eval="results/problems/eval.parquet",
        dev="results/problems/dev.parquet",
        critic=critic_model_dirs(),
    output:
        "results/problems/selection/critic_answers.parquet",
    log:
        "logs/select_problems_critic/select_problems_critic.log",
    benchmark:
        "benchmarks/select_problems_critic/select_problems_critic.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=selection_critic_gpus,
    params:
        cfg=selection_subsection("critic"),
        version=STAGE_VERSIONS["select_problems"],
    script:
        "../scripts/select_problems_critic.py"


rule select_problems:
    input:
        train="results/problems/train.parquet",
        eval="results/problems/eval.parquet",
        dev="results/problems/dev.parquet",
        samples="results/problems/selection/solver_samples.parquet",
        critic_answers=selection_critic_answers(),
    output:
        train="results/problems/selection/train.parquet",
        eval="results/problems/selection/eval.parquet",
        dev="results/problems/selection/dev.parquet",
        dropped="results/problems/selection/dropped.parquet",
        summary="results/problems/selection/summary.json",
    log:
        "logs/select_problems/select_problems.log",
    benchmark:
        "benchmarks/select_problems/select_problems.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        cfg=selection_subsection("filters"),
        version=STAGE_VERSIONS["select_problems"],
    script:
        "../scripts/select_problems.py"
