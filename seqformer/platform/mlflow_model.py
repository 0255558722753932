"""MLflow "models from code" definition of a SeqFormer pyfunc model.

MLflow stores this file as the model's code and our weights-only checkpoint as its artifact, so loading the model
never unpickles anything. ``predict`` takes a list of videos, each a uint8 array ``[T, H, W, 3]`` (RGB), and returns
one list of YouTube-VIS results per video.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class SeqFormerPyFunc(PythonModel):
    """Pyfunc wrapper around :class:`seqformer.platform.predictor.Predictor`."""

    def load_context(self, context: Any) -> None:
        from seqformer.platform.checkpoint import load_checkpoint
        from seqformer.platform.model_source import model_from_payload
        from seqformer.platform.predictor import eval_predictor

        path = context.artifacts["checkpoint"]
        payload = load_checkpoint(path)
        model, _ = model_from_payload(payload, path)
        # inference settings of the experiment that trained the model (official defaults otherwise)
        experiment = payload.get("experiment") or {}
        short_side = int(experiment.get("data", {}).get("eval_short_side", 360))
        self.predictor = eval_predictor(model, experiment.get("eval", {}), short_side)

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - MLflow reads type hints
        videos = model_input if isinstance(model_input, list) else [model_input]
        return [self.predictor.predict_video(video) for video in videos]


mlflow.models.set_model(SeqFormerPyFunc())
