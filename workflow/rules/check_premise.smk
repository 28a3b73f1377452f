# The premise of self-distillation, measured once on the analysis seed's shared round-0 train
# traces: the base solver re-solves each trace's problem from the plain prompt and from the teacher
# prompt of every configured (layout, context kind), and A_t is scored under each. Params: the
# premise section, plus the context templates, the teacher's thinking flag and the solver prompt
# that the teacher prompts are built from (contexts.layout is not among them: the premise measures
# every layout, whichever one the arms use).
rule check_premise:
    input:
        traces=fill(TRACES, condition="shared", round=0),
        critiques=fill(CRITIQUES, condition="shared", round=0),
        problems=problems_file("train"),
        model=SOLVER,
    output:
        samples=PREMISE_SAMPLES,
        advantages=PREMISE_ADVANTAGES,
        summary=PREMISE_TABLE,
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
