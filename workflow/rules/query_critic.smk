rule query_critic:
    input:
        traces=TRACES,
        problems=problems_file("train"),
        critic=critic_model_dirs(),
    output:
        CRITIQUES,
    log:
        "logs/query_critic/seed_{seed}/{condition}/round_{round}.log",
    benchmark:
        "benchmarks/query_critic/seed_{seed}/{condition}/round_{round}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=critic_gpus,  # the critic's tensor-parallel size; 0 for the oracle and reward-only traces
    params:
        cfg=section("critic"),
        rewrite=critic_rewrites,
        version=STAGE_VERSIONS["query_critic"],
    script:
        "../scripts/query_critic.py"
