# One job per checkpoint and split (eval, or dev where choices are made): the base solver
# ({condition}=base, round 0) and every arm's student of rounds 1..R. Params: the evaluate section
# plus the solver prompt (traces.prompt), which the checkpoints are evaluated with.
rule evaluate:
    input:
        problems=split_problems,
        model=eval_model,
    output:
        samples=EVAL_SAMPLES,
        summary=EVAL_SUMMARY,
    log:
        "logs/evaluate/seed_{seed}/{split}/{condition}/round_{round}.log",
    benchmark:
        "benchmarks/evaluate/seed_{seed}/{split}/{condition}/round_{round}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=1,
    params:
        cfg=seeded_section("evaluate"),
        prompt=canonical(config["traces"]["prompt"]),
        version=STAGE_VERSIONS["evaluate"],
    script:
        "../scripts/evaluate.py"
