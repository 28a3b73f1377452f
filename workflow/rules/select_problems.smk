# select_problems (optional, select_problems.enabled): keep the candidates that are hard but
# learnable. Three jobs so that editing a threshold (select_problems.filters) reruns no sampling:
# the base solver's n samples per candidate, the critic's own answers (LLM critic only), the filter.
rule select_problems_solver:
    input:
        train=fill(PROBLEMS, split="train"),
        eval=fill(PROBLEMS, split="eval"),
        dev=fill(PROBLEMS, split="dev"),
        model=SOLVER,
    output:
        SELECTION_SAMPLES,
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
        train=fill(PROBLEMS, split="train"),
        eval=fill(PROBLEMS, split="eval"),
        dev=fill(PROBLEMS, split="dev"),
        critic=critic_model_dirs(),
    output:
        CRITIC_ANSWERS,
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
        train=fill(PROBLEMS, split="train"),
        eval=fill(PROBLEMS, split="eval"),
        dev=fill(PROBLEMS, split="dev"),
        samples=SELECTION_SAMPLES,
        critic_answers=selection_critic_answers(),
    output:
        train=fill(SELECTED_PROBLEMS, split="train"),
        eval=fill(SELECTED_PROBLEMS, split="eval"),
        dev=fill(SELECTED_PROBLEMS, split="dev"),
        dropped=DROPPED,
        summary=SELECTION_SUMMARY,
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
