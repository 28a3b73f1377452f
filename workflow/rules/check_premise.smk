# The premise of self-distillation, measured once on the analysis seed's shared round-0 train
# traces: the base solver re-solves each trace's problem from the plain prompt and from the teacher
# prompt of every configured (layout, context kind), and A_t is scored under each. Params: the
# premise section, plus the context templates, the teacher's thinking flag and the solver prompt
# that the teacher prompts are built from (contexts.layout is not among them: the premise measures
# every layout, whichever one the arms use).
rule check_premise:
    input:
        traces="results/seed_{seed}/traces/shared/round_0.parquet",
        critiques="results/seed_{seed}/critiques/shared/round_0.parquet",
        problems=problems_file("train"),
        model=f"resources/models/{config['solver']}",
    output:
        samples="results/seed_{seed}/premise/samples.parquet",
        advantages="results/seed_{seed}/premise/advantages.parquet",
        summary="results/seed_{seed}/premise/table.json",
    log:
        "logs/check_premise/seed_{seed}.log",
    benchmark:
        "benchmarks/check_premise/seed_{seed}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=1,
    params:
        cfg=seeded_section("premise"),
        templates=canonical(config["contexts"]["templates"]),
        enable_thinking=config["contexts"]["enable_thinking"],
        prompt=canonical(config["traces"]["prompt"]),
        version=STAGE_VERSIONS["check_premise"],
    script:
        "../scripts/check_premise.py"
