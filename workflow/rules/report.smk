# The report page: every checkpoint's evaluation, the training logs, the premise check, the
# advantage analysis and critic QA, plus provenance. Its params are the whole config (provenance)
# and each self-distillation arm's context kind.
rule report:
    input:
        eval_samples=eval_samples("eval"),
        dev_samples=eval_samples("dev"),
        eval_summaries=eval_targets("eval") + eval_targets("dev"),
        advantage_tokens=expand(ADVANTAGE_TOKENS, seed=SEEDS),
        train_logs=train_log_targets(),
        premise=fill(PREMISE_TABLE, seed=ANALYSIS_SEED),
        advantages=fill(ADVANTAGE_AGGREGATES, seed=ANALYSIS_SEED),
        advantage_figure_png=fill(ADVANTAGE_FIGURE_PNG, seed=ANALYSIS_SEED),
        advantage_figure_html=fill(ADVANTAGE_FIGURE_HTML, seed=ANALYSIS_SEED),
        critiques=critique_targets(),
        selection=selection_summaries(),
        models=used_model_dirs(),
    output:
        report(
            REPORT,
            caption="../report/report.rst",
            category="Report",
        ),
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/report/report.tsv"
    conda:
        "../../envs/pipeline.yaml"
    params:
        config=canonical(config),
        train_log_keys=train_log_keys(),
        seeds=SEEDS,
        arms={arm: context_kind(arm) for arm in SD_CONDITIONS},
        critique_seeds=[seed for seed in SEEDS for _ in critique_targets([seed])],
        version=STAGE_VERSIONS["report"],
    script:
        "../scripts/report.py"
