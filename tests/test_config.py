import copy
import dataclasses

import pytest
import yaml

from pipeline.config import ConfigError, ModelSpec, ProblemsConfig, from_params, validate_config, with_run_seed
from tests.conftest import DEFAULT_CONFIG, SMOKE_CONFIG


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def typed_values(value):
    """A built config value as YAML writes it (tuples as lists, dataclasses as mappings)."""
    if dataclasses.is_dataclass(value):
        return {f.name: typed_values(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [typed_values(v) for v in value]
    return value


STAGE_SECTIONS = {"problems", "traces", "critic", "contexts", "teacher", "distill", "grpo", "evaluate", "premise"}


def assert_stages_build(config: dict) -> set[str]:
    """Every section a rule script builds (tests/test_config_defaults.py finds them) builds from
    ``config`` and holds the values the file sets; returns the sections built."""
    from tests.test_config_defaults import SECTIONS, lookup

    def contains(built, written, where):
        if isinstance(written, dict):
            for key, value in written.items():
                contains(built[key], value, f"{where}.{key}")
        else:
            assert built == written, f"{where}: the file says {written!r}, the typed config holds {built!r}"

    built = set()
    for path, cls in SECTIONS.items():
        for section in lookup(config, path):
            contains(typed_values(from_params(cls, section, where=path)), section, path)
            built.add(path)
    return built


@pytest.mark.parametrize("path", [DEFAULT_CONFIG, SMOKE_CONFIG], ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    config = yaml.safe_load(path.read_text())
    assert validate_config(config) is None  # raises ConfigError listing every violation otherwise
    assert assert_stages_build(config) >= STAGE_SECTIONS  # and every stage's typed config takes the file's values


def test_misspelled_key_is_rejected_by_name(config):
    config["problems"]["n_trian"] = 3
    with pytest.raises(ConfigError, match=r"problems\.n_trian: unknown key"):
        validate_config(config)


def test_misspelled_top_level_section_is_rejected_by_name(config):
    config["problem"] = config.pop("problems")
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert "problem: unknown key" in str(err.value)
    assert "problems: required key is missing" in str(err.value)


def test_bad_value_names_the_key(config):
    config["problems"]["arith"]["ops"] = ["+", "^"]
    with pytest.raises(ConfigError, match=r"problems\.arith\.ops\.1: '\^' is not one of"):
        validate_config(config)


def test_solver_must_name_a_model(config):
    bad = copy.deepcopy(config)
    bad["solver"] = "nope"
    with pytest.raises(ConfigError, match="solver: 'nope' is not a key of models"):
        validate_config(bad)


def test_every_schema_key_has_a_description():
    from pipeline.config import SCHEMA_PATH

    def walk(node, where):
        if isinstance(node, dict):
            if "type" in node or "enum" in node:
                assert "description" in node, f"schema node {where} has no description"
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(yaml.safe_load(SCHEMA_PATH.read_text()), "<root>")


def test_from_params_builds_nested_typed_config(config):
    cfg = from_params(ProblemsConfig, config["problems"])
    assert cfg.arith.ops == ("+", "-", "*", "/")
    assert isinstance(cfg.arith.ops, tuple)


def test_from_params_rejects_unknown_key_and_cross_field_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        from_params(ProblemsConfig, {"bogus": 1})
    with pytest.raises(ConfigError, match="needs the key 'package'"):
        from_params(ModelSpec, {"source": "pypi_gguf"})


def test_canonical_sorts_keys_so_reordering_is_not_a_change():
    from pipeline.config import canonical

    a = canonical({"b": 1, "a": {"d": [{"y": 1, "x": 2}], "c": 3}})
    b = canonical({"a": {"c": 3, "d": [{"x": 2, "y": 1}]}, "b": 1})
    assert repr(a) == repr(b)
    assert list(a) == ["a", "b"]


def test_run_seed_offsets_every_seed_key_and_seed_0_changes_nothing():
    section = {"seed": 3, "optim": {"seed": 5, "lr": 0.1}, "engine": {"backend": "vllm"}}
    assert with_run_seed(section, 0) == section
    assert with_run_seed(section, 2) == {"seed": 5, "optim": {"seed": 7, "lr": 0.1}, "engine": {"backend": "vllm"}}


def test_seeds_must_be_a_nonempty_list(config):
    config["experiment"]["seeds"] = []
    with pytest.raises(ConfigError, match="experiment.seeds"):
        validate_config(config)


PAPER_CONFIG = DEFAULT_CONFIG.parent / "paper.yaml"
OVERLAYS = sorted((DEFAULT_CONFIG.parent / "overlays").glob("*.yaml"))


def merged(*paths):
    """Config files merged the way Snakemake merges --configfile over the Snakefile's configfile."""
    from snakemake.utils import update_config

    config: dict = {}
    for path in paths:
        update_config(config, yaml.safe_load(path.read_text()))
    return config


@pytest.mark.parametrize("overlay", [PAPER_CONFIG, *OVERLAYS], ids=lambda p: p.name)
def test_overlays_validate_over_the_default(overlay):
    config = merged(DEFAULT_CONFIG, overlay)
    assert validate_config(config) is None
    assert assert_stages_build(config) >= STAGE_SECTIONS
    overlay_llm = yaml.safe_load(overlay.read_text()).get("critic", {}).get("llm")
    if overlay_llm is not None:
        assert config["critic"]["llm"] == overlay_llm  # the overlay's critic is the one that runs


def test_paper_config_holds_the_papers_values_and_builds_every_stage_config():
    from pipeline import config as c

    paper = merged(DEFAULT_CONFIG, PAPER_CONFIG)
    assert yaml.safe_load(PAPER_CONFIG.read_text()).keys() == set(paper)  # complete on its own: every section set
    typed = {
        "problems": from_params(ProblemsConfig, paper["problems"]),
        "select_solver": from_params(c.SelectionSamplingConfig, paper["select_problems"]["solver"]),
        "select_critic": from_params(c.CriticSolveConfig, paper["select_problems"]["critic"]),
        "filters": from_params(c.SelectionFilters, paper["select_problems"]["filters"]),
        "traces": from_params(c.TracesConfig, paper["traces"]),
        "critic": from_params(c.CriticConfig, paper["critic"]),
        "contexts": from_params(c.ContextsConfig, paper["contexts"]),
        "teacher": from_params(c.TeacherConfig, paper["teacher"]),
        "distill": from_params(c.DistillConfig, paper["distill"]),
        "grpo": from_params(c.GrpoConfig, paper["grpo"]),
        "evaluate": from_params(c.EvaluateConfig, paper["evaluate"]),
    }
    assert paper["solver"] == "qwen3-1.7b" and paper["models"]["qwen3-1.7b"]["path"] == "Qwen/Qwen3-1.7B"
    assert paper["critic"]["model"] == "qwq-32b" and typed["critic"].llm.engine.tensor_parallel_size > 1
    assert typed["problems"].dataset.preset == "openmathreasoning"
    assert (typed["distill"].lora.r, typed["distill"].lora.alpha, typed["grpo"].lora.r) == (64, 128, 64)
    assert typed["distill"].optim.lr == typed["grpo"].optim.lr == 5e-6 and typed["distill"].optim.batch_size == 32
    assert typed["traces"].temperature == 1.1 and typed["traces"].max_tokens == typed["evaluate"].max_tokens == 2048
    assert paper["experiment"]["rounds"] == 7 and paper["experiment"]["conditions"] == ["grpo", "reference", "critique"]
    assert typed["traces"].round_size("shared") == (282, 1) and typed["traces"].round_size("grpo") == (282, 8)
    assert typed["evaluate"].samples_per_problem == 12
    assert paper["select_problems"]["enabled"] and typed["filters"].max_avg == 5 / 16
    assert (typed["filters"].n_train, typed["filters"].n_eval) == (282, 30)
    assert typed["select_solver"].samples_per_problem == 16
    assert typed["contexts"].enable_thinking and not typed["traces"].prompt.enable_thinking
    assert typed["critic"].llm.enable_thinking and typed["critic"].llm.engine.backend == "vllm"
    # no CPU-only engine setting leaks in from config.yaml
    for engine in (typed["traces"].engine, typed["evaluate"].engine, typed["teacher"].engine):
        assert engine.backend == "vllm" and not engine.enforce_eager and engine.dtype == "auto"


def test_llm_critic_with_selection_needs_the_critic_solve_prompt():
    paper = merged(DEFAULT_CONFIG, PAPER_CONFIG)
    del paper["select_problems"]["critic"]
    with pytest.raises(ConfigError, match="select_problems.critic: required"):
        validate_config(paper)


@pytest.mark.parametrize(
    "overlay", ["paper.yaml", "overlays/problems_champ.yaml", "overlays/critic_llm.yaml", "smoke.yaml"]
)
def test_shipped_critic_templates_have_their_placeholders(overlay):
    from pipeline.tasks.solver_format import fill_template

    config = yaml.safe_load((DEFAULT_CONFIG.parent / overlay).read_text())
    template = config["critic"]["llm"]["prompt_template"]
    for name in ("question", "trace", "ground_truth"):
        assert "{" + name + "}" in template, name
    filled = fill_template(template, question="Q?", trace="<step_1> x </step_1>", ground_truth="7")
    assert "Q?" in filled and "{question}" not in filled
    solve = (config.get("select_problems") or {}).get("critic")
    if solve:
        assert "{question}" in solve["prompt_template"]


BAD_VALUES = {
    # wrong types
    "traces.max_tokens": ("160", r"traces\.max_tokens: '160' is not of type 'integer'"),
    "experiment.rounds": (1.5, r"experiment\.rounds: 1\.5 is not of type 'integer'"),
    "experiment.ablations": ("yes", r"experiment\.ablations: 'yes' is not of type 'boolean'"),
    "distill.optim.lr": ("1e-4", r"distill\.optim\.lr: '1e-4' is not of type 'number'"),
    # out of range
    "traces.top_p": (1.5, r"traces\.top_p: 1\.5 is greater than the maximum of 1"),
    "traces.temperature": (-0.1, r"traces\.temperature: -0\.1 is less than the minimum of 0"),
    "experiment.rounds#0": (0, r"experiment\.rounds: 0 is less than the minimum of 1"),
    "evaluate.samples_per_problem": (0, r"evaluate\.samples_per_problem: 0 is less than the minimum of 1"),
    # empty or repeated arm lists
    "experiment.conditions": ([], r"experiment\.conditions: \[\] should be non-empty"),
    "experiment.conditions#dup": (["grpo", "grpo"], r"experiment\.conditions: \['grpo', 'grpo'\] has non-unique"),
    "experiment.conditions#typo": (["critque"], r"experiment\.conditions\.0: 'critque' is not one of"),
}


@pytest.mark.parametrize("key", list(BAD_VALUES))
def test_a_wrong_type_out_of_range_value_or_empty_arm_list_names_the_key(config, key):
    value, message = BAD_VALUES[key]
    *parents, leaf = key.split("#")[0].split(".")
    section = config
    for name in parents:
        section = section[name]
    section[leaf] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_typed_configs_name_the_key_of_a_value_the_schema_let_through(config):
    from pipeline.config import DistillConfig, OptimConfig, TracesConfig

    with pytest.raises(ConfigError, match="batch_size must be a multiple of micro_batch_size"):
        from_params(OptimConfig, {"batch_size": 6, "micro_batch_size": 4})
    with pytest.raises(ConfigError, match=r"distill\.optim: unknown key\(s\) learning_rate"):
        from_params(DistillConfig, {"optim": {"learning_rate": 1.0}}, where="distill")
    with pytest.raises(ConfigError, match=r"traces\.engine\.backend: 'tgi' is not one of"):
        from_params(TracesConfig, {**config["traces"], "engine": {"backend": "tgi"}}, where="traces")
