"""Experiment configuration: pydantic schema and YAML loading."""

from seqformer.platform.config.load import (
    ConfigError,
    apply_overrides,
    flatten,
    load_experiment,
    load_raw,
    parse_yaml_text,
    to_dict,
    to_yaml,
    validate,
    with_absolute_paths,
)
from seqformer.platform.config.schema import ExperimentConfig

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "apply_overrides",
    "flatten",
    "load_experiment",
    "load_raw",
    "parse_yaml_text",
    "to_dict",
    "to_yaml",
    "validate",
    "with_absolute_paths",
]
