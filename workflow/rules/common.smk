# Config validation, wildcard constraints and input functions. No logic beyond path lookup.
# Each rule's params carry its stage's config section plus the module's STAGE_VERSION: package
# code is not tracked by Snakemake, so a stage whose output changes bumps that constant.
import pipeline.models
import pipeline.problems
from pipeline.config import canonical, validate_config

validate_config(config)


wildcard_constraints:
    model=r"[A-Za-z0-9._-]+",


def used_model_dirs():
    """Folders of the models some stage uses (only these are prepared)."""
    return [f"resources/models/{config['solver']}"]


def section(name):
    """One top-level config section, as a rule's params (key order does not count)."""
    return canonical(config[name])


def model_spec(wildcards):
    """The `models` entry that prepare_models builds for one {model}."""
    return canonical(config["models"][wildcards.model])
