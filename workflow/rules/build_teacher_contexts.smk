# One job per context kind at round 0 (shared by every arm of that kind) and per self-distillation
# arm at later rounds. Params: the contexts section plus the solver prompt (traces.prompt), whose
# instruction and example the anchor layouts reuse.
rule build_teacher_contexts:
    input:
        traces=sd_traces,
        critiques=sd_critiques,
        problems=problems_file("train"),
        model=SOLVER,
    output:
        CONTEXTS,
    log:
        "logs/build_teacher_contexts/seed_{seed}/{condition}/round_{round}.log",
    benchmark:
        "benchmarks/build_teacher_contexts/seed_{seed}/{condition}/round_{round}.tsv"
    wildcard_constraints:
        condition=SD_CONDITION_PATTERN,
    conda:
        "../../envs/pipeline.yaml"
    params:
        cfg=contexts_section,
        prompt=canonical(config["traces"]["prompt"]),
        kind=arm_kind,
        version=STAGE_VERSIONS["build_teacher_contexts"],
    script:
        "../scripts/build_teacher_contexts.py"
