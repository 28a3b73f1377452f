rule query_critic:
    input:
        traces="results/seed_{seed}/traces/{condition}/round_{round}.parquet",
        problems=problems_file("train"),
        critic=critic_model_dirs(),
    output:
        "results/seed_{seed}/critiques/{condition}/round_{round}.parquet",
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
