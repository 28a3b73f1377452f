"""Every stage's Parquet and JSON inputs, truncated or with a foreign schema, fail the job naming the file.

Each stage runs on valid empty inputs except one bad one; the error must name that file (and, for a
schema mismatch, the column), and the stage must write nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import yaml
from snakemake.utils import update_config

from pipeline import config as c
from pipeline.advantages import analyse_advantages
from pipeline.artifacts import (
    ADVANTAGE_AGGREGATES_SCHEMA,
    ADVANTAGE_TOKENS_SCHEMA,
    CONTEXTS_SCHEMA,
    CRITIC_ANSWERS_SCHEMA,
    CRITIQUES_SCHEMA,
    EVAL_SAMPLES_SCHEMA,
    PROBLEMS_SCHEMA,
    SELECTION_SAMPLES_SCHEMA,
    TRACE_SCORES_SCHEMA,
    TRACES_SCHEMA,
    TRAIN_LOG_SCHEMA,
    ArtifactReadError,
    SchemaError,
    teacher_logprobs_schema,
    write_artifact,
    write_json,
)
from pipeline.contexts import build_teacher_contexts
from pipeline.critic import query_critic
from pipeline.distill import distill_student
from pipeline.evaluate import evaluate
from pipeline.grpo import train_grpo
from pipeline.premise import check_premise
from pipeline.report import report
from pipeline.score_traces import score_traces
from pipeline.select_problems import sample_critic, sample_solver, select_problems
from pipeline.teacher import precompute_teacher_logprobs
from pipeline.traces import generate_traces
from tests.conftest import DEFAULT_CONFIG, SMOKE_CONFIG

JSON = None  # an input that is a JSON summary, not Parquet


def smoke_config() -> dict:
    config: dict = {}
    for path in (DEFAULT_CONFIG, SMOKE_CONFIG):
        update_config(config, yaml.safe_load(path.read_text()))
    return config


CONFIG = smoke_config()
PAPER = yaml.safe_load((DEFAULT_CONFIG.parent / "paper.yaml").read_text())


def cfg(cls, section):
    return c.from_params(cls, section)


PROMPT = cfg(c.PromptConfig, CONFIG["traces"]["prompt"])

# stage -> (its inputs and their schemas, a call of the stage on input paths ``i``, model ``m``, output folder ``o``)
STAGES: dict[str, tuple[dict[str, pl.Schema | None], Callable[[dict[str, Path], Path, Path], object]]] = {
    "select_problems_solver": (
        {"train": PROBLEMS_SCHEMA, "eval": PROBLEMS_SCHEMA, "dev": PROBLEMS_SCHEMA},
        lambda i, m, o: sample_solver(
            **i, model=m, out=o / "x.parquet", prompt=PROMPT,
            cfg=cfg(c.SelectionSamplingConfig, CONFIG["select_problems"]["solver"]),
        ),
    ),
    "select_problems_critic": (
        {"train": PROBLEMS_SCHEMA, "eval": PROBLEMS_SCHEMA, "dev": PROBLEMS_SCHEMA},
        lambda i, m, o: sample_critic(
            **i, model=m, out=o / "x.parquet", cfg=cfg(c.CriticSolveConfig, PAPER["select_problems"]["critic"])
        ),
    ),
    "select_problems": (
        {
            "train": PROBLEMS_SCHEMA,
            "eval": PROBLEMS_SCHEMA,
            "dev": PROBLEMS_SCHEMA,
            "samples": SELECTION_SAMPLES_SCHEMA,
            "critic_answers": CRITIC_ANSWERS_SCHEMA,
        },
        lambda i, m, o: select_problems(
            **i, train_out=o / "t.parquet", eval_out=o / "e.parquet", dev_out=o / "v.parquet", dropped_out=o / "d.parquet",
            summary_out=o / "s.json", filters=cfg(c.SelectionFilters, CONFIG["select_problems"]["filters"]),
        ),
    ),
    "generate_traces": (
        {"problems": PROBLEMS_SCHEMA},
        lambda i, m, o: generate_traces(
            **i, model=m, out=o / "x.parquet", condition="shared", round_index=0,
            cfg=cfg(c.TracesConfig, CONFIG["traces"]),
        ),
    ),
    "query_critic": (
        {"traces": TRACES_SCHEMA, "problems": PROBLEMS_SCHEMA},
        lambda i, m, o: query_critic(**i, out=o / "x.parquet", cfg=cfg(c.CriticConfig, CONFIG["critic"])),
    ),
    "build_teacher_contexts": (
        {"traces": TRACES_SCHEMA, "critiques": CRITIQUES_SCHEMA, "problems": PROBLEMS_SCHEMA},
        lambda i, m, o: build_teacher_contexts(
            **i, model=m, out=o / "x.parquet", condition="shared", kind="critique",
            cfg=cfg(c.ContextsConfig, CONFIG["contexts"]), prompt=PROMPT,
        ),
    ),
    "score_traces": (
        {"traces": TRACES_SCHEMA},
        lambda i, m, o: score_traces(
            **i, model=m, out=o / "x.parquet", cfg=cfg(c.EngineConfig, CONFIG["teacher"]["engine"])
        ),
    ),
    "precompute_teacher_logprobs": (
        {
            "contexts": CONTEXTS_SCHEMA,
            "traces": TRACES_SCHEMA,
            "critiques": CRITIQUES_SCHEMA,
            "student_scores": TRACE_SCORES_SCHEMA,
        },
        lambda i, m, o: precompute_teacher_logprobs(
            **i, model=m, out=o / "x.parquet", cfg=cfg(c.TeacherConfig, CONFIG["teacher"])
        ),
    ),
    "distill_student": (
        {"teacher_logprobs": teacher_logprobs_schema(4), "traces": TRACES_SCHEMA},
        lambda i, m, o: distill_student(
            **i, student=m, out_model=o / "round_1", out_log=o / "x.parquet",
            cfg=cfg(c.DistillConfig, CONFIG["distill"]),
        ),
    ),
    "train_grpo": (
        {"traces": TRACES_SCHEMA, "critiques": CRITIQUES_SCHEMA},
        lambda i, m, o: train_grpo(
            **i, student=m, initial=m, out_model=o / "round_1", out_log=o / "x.parquet",
            cfg=cfg(c.GrpoConfig, CONFIG["grpo"]),
        ),
    ),
    "evaluate": (
        {"problems": PROBLEMS_SCHEMA},
        lambda i, m, o: evaluate(
            **i, model=m, samples_out=o / "x.parquet", summary_out=o / "x.json", condition="base",
            round_index=0, run_seed=0, prompt=PROMPT, cfg=cfg(c.EvaluateConfig, CONFIG["evaluate"]),
        ),
    ),
    "check_premise": (
        {"traces": TRACES_SCHEMA, "critiques": CRITIQUES_SCHEMA, "problems": PROBLEMS_SCHEMA},
        lambda i, m, o: check_premise(
            **i, model=m, samples_out=o / "x.parquet", advantages_out=o / "a.parquet", summary_out=o / "x.json",
            run_seed=0, cfg=cfg(c.PremiseConfig, CONFIG["premise"]),
            templates=cfg(c.ContextTemplates, CONFIG["contexts"]["templates"]), prompt=PROMPT, enable_thinking=False,
        ),
    ),
    "analyse_advantages": (
        {"teacher_logprobs": teacher_logprobs_schema(4), "traces": TRACES_SCHEMA, "critiques": CRITIQUES_SCHEMA},
        lambda i, m, o: analyse_advantages(
            teacher_logprobs={"critique": i["teacher_logprobs"]}, traces=i["traces"], critiques=i["critiques"],
            model=m, tokens_out=o / "x.parquet", aggregates_out=o / "a.parquet", figure_html=o / "f.html",
            figure_png=o / "f.png", cfg=cfg(c.AdvantagesConfig, CONFIG["advantages"]),
        ),
    ),
    "report": (
        {
            "eval_samples": EVAL_SAMPLES_SCHEMA,
            "advantage_tokens": ADVANTAGE_TOKENS_SCHEMA,
            "train_logs": TRAIN_LOG_SCHEMA,
            "premise": JSON,
            "advantages": ADVANTAGE_AGGREGATES_SCHEMA,
            "critiques": CRITIQUES_SCHEMA,
            "selection": JSON,
        },
        lambda i, m, o: report(
            eval_samples=[i["eval_samples"]], advantage_tokens={0: i["advantage_tokens"]},
            train_logs={(0, "critique", 1): i["train_logs"]}, premise=i["premise"],
            advantages=i["advantages"], advantage_figure_png=o / "f.png", advantage_figure_html=o / "f.html",
            critiques={i["critiques"]: 0}, model_dirs=[m], config=CONFIG, arms={"critique": "critique"},
            out=o / "report.html", selection=i["selection"],
        ),
    ),
}  # fmt: skip

CASES = [(stage, name) for stage, (inputs, _) in STAGES.items() for name in inputs]


def foreign(schema: pl.Schema) -> pl.DataFrame:
    """A frame with the first column mistyped and the last one missing."""
    first, *_, last = schema.names()
    return schema.to_frame().drop(last).with_columns(pl.lit(None, dtype=pl.Int8).alias(first))


def write_inputs(folder: Path, inputs: dict[str, pl.Schema | None]) -> dict[str, Path]:
    folder.mkdir()
    paths = {}
    for name, schema in inputs.items():
        if schema is JSON:
            paths[name] = write_json({}, folder / f"{name}.json")
        else:
            paths[name] = write_artifact(
                schema.to_frame(), folder / f"{name}.parquet", schema=schema, artifact=name, stage="t"
            )
    return paths


@pytest.mark.parametrize("defect", ["truncated", "foreign_schema"])
@pytest.mark.parametrize(("stage", "name"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_a_bad_input_fails_the_stage_naming_the_file(tmp_path, tiny_model_dir, stage, name, defect):
    inputs, run = STAGES[stage]
    paths = write_inputs(tmp_path / "in", inputs)
    bad = paths[name]
    schema = inputs[name]
    if defect == "truncated":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
        error, expected = ArtifactReadError, "not a readable"
    elif schema is JSON:
        bad.write_text("[1, 2")  # no JSON summary has a schema beyond being JSON
        error, expected = ArtifactReadError, "not a readable JSON summary"
    else:
        foreign(schema).write_parquet(bad)
        first, *_, last = schema.names()
        error, expected = SchemaError, f"column '{first}' is Int8"
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(error) as err:
        run(paths, tiny_model_dir, out)
    assert str(bad) in str(err.value) and expected in str(err.value), str(err.value)
    if defect == "foreign_schema" and schema is not JSON:
        assert f"missing column '{last}'" in str(err.value)
    assert not list(out.iterdir())  # nothing half-made


def test_no_stage_reads_parquet_or_json_around_the_checks():
    """Stage modules read artifacts only through pipeline.artifacts (which names the file on any defect)."""
    root = Path(__file__).resolve().parent.parent / "pipeline"
    stages = ["select_problems", "traces", "critic", "contexts", "score_traces", "teacher", "distill", "grpo"]
    stages += ["evaluate", "premise", "advantages", "report"]
    for stage in stages:
        module = root / f"{stage}.py"
        files = [module] if module.exists() else sorted((root / stage).glob("*.py"))  # a module or a package
        assert files, f"pipeline/{stage} is neither a module nor a package"
        for path in files:
            source = path.read_text()
            for call in ("pl.read_parquet(", "pl.scan_parquet(", "json.loads(", "json.load("):
                assert call not in source, (
                    f"{path.relative_to(root.parent)} calls {call}; read through pipeline.artifacts"
                )


@pytest.mark.slow
def test_a_corrupt_intermediate_file_fails_only_its_reader_in_the_dag_and_keeps_everything_else(smoke_run, tmp_path):
    """A truncated traces file in a finished smoke run: the rerun names it, runs no other job, loses nothing else."""
    import hashlib
    import re
    import shutil

    from tests.conftest import snakemake

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, symlinks=True)

    def contents() -> dict[Path, str]:
        files = [p for p in (run / "results").rglob("*") if p.is_file() and not p.is_symlink()]
        return {p.relative_to(run): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = contents()
    bad = Path("results/seed_0/traces/grpo/round_1.parquet")
    (run / bad).write_bytes((run / bad).read_bytes()[:1000])
    out = snakemake(run, "--configfile", str(SMOKE_CONFIG), check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"{bad} (traces): not a readable Parquet file" in text, text[-3000:]
    assert set(re.findall(r"^(?:local)?rule (\w+):", text, re.M)) == {"query_critic"}  # its one reader, nothing else
    after = contents()
    changed = {path for path, digest in before.items() if after.get(path) != digest} - {bad}
    assert changed == {Path("results/seed_0/critiques/grpo/round_1.parquet")}  # the failed job's own output
