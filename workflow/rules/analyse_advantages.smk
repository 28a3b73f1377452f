# One job per run seed, on the shared round-0 traces scored under every context kind.
rule analyse_advantages:
    input:
        teacher_logprobs=[fill(TEACHER_LOGPROBS, condition=kind, round=0) for kind in CONTEXT_KINDS],
        traces=fill(TRACES, condition="shared", round=0),
        critiques=fill(CRITIQUES, condition="shared", round=0),
        model=SOLVER,
    output:
        tokens=ADVANTAGE_TOKENS,
        aggregates=ADVANTAGE_AGGREGATES,
        figure_html=ADVANTAGE_FIGURE_HTML,
        figure_png=report(
            ADVANTAGE_FIGURE_PNG,
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
