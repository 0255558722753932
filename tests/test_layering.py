"""STYLE.md §2: who may import whom, checked by parsing every module's imports with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "seqformer"

# layer -> forbidden import prefixes
FORBIDDEN = {
    "kernels": ["seqformer.model", "seqformer.pipelines", "seqformer.platform", "seqformer.types", "ray", "mlflow",
                "pydantic", "yaml", "scipy"],
    "model": ["seqformer.pipelines", "seqformer.platform", "ray", "mlflow", "pydantic", "yaml"],
    "pipelines": ["seqformer.model", "seqformer.platform", "mlflow", "ray.train", "ray.tune"],
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _violations(layer: str) -> list[str]:
    found = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for name in _imports(path):
            for bad in FORBIDDEN[layer]:
                if name == bad or name.startswith(bad + "."):
                    found.append(f"{path.relative_to(ROOT.parent)} imports {name}")
            if layer == "pipelines" and (name == "ray" or name.startswith("ray.")) and path.name != "ray_data.py":
                found.append(f"{path.relative_to(ROOT.parent)} imports {name} (only pipelines/ray_data.py may)")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer):
    assert _violations(layer) == []


def test_nothing_outside_platform_imports_platform():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if "platform" in path.relative_to(ROOT).parts or path.name == "__main__.py":
            continue
        offenders += [f"{path}: {n}" for n in _imports(path) if n.startswith("seqformer.platform")]
    assert offenders == []


def test_checker_catches_a_forbidden_edge(tmp_path, monkeypatch):
    """The checker itself must be able to fail: plant a model module that imports ray."""
    fake_root = tmp_path / "seqformer"
    (fake_root / "model").mkdir(parents=True)
    (fake_root / "model" / "bad.py").write_text("import ray\nfrom mlflow import log_metric\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", fake_root)
    assert len(_violations("model")) == 2


def test_no_shell_true_anywhere():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                if isinstance(node.value, ast.Constant) and node.value.value is True:
                    offenders.append(str(path))
    assert offenders == []
