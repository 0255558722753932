"""MLflow tracking and registry: the only module that imports mlflow.

Runs are written from rank 0 only. The tracking URI comes from the experiment (``tracking.tracking_uri``), else
``$MLFLOW_TRACKING_URI``, else a SQLite database ``mlflow.db`` in the working directory with artifacts in
``./mlartifacts``. Models are logged as MLflow "models from code" pyfunc models whose only artifact is our
weights-only checkpoint: loading never unpickles training code, and MLflow's torch.export default cannot export
the custom deformable-attention op anyway.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHAMPION = "champion"
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key|credential)", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@\s]+)@")
_MAX_PARAM = 6000


def redact(key: str, value: Any) -> Any:
    """Hide secrets: values of secret-looking keys, and passwords inside URIs (``scheme://user:***@host``)."""
    if isinstance(value, str):
        if _SECRET_KEY.search(key) and value:
            return "***"
        return redact_text(value)
    return value


def redact_text(text: str) -> str:
    """Every password inside a URI of ``text`` replaced by ``***`` (for logged files such as the resolved config)."""
    return _URI_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def redact_tree(data: Any, key: str = "") -> Any:
    """:func:`redact` applied to every value of nested dicts / lists (keys are dotted paths, as in params)."""
    if isinstance(data, dict):
        return {k: redact_tree(v, f"{key}.{k}" if key else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_tree(v, key) for v in data]
    return redact(key, data)


def resolve_tracking_uri(configured: str | None, workdir: str | Path | None = None) -> str:
    """The tracking URI: configured, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<workdir>/mlflow.db``."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    base = Path(workdir or Path.cwd()).resolve()
    return f"sqlite:///{base / 'mlflow.db'}"


def default_artifact_location(tracking_uri: str, configured: str | None) -> str | None:
    """Explicit artifact root for new experiments (Ray workers would otherwise write into temporary folders)."""
    if configured:
        return configured if "://" in configured else Path(configured).resolve().as_uri()
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None  # a tracking server decides


class Tracker:
    """A thin wrapper over ``MlflowClient`` bound to one tracking URI (safe to build in Ray workers).

    Args:
        tracking_uri: resolved tracking URI.
        artifact_location: artifact root for experiments this tracker creates.
    """

    def __init__(self, tracking_uri: str, artifact_location: str | None = None) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.artifact_location = artifact_location
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # ----------------------------------------------------------------------------------------------- runs
    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name, artifact_location=self.artifact_location))
        except Exception:  # created concurrently by another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def start_run(
        self, experiment: str, run_name: str, tags: dict[str, str] | None = None, parent_run_id: str | None = None
    ) -> str:
        """Create a run and return its id (``parent_run_id`` makes it a nested child run)."""
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name, tags=all_tags)
        return str(run.info.run_id)

    def find_run(self, experiment: str, tag: str, value: str) -> str | None:
        """The newest unfinished-or-finished run whose tag equals value (used to resume a run after a restart)."""
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        runs = self.client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{tag}` = '{value}'",
            order_by=["start_time DESC"],
            max_results=1,
        )
        return str(runs[0].info.run_id) if runs else None

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = []
        existing = self.client.get_run(run_id).data.params
        for key, value in params.items():
            text = str(redact(key, value))[:_MAX_PARAM]
            if key in existing:
                continue  # params are immutable; a resumed run keeps its first values
            items.append(Param(key, text))
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(k, float(v), stamp, int(step)) for k, v in metrics.items() if _finite(v)]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(redact(key, value)))

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Log ``text`` as an artifact file, with passwords in URIs redacted (resolved configs hold URIs)."""
        self.client.log_text(run_id, redact_text(text), artifact_file)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    # ------------------------------------------------------------------------------------------- registry
    def log_model(self, run_id: str, checkpoint_file: str | Path, name: str = "model") -> str:
        """Log ``checkpoint_file`` as a models-from-code pyfunc model under the run; returns its model URI."""
        import mlflow

        code = Path(__file__).with_name("mlflow_model.py")
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(code),
                artifacts={"checkpoint": str(checkpoint_file)},
                pip_requirements=["seqformer-platform", "torch", "torchvision", "pycocotools", "numpy"],
            )
        return str(info.model_uri)

    def register(
        self,
        model_uri: str,
        name: str,
        run_id: str,
        metric_name: str,
        metric_value: float | None,
        mode: str = "max",
    ) -> tuple[int, bool]:
        """Register ``model_uri`` as a new version of ``name``; move ``@champion`` to it when it beats the champion.

        Returns:
            ``(version, became_champion)``.
        """
        import mlflow

        try:
            self.client.get_registered_model(name)
        except Exception:
            self.client.create_registered_model(name)
        mv = mlflow.register_model(model_uri, name, tags={"run_id": run_id})
        version = int(mv.version)
        if metric_value is not None:
            self.client.set_model_version_tag(name, str(version), metric_name, str(metric_value))
        current = self.champion(name)
        better = current is None or (
            metric_value is not None
            and (current[1] is None or (metric_value > current[1] if mode == "max" else metric_value < current[1]))
        )
        if better:
            self.client.set_registered_model_alias(name, CHAMPION, str(version))
            logger.info(
                "registered %s version %d and moved @%s to it (%s=%s)",
                name,
                version,
                CHAMPION,
                metric_name,
                metric_value,
            )
        else:
            logger.info(
                "registered %s version %d; @%s stays on version %s (%s=%s beats %s)",
                name,
                version,
                CHAMPION,
                current[0] if current else None,
                metric_name,
                current[1] if current else None,
                metric_value,
            )
        self._champion_metric = metric_name
        return version, bool(better)

    def champion(self, name: str, metric_name: str | None = None) -> tuple[int, float | None] | None:
        """``(version, metric)`` of the current champion, or None."""
        try:
            mv = self.client.get_model_version_by_alias(name, CHAMPION)
        except Exception:
            return None
        tags = mv.tags or {}
        value: float | None = None
        keys = [metric_name] if metric_name else list(tags)
        for key in keys:
            if key and key in tags and key != "run_id":
                try:
                    value = float(tags[key])
                    break
                except ValueError:
                    continue
        return int(mv.version), value

    def download_model_checkpoint(self, model_uri: str, dst: str | Path) -> Path:
        """Download a registered/logged model's checkpoint artifact; returns the checkpoint file path."""
        import mlflow

        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
        found = sorted(local.rglob("checkpoint.pt")) or sorted(local.rglob("*.pt")) or sorted(local.rglob("*.pth"))
        if not found:
            raise FileNotFoundError(f"{model_uri}: no checkpoint file among the model's artifacts in {local}")
        return found[0]


def _finite(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return number == number and number not in (float("inf"), float("-inf"))


def package_versions(names: Iterable[str] = ("torch", "torchvision", "ray", "mlflow", "numpy", "pycocotools")) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision(path: str | Path | None = None) -> str:
    """Git SHA of the working tree (``unknown`` outside a checkout), with ``-dirty`` when modified."""
    import subprocess

    cwd = str(path or Path(__file__).resolve().parents[2])
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
