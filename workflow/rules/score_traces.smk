# A traces file's student side of A_t (each trace's own no-context prompt, the teacher's weights),
# scored once and shared by every context kind's precompute_teacher_logprobs job.
# Params: the teacher's engine settings only, so editing top_k or a template does not rescore.
rule score_traces:
    input:
        traces=TRACES,
        model=teacher_model,
    output:
        TRACE_SCORES,
    log:
        "logs/score_traces/seed_{seed}/{condition}/round_{round}.log",
    benchmark:
        "benchmarks/score_traces/seed_{seed}/{condition}/round_{round}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=1,
    params:
        cfg=canonical(config["teacher"]["engine"]),
        version=STAGE_VERSIONS["score_traces"],
    script:
        "../scripts/score_traces.py"
