"""The README and docs/ stay true: links resolve, column tables match the schemas, commands and recipes run.

- every relative link in README.md and docs/**/*.md names a file that exists, and an anchor that is
  one of that file's headings (GitHub's anchors);
- docs/artifacts.md's column tables are what ``python -m pipeline.docs_schemas`` renders from the
  schemas declared in pipeline/artifacts/schemas.py;
- every overlay in config/overlays/ gives its run command in the one form, and that command dry-runs;
- every command of the README's "Everyday commands" and "When a run dies" sections dry-runs (``-n``)
  on a copy of the session's smoke run, in a folder laid out like the repo whose ``config/config.yaml``
  is the smoke config; every polars recipe of the README's "Inspect any artifact" and of
  docs/artifacts.md's "More recipes" runs on the smoke run and shows a non-empty result.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import docs_schemas
from tests.conftest import ROOT, SMOKE_CONFIG, SNAKEMAKE, offline_env

README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").rglob("*.md")])
OVERLAYS = sorted((ROOT / "config" / "overlays").glob("*.yaml"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)


def without_code(text: str) -> str:
    """Markdown with fenced blocks and inline code spans blanked (they hold no links or headings)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "x", text)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            anchor = github_anchor(heading.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section, up to the next ``## ``."""
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def commands(block: str) -> list[list[str]]:
    """Each shell command of a block, continuation lines joined and comments dropped."""
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


def test_readme_is_a_short_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    headings = [line[3:] for line in lines if line.startswith("## ")]
    for wanted in ("Quick start", "Everyday commands", "When a run dies", "Inspect any artifact", "Latest result"):
        assert wanted in headings, wanted


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_a_heading(doc):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", without_code(doc.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (path.suffix != ".md" or anchor not in anchors(path)):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, broken


def test_github_anchor_drops_punctuation_and_code():
    assert github_anchor("The solver's output format") == "the-solvers-output-format"
    assert github_anchor("`distill_student` and `train_grpo`") == "distill_student-and-train_grpo"
    assert (
        github_anchor("Loss variants and guards (the 24-problem run)") == "loss-variants-and-guards-the-24-problem-run"
    )


def test_artifact_column_tables_are_generated_from_the_declared_schemas():
    assert docs_schemas.problems() == []
    current = docs_schemas.current_block(docs_schemas.DOC.read_text())
    assert current == docs_schemas.render(), "docs/artifacts.md is stale: run python -m pipeline.docs_schemas"


def test_a_schema_without_docs_or_a_column_without_a_meaning_is_named(monkeypatch):
    import polars as pl

    from pipeline import artifacts

    monkeypatch.setattr(artifacts, "NEW_THING_SCHEMA", pl.Schema({"x": pl.Int32}), raising=False)
    doc = docs_schemas.ARTIFACTS[0]
    partial = docs_schemas.ArtifactDoc(doc.name, doc.schema_name, doc.schema, doc.paths, doc.rows, {"ghost": "?"})
    monkeypatch.setattr(docs_schemas, "ARTIFACTS", (partial, *docs_schemas.ARTIFACTS[1:]))
    found = "\n".join(docs_schemas.problems())
    assert "NEW_THING_SCHEMA has no ArtifactDoc" in found
    assert "problems: no meaning for column(s) problem_id" in found
    assert "column(s) the schema does not declare: ghost" in found


def test_everyday_commands_cover_the_daily_uses():
    text = section(README.read_text(), "Everyday commands")
    lines = [" ".join(c) for block in blocks(text, "bash") for c in commands(block)]
    assert all(line.startswith(".venv/bin/snakemake") for line in lines), lines
    for flag in ("-n", "--forcerun", "--until", "--list-changes params", "--rerun-triggers", "--report"):
        assert any(re.search(rf"(^| ){re.escape(flag)}( |$)", line) for line in lines), flag
    assert any("--configfile config/config.yaml config/overlays/" in line for line in lines)


def test_no_documented_command_passes_a_target_as_a_config_file():
    """--configfile takes every word after it: a target written there would be read as a config file."""
    found = [c for doc in DOCS for block in blocks(doc.read_text(), "bash") for c in commands(block)]
    found += [c for overlay in OVERLAYS for c in overlay_commands(overlay)]
    checked = 0
    for command in found:
        if "--configfile" in command:
            checked += 1
            files = command[command.index("--configfile") + 1 :]
            files = files[: next((i for i, word in enumerate(files) if word.startswith("-")), len(files))]
            assert files and all(word.endswith(".yaml") for word in files), " ".join(command)
    assert checked >= 8


def overlay_commands(overlay: Path) -> list[list[str]]:
    """The snakemake commands in an overlay's header comment."""
    header = "".join(line[1:].strip() + "\n" for line in overlay.read_text().splitlines() if line.startswith("#"))
    header = header.replace("\\\n", " ")
    return [shlex.split(line) for line in header.splitlines() if line.startswith(".venv/bin/snakemake ")]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_each_overlay_header_gives_its_run_command_in_one_form_and_it_dry_runs(overlay, tmp_path):
    found = overlay_commands(overlay)
    form = f"--cores all --configfile config/config.yaml config/overlays/{overlay.name}"
    assert found, f"{overlay.name}: its header gives no run command"
    assert all(" ".join(c).endswith(form) for c in found), f"every command ends in `{form}` (targets before it)"
    for i, command in enumerate(found):
        workdir = tmp_path / str(i)
        workdir.mkdir()
        args = command[1:]
        if "--directory" in args:  # aimed at a scratch folder of its own: this test's instead
            args[args.index("--directory") + 1] = str(workdir)
        else:
            args = ["--directory", str(workdir), *args]
        cmd = [SNAKEMAKE, *args, "-n"]
        out = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=offline_env(workdir / "net")
        )
        assert out.returncode == 0, " ".join(command) + "\n" + out.stdout[-3000:] + out.stderr[-3000:]


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # same inode, same mtime: the copy is as up to date as the run
    except OSError:
        shutil.copy2(source, target)


@pytest.fixture
def smoke_repo(smoke_run, tmp_path) -> Path:
    """A folder laid out like the repo, holding a copy of the smoke run; its config/config.yaml is smoke.yaml."""
    repo = tmp_path / "repo"
    shutil.copytree(smoke_run, repo, symlinks=True, copy_function=_link_or_copy)
    for name in ("Snakefile", "workflow", "profiles"):
        (repo / name).symlink_to(ROOT / name)
    (repo / "config").mkdir()
    shutil.copy(SMOKE_CONFIG, repo / "config" / "config.yaml")
    for path in (ROOT / "config").iterdir():
        if path.name != "config.yaml":
            (repo / "config" / path.name).symlink_to(path)
    return repo


@pytest.mark.slow
def test_every_everyday_and_recovery_command_dry_runs_on_the_smoke_run(smoke_repo):
    text = README.read_text()
    found = [
        command
        for name in ("Everyday commands", "When a run dies")
        for block in blocks(section(text, name), "bash")
        for command in commands(block)
    ]
    assert len(found) >= 10
    failed = []
    for command in found:
        assert command[0] == ".venv/bin/snakemake", command
        args = command[1:] if "-n" in command else [*command[1:], "-n"]
        out = subprocess.run(
            [SNAKEMAKE, *args],
            cwd=smoke_repo,
            capture_output=True,
            text=True,
            timeout=600,
            env=offline_env(smoke_repo / "network_log.jsonl"),
        )
        if out.returncode != 0:
            failed.append(" ".join(command) + "\n" + out.stdout[-2000:] + out.stderr[-2000:])
        elif "--forcerun" in args and args[args.index("--forcerun") + 1] == "evaluate":
            assert "rule evaluate:" in out.stdout, out.stdout[-2000:]
    assert not failed, "\n\n".join(failed)
    plain = subprocess.run([SNAKEMAKE, "-n"], cwd=smoke_repo, capture_output=True, text=True, timeout=600)
    assert "Nothing to be done" in plain.stdout + plain.stderr  # the copy is a finished run of this config


RUN_RECIPE = """
import ast, sys
tree = ast.parse(sys.argv[1])
assert tree.body and isinstance(tree.body[-1], ast.Expr), "a recipe ends in the expression it shows"
last = tree.body.pop()
namespace = {}
exec(compile(tree, "<recipe>", "exec"), namespace)
value = eval(compile(ast.Expression(last.value), "<recipe>", "eval"), namespace)
size = value.height if hasattr(value, "height") else len(value)
assert size > 0, f"the recipe shows nothing: {value!r}"
print(value)
"""


@pytest.mark.slow
def test_every_polars_recipe_runs_on_the_smoke_run(smoke_run):
    recipes = blocks(section(README.read_text(), "Inspect any artifact"), "python")
    recipes += blocks(section((ROOT / "docs" / "artifacts.md").read_text(), "More recipes"), "python")
    assert len(recipes) >= 12
    for recipe in recipes:
        out = subprocess.run(
            [sys.executable, "-c", RUN_RECIPE, recipe], cwd=smoke_run, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, recipe + "\n" + out.stderr[-3000:]
