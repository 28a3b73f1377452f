"""Stage ``prepare_problems``: train, eval and dev problem files plus a rejects file.

Two sources: the built-in seeded ``arith`` generator, or any table ``datasets.load_dataset`` reads
(local parquet/jsonl/csv, a hub id where a hub is reachable, or ``champ``, the problems the
``champ-dataset`` wheel ships) with a column mapping. Bad rows go to the rejects file with a reason;
they never crash the stage.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
from pathlib import Path

import polars as pl

from pipeline.artifacts import PROBLEMS_SCHEMA, REJECTS_SCHEMA, write_artifact
from pipeline.config import DatasetSource, ProblemsConfig
from pipeline.tasks.arith import generate_problems
from pipeline.tasks.solver_format import strip_thinking
from pipeline.tasks.verify import is_parsable_answer

log = logging.getLogger(__name__)
STAGE = "prepare_problems"
_BOXED_RE = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


def arith_frames(cfg: ProblemsConfig) -> dict[str, pl.DataFrame]:
    """The eval, train and dev sets from independent seeded streams (editing one keeps the others).

    Dev comes from the train distribution, never repeating an eval or a train question.
    """
    eval_set = generate_problems(cfg.n_eval, seed=f"{cfg.seed}-eval", settings=cfg.arith)
    seen = frozenset(p.question for p in eval_set)
    train_set = generate_problems(cfg.n_train, seed=f"{cfg.seed}-train", settings=cfg.arith, exclude=seen)
    seen |= frozenset(p.question for p in train_set)
    dev_set = generate_problems(cfg.n_dev, seed=f"{cfg.seed}-dev", settings=cfg.arith, exclude=seen)

    def frame(problems: list, split: str) -> pl.DataFrame:
        rows = [
            {
                "problem_id": p.problem_id,
                "split": split,
                "question": p.question,
                "answer": str(p.answer),
                "reference": p.reference,
                "source": "arith",
                "verifier": "exact",
                "num_steps": len(p.steps),
                "steps": [s.as_dict() for s in p.steps],
            }
            for p in problems
        ]
        return pl.DataFrame(rows, schema=PROBLEMS_SCHEMA)

    return {"train": frame(train_set, "train"), "eval": frame(eval_set, "eval"), "dev": frame(dev_set, "dev")}


def extract_answer(raw: str | None, answer_format: str) -> tuple[str | None, str | None]:
    """(answer, reference-from-answer) for one raw answer cell in a given format."""
    if raw is None:
        return None, None
    text = str(raw)
    if answer_format == "gsm8k":
        if "####" not in text:
            return None, None
        reasoning, _, answer = text.rpartition("####")
        return answer.strip().replace(",", "") or None, reasoning.strip() or None
    if answer_format == "boxed":
        found = _BOXED_RE.findall(text)
        return (found[-1].strip() or None) if found else None, text.strip()
    return text.strip() or None, None


OPENMATHREASONING = {
    "question_column": "problem",
    "answer_column": "expected_answer",
    "reference_column": "generated_solution",
    "answer_format": "plain",
    "verifier": "math",
}
_LATEX_DELIMITERS = re.compile(r"^\s*(?:\$\$?|\\\(|\\\[)(.*?)(?:\$\$?|\\\)|\\\])\s*$", re.DOTALL)


def openmathreasoning_rows(raw: pl.DataFrame) -> tuple[pl.DataFrame, list[tuple[int, str]]]:
    """OpenMathReasoning rows made plain: (table with question/answer/reference columns, [(row, reason)]).

    Keeps ``has_answer_extracted`` rows (``no_answer_extracted`` answers were voted by models,
    ``converted_proof`` ones are proofs); strips ``$``, ``\\(...\\)`` or ``\\[...\\]`` around the
    answer; the reference is the generated solution after its thinking (none if it never closed).
    """
    rejected, rows = [], []
    for index, row in enumerate(raw.iter_rows(named=True)):
        kind = row.get("problem_type")
        if kind is not None and kind != "has_answer_extracted":
            rejected.append((index, f"problem_type {kind}"))
        answer = row.get("expected_answer")
        if answer is not None:
            match = _LATEX_DELIMITERS.match(answer)
            answer = (match.group(1) if match else answer).strip()
        reference, _ = strip_thinking(row.get("generated_solution") or "")
        rows.append({"problem": row.get("problem"), "expected_answer": answer, "generated_solution": reference})
    frame = pl.DataFrame(
        rows, schema={"problem": pl.String, "expected_answer": pl.String, "generated_solution": pl.String}
    )
    return frame, rejected


def clean_rows(raw: pl.DataFrame, source: DatasetSource, *, source_name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Map a loaded table to problem rows; return (good rows, rejects with a reason)."""
    preset_rejects: dict[int, str] = {}
    if source.preset == "openmathreasoning":
        raw, rejected = openmathreasoning_rows(raw)
        preset_rejects = dict(rejected)
        source = dataclasses.replace(source, **OPENMATHREASONING)
    for column in (source.question_column, source.answer_column, source.reference_column):
        if column is not None and column not in raw.columns:
            raise KeyError(f"column {column!r} is not in the dataset; its columns are {raw.columns}")
    good, rejects, seen = [], [], set()
    for index, row in enumerate(raw.iter_rows(named=True)):
        question = row[source.question_column]
        question = str(question).strip() if question is not None else ""
        raw_answer = row[source.answer_column]
        answer, derived_reference = extract_answer(raw_answer, source.answer_format)
        reason = preset_rejects.get(index)
        if reason is not None:
            pass
        elif not question:
            reason = "no question"
        elif len(question) > source.max_question_chars:
            reason = "question too long"
        elif answer is None:
            reason = "no answer"
        elif not is_parsable_answer(answer, method=source.verifier):
            reason = "unparsable answer"
        elif " ".join(question.lower().split()) in seen:
            reason = "duplicate question"
        elif source.preset == "openmathreasoning" and not row[source.reference_column]:
            reason = "no reference"
        if reason:
            rejects.append(
                {
                    "source": source_name,
                    "row_index": index,
                    "reason": reason,
                    "question": question,
                    "answer": None if raw_answer is None else str(raw_answer),
                }
            )
            continue
        seen.add(" ".join(question.lower().split()))
        reference = row[source.reference_column] if source.reference_column else derived_reference
        good.append(
            {
                "problem_id": f"{source_name}-{index:06d}",
                "split": "",
                "question": question,
                "answer": answer,
                "reference": "" if reference is None else str(reference),
                "source": source_name,
                "verifier": source.verifier,
                "num_steps": 0,
                "steps": [],
            }
        )
    return pl.DataFrame(good, schema=PROBLEMS_SCHEMA), pl.DataFrame(rejects, schema=REJECTS_SCHEMA)


def split_rows(good: pl.DataFrame, *, n_train: int, n_eval: int, n_dev: int, seed: int) -> dict[str, pl.DataFrame]:
    """Seeded shuffle; the first ``n_eval`` rows are eval, the rest the train part, from which the
    first ``n_dev`` rows are carved as dev and up to ``n_train`` more are train."""
    if good.height < 2:
        raise ValueError(f"only {good.height} usable problems; need at least 2 (see the rejects file)")
    shuffled = good.sample(fraction=1.0, shuffle=True, seed=seed)
    n_eval = min(n_eval, shuffled.height // 2)
    n_dev = min(n_dev, (shuffled.height - n_eval) // 2)
    sets = {
        "eval": shuffled.head(n_eval),
        "dev": shuffled.slice(n_eval, n_dev),
        "train": shuffled.slice(n_eval + n_dev, n_train),
    }
    asked = {"train": n_train, "eval": n_eval, "dev": n_dev}
    if any(sets[split].height < n for split, n in asked.items()):
        log.warning("asked for %s problems, have %s", asked, {split: frame.height for split, frame in sets.items()})
    return {split: frame.with_columns(split=pl.lit(split)) for split, frame in sets.items()}


def champ_frame() -> pl.DataFrame:
    """The 270 problems the ``champ-dataset`` wheel ships, as ``question``/``answer``/``reference``."""
    import champ_dataset

    data = json.loads((Path(champ_dataset.__file__).parent / "dataset_files" / "v0.json").read_text())
    rows = [
        {
            "question": p["_text"],
            "answer": p["_answer"],
            "reference": " ".join(step["_text"] for step in p["solution"]["steps"]),
        }
        for p in data["problems"].values()
    ]
    return pl.DataFrame(rows)


TEXT_BUILDERS = ("json", "csv", "text")  # datasets builders that read text files
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")


class ProblemSourceError(ValueError):
    """A problem source file cannot be read as given; the message names the file and line."""


def check_utf8(path: Path) -> None:
    """Raise :class:`ProblemSourceError` naming the first line of a local text file that is not UTF-8.

    ``datasets`` would otherwise fail without naming the file (csv) or pass the bytes on as broken
    strings that crash polars later (json). Remote and compressed files are left to ``datasets``.
    """
    if not path.is_file() or path.suffix in _COMPRESSED:
        return
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProblemSourceError(
                    f"{path}: line {number} is not UTF-8 ({exc.reason} at byte {exc.start} of the line: "
                    f"{line[max(0, exc.start - 20) : exc.start + 5]!r}); re-encode the file as UTF-8"
                ) from None


def load_source(source: DatasetSource) -> pl.DataFrame:
    """Read a problem source with ``datasets.load_dataset`` into a polars frame.

    With ``max_rows`` the split is streamed and cut after that many rows, so a large hub dataset is
    not downloaded whole.
    """
    import datasets

    if source.builder in TEXT_BUILDERS:
        for path in source.data_files:
            check_utf8(Path(path))
    if source.builder == "champ":
        frame = champ_frame()
        return frame.head(source.max_rows) if source.max_rows else frame
    kwargs: dict = {"split": source.split}
    if source.data_files:
        kwargs["data_files"] = list(source.data_files)
    if source.field:
        kwargs["field"] = source.field
    if source.max_rows is None:
        return datasets.load_dataset(source.builder, **kwargs).to_polars()
    stream = datasets.load_dataset(source.builder, streaming=True, **kwargs)
    return pl.DataFrame(list(itertools.islice(stream, source.max_rows)), infer_schema_length=None)


def prepare_problems(*, train: Path, eval: Path, dev: Path, rejects: Path, cfg: ProblemsConfig) -> dict[str, int]:
    """Write the train, eval, dev and rejects files for ``cfg``; return row counts."""
    if cfg.source == "arith":
        splits = arith_frames(cfg)
        rejects_df = pl.DataFrame(schema=REJECTS_SCHEMA)
    else:
        assert cfg.dataset is not None
        raw = load_source(cfg.dataset)
        good, rejects_df = clean_rows(raw, cfg.dataset, source_name=cfg.dataset.builder.replace("/", "_"))
        splits = split_rows(good, n_train=cfg.n_train, n_eval=cfg.n_eval, n_dev=cfg.n_dev, seed=cfg.seed)
    params = dataclasses.asdict(cfg)
    for split, path in (("train", train), ("eval", eval), ("dev", dev)):
        write_artifact(splits[split], path, schema=PROBLEMS_SCHEMA, artifact="problems", stage=STAGE, params=params)
    write_artifact(rejects_df, rejects, schema=REJECTS_SCHEMA, artifact="rejects", stage=STAGE, params=params)
    counts = {split: frame.height for split, frame in splits.items()} | {"rejects": rejects_df.height}
    if rejects_df.height:
        reasons = rejects_df.group_by("reason").len().sort("reason").iter_rows()
        log.warning("rejected %d rows: %s", rejects_df.height, ", ".join(f"{r}={n}" for r, n in reasons))
    log.info("problems: %s", counts)
    return counts
