"""Load experiment YAML: safe parsing, ``base:`` inheritance, dotted overrides, validation with precise errors."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from seqformer.platform.config.schema import ExperimentConfig

MAX_BASE_DEPTH = 8
MAX_ALIASES = 1000
MAX_EXPANDED_NODES = 200_000
MAX_FILE_BYTES = 4 * 2**20


class ConfigError(ValueError):
    """A bad experiment config; the message names the file, the key path, the value and the fix."""


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents with many alias references (YAML 'billion laughs' bombs)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.alias_count = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D401 - PyYAML hook
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"{self.name}: line {mark.line + 1}: more than {MAX_ALIASES} YAML alias references "
                    "(a YAML bomb?); expand the aliases or simplify the file"
                )
        return super().compose_node(parent, index)


def parse_yaml_text(text: str, source: str) -> Any:
    """Parse YAML safely; syntax errors become :class:`ConfigError` with the line number."""
    loader = _GuardedLoader(text)
    loader.name = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_EXPANDED_NODES:
            raise ConfigError(
                f"{source}: line {node.start_mark.line + 1}: the document expands to {size} YAML nodes through "
                f"aliases (more than {MAX_EXPANDED_NODES}; a YAML bomb?); expand the aliases or simplify the file"
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{source}: YAML syntax error at {line}{err.problem or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: YAML error: {err}") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Number of nodes the document would have with every alias expanded (computed without expanding)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # guards recursive structures
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[key] = min(total, 10**12)
    return memo[key]


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"experiment file not found: {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: file is larger than {MAX_FILE_BYTES} bytes; is it really an experiment YAML?")
    data = parse_yaml_text(path.read_text(encoding="utf-8"), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: mappings merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_raw(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read an experiment YAML and its ``base:`` chain into one merged mapping (not validated yet)."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigError(f"base cycle: {cycle}; remove one of the 'base:' keys")
    if len(_chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: 'base:' chain deeper than {MAX_BASE_DEPTH} files")
    data = _read_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: key 'base' must be a path string, got {base!r}")
    base_path = (path.parent / base).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: key 'base': base file {base!r} not found (looked for {base_path})")
    return deep_merge(load_raw(base_path, (*_chain, path)), data)


def _field_names(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    if dataclasses.is_dataclass(model):
        return [f.name for f in dataclasses.fields(model)]
    return []


def _annotation_at(path: list[str]) -> Any:
    """The schema class that owns the mapping at ``path`` (None when it is not a schema class)."""
    cls: Any = ExperimentConfig
    for key in path:
        if isinstance(cls, type) and issubclass(cls, BaseModel) and key in cls.model_fields:
            cls = cls.model_fields[key].annotation
        elif dataclasses.is_dataclass(cls):
            cls = {f.name: f.type for f in dataclasses.fields(cls)}.get(key)
        else:
            return None
    return cls


def _did_you_mean(loc: list[str]) -> str:
    choices = _field_names(_annotation_at(loc[:-1]))
    close = difflib.get_close_matches(loc[-1], choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{'.'.join([*loc[:-1], close[0]])}'?"
    if choices:
        return f"; valid keys here: {', '.join(sorted(choices))}"
    return ""


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        key = ".".join(loc) or "<top level>"
        value = item.get("input")
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            lines.append(f"unknown key '{key}'{_did_you_mean(loc)}")
            continue
        msg = item["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"key '{key}': {msg} (got {shown})")
    return f"{source}: invalid experiment config:\n  " + "\n  ".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-4"`` → ``(["train", "lr"], 1e-4)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"bad override {text!r}: expected KEY.PATH=VALUE, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p or not p.replace("_", "").isalnum() for p in parts):
        raise ConfigError(f"bad override {text!r}: key {key!r} must be dotted names such as train.lr")
    value = parse_yaml_text(raw, f"override {text!r}") if raw.strip() else ""
    if isinstance(value, str):
        # YAML 1.1 reads "1e-4" as a string; accept plain numbers written that way.
        try:
            value = float(value) if any(c in value.lower() for c in "e.") else int(value)
        except ValueError:
            pass
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a raw mapping; unknown keys are refused with a suggestion."""
    data = deep_merge({}, data)
    for text in overrides:
        parts, value = parse_override(text)
        owner = _annotation_at(parts[:-1])
        names = _field_names(owner)
        if not names or parts[-1] not in names:
            if owner is dict or (owner is not None and getattr(owner, "__origin__", None) is dict):
                pass  # free-form mapping such as tune.search_space
            else:
                raise ConfigError(f"override {text!r}: unknown key '{'.'.join(parts)}'{_did_you_mean(parts)}")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def validate(data: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate a raw mapping into an :class:`ExperimentConfig` (errors name ``source`` and the key path)."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    except (TypeError, ValueError) as err:  # raised by ModelConfig.__post_init__
        raise ConfigError(f"{source}: invalid experiment config: {err}") from None


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, merge, override and validate an experiment YAML.

    Args:
        path: experiment YAML; ``base:`` (relative to the file) is merged first.
        overrides: dotted ``key=value`` strings applied last (``["train.lr=1e-4"]``).

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: YAML syntax error (with line), unknown key (with suggestion), wrong type or value, base cycle,
            missing base file, bad override.
    """
    data = load_raw(path)
    data = apply_overrides(data, list(overrides or []))
    return validate(data, str(path))


# Local file and folder settings, by section. URIs (``scheme://``, ``models:/...``) are left as they are.
PATH_FIELDS: dict[str | None, tuple[str, ...]] = {
    "data": ("root", "train_annotations", "val_root", "val_annotations", "coco_root", "coco_annotations",
             "prepared_dir"),
    "train": ("init_checkpoint",),
    "resources": ("storage_path",),
    None: ("output_dir",),
}


def _is_uri(value: str) -> bool:
    head = value.split("/", 1)[0]
    return "://" in value or (head.endswith(":") and len(head) > 2)  # models:/x, runs:/x; not C:/ or ./


def with_absolute_paths(cfg: ExperimentConfig, base: str | Path | None = None) -> ExperimentConfig:
    """A copy of ``cfg`` whose relative file and folder settings are made absolute against ``base`` (default: the
    working directory).

    Ray Train and Ray Tune run workers and trials in their own working directories, so an experiment is handed to
    them with absolute paths: a relative ``data.val_annotations`` that the driver found would otherwise be looked for
    under the trial folder.
    """
    base_dir = Path(base).resolve() if base is not None else Path.cwd()
    updates: dict[str, Any] = {}
    for section, names in PATH_FIELDS.items():
        owner = cfg if section is None else getattr(cfg, section)
        changed = {}
        for name in names:
            value = getattr(owner, name)
            if not isinstance(value, str) or not value or _is_uri(value):
                continue
            path = Path(value).expanduser()
            if not path.is_absolute() or value.startswith("~"):
                changed[name] = str(path if path.is_absolute() else base_dir / path)
        if section is None:
            updates.update(changed)
        elif changed:
            updates[section] = owner.model_copy(update=changed)
    return cfg.model_copy(update=updates)


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML; loading it back gives an equal config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain JSON-compatible data."""
    return cfg.model_dump(mode="json")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` → ``{"train.lr": 1}`` (for MLflow params)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
