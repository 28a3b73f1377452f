"""The import graph drawn from the code: no circle, no upward arrow, no stage importing another.

Every ``import`` and ``from ... import`` of ``pipeline`` or ``workflow`` modules is read with ``ast``,
function-local and ``TYPE_CHECKING`` ones included, from ``pipeline/`` and ``workflow/**.py`` (the
rule files are Snakemake, not Python; they sit on the top floor anyway). ``FLOORS`` below is the
picture of docs/architecture.md as data: an arrow may only point to the same floor or one below it,
and a module that is on no floor fails, so a new module gets a place in the picture.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Top floor first. A module belongs to the floor of the longest name that is it or a package above it,
# so the sub-modules of a package (pipeline.report.tables, pipeline.config.data, ...) are on the package's floor.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("workflow", ("workflow", "pipeline.docs_schemas")),  # the rules' scripts and the docs tool
    (
        "stages",  # one module (or package) per rule; never import each other
        (
            "pipeline.models",
            "pipeline.problems",
            "pipeline.select_problems",
            "pipeline.traces",
            "pipeline.critic",
            "pipeline.contexts",
            "pipeline.score_traces",
            "pipeline.teacher",
            "pipeline.distill",
            "pipeline.grpo",
            "pipeline.evaluate",
            "pipeline.premise",
            "pipeline.advantages",
            "pipeline.report",
        ),
    ),
    # The ground, in three floors.
    (
        "engines and training",
        ("pipeline.engines", "pipeline.training", "pipeline.launch", "pipeline.tiny_model"),
    ),
    ("tasks and estimates", ("pipeline.tasks", "pipeline.metrics", "pipeline.claims", "pipeline.memory")),
    (
        "foundation",
        (
            "pipeline.engines.base",
            "pipeline.engines.checkpoint",
            "pipeline.engines.processes",
            "pipeline.config",
            "pipeline.artifacts",
            "pipeline.versions",
            "pipeline.logs",
            "pipeline.losses",
            "pipeline.cost_model",
            "pipeline.figures",
        ),
    ),
]
STAGES = dict(FLOORS)["stages"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    files = [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("workflow/**/*.py")]
    return {module_name(path): path for path in sorted(files)}


def imported(path: Path, name: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """(module, line) of every import of a pipeline or workflow module in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pipeline import config` imports the module pipeline.config
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in ("pipeline", "workflow"):
                yield target, node.lineno


def floor_of(module: str) -> tuple[int, str] | None:
    """(floor index, the floor entry it matched), by the longest matching entry; None: on no floor."""
    best = None
    for index, (_, entries) in enumerate(FLOORS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and (best is None or len(entry) > len(best[1])):
                best = (index, entry)
    return best


def graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}, over the modules of the tree."""
    files = sources()
    known = set(files)
    edges: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        edges[name] = {}
        for target, line in imported(path, name, known):
            if target != name:
                edges[name].setdefault(target, line)
    return edges


GRAPH = graph()


def test_every_module_is_on_a_floor():
    loose = [m for m in GRAPH if m != "pipeline" and floor_of(m) is None]
    assert not loose, f"on no floor of tests/test_import_layers.py FLOORS (and docs/architecture.md): {loose}"
    assert not GRAPH["pipeline"], "pipeline/__init__.py imports nothing from the package"


def test_arrows_point_down_or_across_never_up():
    upward = []
    for module, targets in GRAPH.items():
        here = floor_of(module)
        for target, line in targets.items():
            there = floor_of(target)
            if here is not None and there is not None and there[0] < here[0]:
                upward.append(f"{module}:{line} imports {target} ({FLOORS[here[0]][0]} -> {FLOORS[there[0]][0]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_stage_modules_never_import_each_other():
    crossing = []
    for module, targets in GRAPH.items():
        here = floor_of(module)
        if here is None or here[1] not in STAGES:
            continue
        for target, line in targets.items():
            there = floor_of(target)
            if there is not None and there[1] in STAGES and there[1] != here[1]:
                crossing.append(f"{module}:{line} imports {target}")
    assert not crossing, "a stage imports another stage (move what they share to the ground):\n" + "\n".join(crossing)


def circles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circle():
    assert not circles(GRAPH), f"import circles: {circles(GRAPH)}"


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b": 1}, "b": {"a": 1}, "c": {"a": 1}}, [["a", "b"]]),
        ({"a": {"b": 1}, "b": {"c": 1}, "c": {}}, []),
    ],
)
def test_the_circle_finder_finds_circles(edges, expected):
    assert circles(edges) == expected


def test_the_checks_see_function_local_and_relative_imports(tmp_path):
    source = tmp_path / "pipeline" / "engines" / "mod.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "def f():\n    from pipeline.engines.hf import X\n    from . import base\n    from .. import config\n"
    )
    name = "pipeline.engines.mod"
    known = {"pipeline.engines.base", "pipeline.config"}
    found = [target for target, _ in imported(source, name, known)]
    assert found == ["pipeline.engines.hf", "pipeline.engines.base", "pipeline.config"]
    assert floor_of("pipeline.engines.hf")[0] < floor_of("pipeline.memory")[0]  # memory -> engines.hf is upward


def test_the_picture_in_the_docs_names_every_floor_entry():
    picture = (ROOT / "docs" / "architecture.md").read_text()
    short = [entry.removeprefix("pipeline.").replace(".", "/") for _, entries in FLOORS for entry in entries]
    missing = [name for name in short if not re.search(rf"(?<![\w/]){re.escape(name)}(?![\w/])", picture)]
    assert not missing, f"docs/architecture.md does not show {missing}"


MAX_LINES = 410  # "no module over ~400 lines" (issue 22): split a module by concept before it grows past this


def test_every_module_is_small_and_says_in_its_first_line_what_it_holds():
    long, silent = [], []
    for name, path in sources().items():
        if not name.startswith("pipeline"):
            continue
        source = path.read_text()
        if len(source.splitlines()) > MAX_LINES:
            long.append(f"{name} ({len(source.splitlines())} lines)")
        docstring = ast.get_docstring(ast.parse(source))
        if not docstring or not docstring.splitlines()[0].strip():
            silent.append(name)
    assert not long, f"over {MAX_LINES} lines, split by concept: {long}"
    assert not silent, f"no docstring whose first line says what the module holds: {silent}"
