# One job per run seed, on the shared round-0 traces scored under every context kind.
rule analyse_advantages:
    input:
        teacher_logprobs=expand("results/seed_{{seed}}/teacher_logprobs/{kind}/round_0.parquet", kind=CONTEXT_KINDS),
        traces="results/seed_{seed}/traces/shared/round_0.parquet",
        critiques="results/seed_{seed}/critiques/shared/round_0.parquet",
        model=f"resources/models/{config['solver']}",
    output:
        tokens="results/seed_{seed}/advantages/tokens.parquet",
        aggregates="results/seed_{seed}/advantages/aggregates.parquet",
        figure_html="results/seed_{seed}/advantages/figure.html",
        figure_png=report(
            "results/seed_{seed}/advantages/figure.png",
            caption="../report/advantages.rst",
            category="Advantages",
        ),
    log:
        "logs/analyse_advantages/seed_{seed}.log",
    benchmark:
        "benchmarks/analyse_advantages/seed_{seed}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        cfg=section("advantages"),
        kinds=CONTEXT_KINDS,
        version=STAGE_VERSIONS["analyse_advantages"],
    script:
        "../scripts/analyse_advantages.py"
