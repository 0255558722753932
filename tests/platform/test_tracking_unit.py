"""Tracking helpers that need no MLflow server: secret redaction, URI resolution."""

from __future__ import annotations

import pytest

from seqformer.platform.tracking import default_artifact_location, redact, resolve_tracking_uri


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("tracking.tracking_uri", "http://alice:s3cret@mlflow.example:5000", "http://alice:***@mlflow.example:5000"),
        ("db", "postgresql://u:p%40ss@db/x", "postgresql://u:***@db/x"),
        ("api_token", "abc123", "***"),
        ("MLFLOW_TRACKING_PASSWORD", "hunter2", "***"),
        ("train.lr", 0.1, 0.1),
        ("tracking.tracking_uri", "sqlite:///x/mlflow.db", "sqlite:///x/mlflow.db"),
    ],
)
def test_redact(key, value, expected):
    assert redact(key, value) == expected


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///a.db", tmp_path) == "sqlite:///a.db"


def test_artifacts_sit_next_to_the_sqlite_database(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert default_artifact_location(uri, None) == (tmp_path / "mlartifacts").as_uri()
    assert default_artifact_location("http://127.0.0.1:5000", None) is None
