"""``Predictor``: run SeqFormer on one video from a notebook or the batch runner, whole-video or in windows.

Example::

    from seqformer.platform.predictor import Predictor
    predictor = Predictor("models:/seqformer-r50@production", window=24, overlap=4)
    results = predictor.predict_video(frames)      # frames: iterable of uint8 [H, W, 3] RGB arrays
    # -> [{"score", "category_id", "segmentations": [RLE | None per frame]}, ...] (YouTube-VIS, no video_id)

``window=0`` is the official whole-video inference (one forward over all frames, ``postprocess_video``).
``window > 0`` runs overlapping windows and links instances across them (``pipelines/inference.py``), so memory
stays bounded whatever the video length. The batch command calls the very same :meth:`Predictor.predict_frames`,
so its results equal ``predict_video`` on the same frames.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqformer.model import postprocess_video
from seqformer.model.postprocess import input_region_masks
from seqformer.pipelines.inference import (
    AssociationConfig,
    VideoTracker,
    WindowOutput,
    iter_windows,
    owned_end,
    plan_windows,
    preprocess_frame,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictorSettings:
    """Everything besides the weights that changes a prediction (recorded in each video's ``_COMPLETE`` marker)."""

    window: int = 0
    """Frames per window; 0 = the whole video in one forward (official)."""
    overlap: int = 4
    """Frames shared by consecutive windows (used for association); ignored when ``window`` is 0."""
    short_side: int = 360
    """Frames are resized so their shorter side has this length (360 officially)."""
    association: AssociationConfig = AssociationConfig()
    """Top-k selection and cross-window association settings."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VideoPrediction:
    """Results of one video plus what the writers need to know about it."""

    results: list[dict[str, Any]]
    num_frames: int
    height: int
    width: int
    windows: int


class Predictor:
    """Video instance segmentation of one video at a time.

    Args:
        model: a SeqFormer module, or a spec for ``seqformer.platform.model_source.load_model``
            (``models:/name@alias``, a checkpoint file or folder, an experiment YAML).
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        window: frames per window; 0 = whole video (official).
        overlap: frames shared by consecutive windows.
        short_side: shorter side of the model input.
        association: selection / association settings (defaults: official top-10, 20 candidates per window).
    """

    def __init__(
        self,
        model: nn.Module | str | Path,
        *,
        device: str = "cpu",
        window: int = 0,
        overlap: int = 4,
        short_side: int = 360,
        association: AssociationConfig | None = None,
    ) -> None:
        if isinstance(model, (str, Path)):
            from seqformer.platform.model_source import load_model

            model, _ = load_model(str(model), device=device)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module or a model spec string, got {type(model).__name__}")
        if short_side < 32:
            raise ValueError(f"short_side must be >= 32 pixels, got {short_side}")
        self.settings = PredictorSettings(window, overlap if window else 0, short_side,
                                          association or AssociationConfig())
        plan_windows(1, window, self.settings.overlap)  # validates window/overlap now, not mid-video
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    # ------------------------------------------------------------------ public
    def predict_video(self, frames: Iterable[np.ndarray]) -> list[dict[str, Any]]:
        """Results of one video (YouTube-VIS entries without ``video_id``), frames given in order.

        Args:
            frames: uint8 RGB arrays ``[H, W, 3]`` of one size; any iterable (a generator keeps memory bounded in
                windowed mode).
        """
        return self.predict_frames(frames).results

    def predict_frames(self, frames: Iterable[np.ndarray]) -> VideoPrediction:
        """Like :meth:`predict_video`, also returning the frame count, original size and number of windows."""
        window, overlap = self.settings.window, self.settings.overlap
        size: tuple[int, int] | None = None
        tracker: VideoTracker | None = None
        num_frames, windows = 0, 0
        for start, clip, is_last in iter_windows(self._preprocessed(frames), window, overlap):
            if not clip:
                break
            if size is None:
                size = clip[0][1]
            windows += 1
            tensor = torch.stack([t for t, _ in clip])  # [T_w, 3, h, w]
            num_frames = start + len(clip)
            if is_last and start == 0:  # the whole video is one window: official path
                return VideoPrediction(self._whole_video(tensor, size), num_frames, size[0], size[1], 1)
            tracker = tracker or VideoTracker(size, self.settings.association)
            end = start + len(clip)
            tracker.add_window(self._window_output(tensor, start), owned_end(end, overlap, is_last))
        if size is None or tracker is None:
            raise ValueError("predict_video got no frames; pass at least one uint8 [H, W, 3] frame")
        return VideoPrediction(tracker.results(num_frames), num_frames, size[0], size[1], windows)

    # ------------------------------------------------------------------ steps
    def _preprocessed(self, frames: Iterable[np.ndarray]) -> Iterable[tuple[torch.Tensor, tuple[int, int]]]:
        size = None
        for index, frame in enumerate(frames):
            frame = np.asarray(frame)
            if size is None:
                size = frame.shape[:2]
            elif frame.shape[:2] != size:
                raise ValueError(f"frame {index} has size {frame.shape[:2]} but frame 0 has {size}; "
                                 "all frames of a video must share one size")
            yield preprocess_frame(frame, self.settings.short_side), (int(size[0]), int(size[1]))

    @torch.inference_mode()
    def _forward(self, clip: torch.Tensor) -> dict[str, Any]:
        """One forward of a clip ``[T, 3, h, w]`` (outputs include ``pred_queries [1, Q, C]``)."""
        # official inference.py feeds the resized frames unpadded (training pads to multiples of 32)
        out = self.model([clip.to(self.device)], size_divisibility=1)
        if "pred_queries" not in out:
            raise RuntimeError(
                f"the model ({type(self.model).__name__}) returned no pred_queries; the Predictor needs a SeqFormer "
                "whose outputs include the last decoder layer's instance query embeddings"
            )
        return out

    def _whole_video(self, clip: torch.Tensor, orig_size: tuple[int, int]) -> list[dict[str, Any]]:
        out = self._forward(clip)
        return postprocess_video(
            out, 0, input_size=tuple(clip.shape[-2:]), orig_size=orig_size, top_k=self.settings.association.top_k,
            score_floor=self.settings.association.score_floor,
        )

    def _window_output(self, clip: torch.Tensor, start: int) -> WindowOutput:
        out = self._forward(clip)
        masks = input_region_masks(out, 0, tuple(clip.shape[-2:]))
        return WindowOutput(
            start=start,
            logits=out["pred_logits"][0].float().cpu(),
            queries=out["pred_queries"][0].float().cpu(),
            mask_logits=masks.float().cpu(),
        )


def eval_predictor(
    model: nn.Module | str | Path, evaluation: dict[str, Any], short_side: int, device: str = "cpu"
) -> Predictor:
    """The Predictor of an experiment's ``eval`` section (a dict, as kept in checkpoints; missing keys take the
    official whole-video defaults): windows, overlap, top-k and the window association settings."""
    top_k = int(evaluation.get("top_k", 10))
    association = AssociationConfig(
        top_k=top_k, candidates=max(20, top_k), nms_iou=evaluation.get("nms_iou", 0.5),
        coverage_exponent=float(evaluation.get("coverage_exponent", 0.5)),
    )
    return Predictor(model, device=device, window=int(evaluation.get("window", 0)),
                     overlap=int(evaluation.get("window_overlap", 4)), short_side=short_side, association=association)
