# `snakemake prepare_models` prepares every model the config uses; each one is its own cached
# job of `prepare_model`, so adding a critic never rebuilds the solver.
rule prepare_models:
    input:
        used_model_dirs(),


rule prepare_model:
    output:
        directory(MODEL),
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "benchmarks/prepare_model/{model}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: workflow.cores  # a model stage uses every core it is given; one runs at a time
    resources:
        gpu=0,  # dequantizing a GGUF or fetching from a hub needs no device
    params:
        spec=model_spec,
        version=STAGE_VERSIONS["prepare_model"],
    script:
        "../scripts/prepare_model.py"
