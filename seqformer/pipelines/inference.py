"""Video inference building blocks: preprocessing, window planning, cross-window instance association, outputs.

Nothing here touches the model: the platform's ``Predictor`` runs the model on each window and hands the raw
outputs (:class:`WindowOutput`) to a :class:`VideoTracker`; the batch runner writes each video's outputs with
:func:`commit_video_outputs` and the batch files with :func:`write_json_atomic`.

Windowed inference (bounded memory for any video length)
---------------------------------------------------------
Window length ``W`` and overlap ``O`` plan windows ``[0, W), [S, S + W), ...`` with stride ``S = W - O``; the last
window is moved back to end at the last frame so every window is full (its overlap with the previous one may then
exceed ``O``). ``W = 0`` (or a video no longer than ``W``) is one window over the whole video: the official
behaviour, post-processed by the model's ``postprocess_video``.

Each frame is *owned* by exactly one window: window ``k`` owns from where window ``k - 1`` stopped owning up to
``end_k - O // 2`` (the last window up to the video's end), i.e. the overlap is split in the middle. The masks of a
frame come from its owner.

Association, window by window (:class:`VideoTracker`):

1. *Candidates*: the ``candidates`` queries with the highest class probability (``max_k sigmoid(logit)``).
   *Duplicates* among them are merged (``nms_iou``): going down the candidates by class probability, one whose
   binary mask over all the window's frames has an IoU above ``nms_iou`` with a candidate already kept is not a
   candidate of its own; the kept one takes the element-wise maximum of both class probabilities. Two queries on
   one object would otherwise make two tracks, and the association would end one of them or hand the object back
   and forth between them, so that no track covers the whole object.
2. *Cost* between each live track (a track matched in the previous window) and each candidate::

       cost = embedding_weight * (1 - cos(track embedding, query embedding))
            + mask_weight * (1 - IoU of the stride-4 masks over the frames both windows share)

   The track embedding is the last decoder layer's instance-query embedding of its query in the previous window;
   masks are ``logit > 0`` over all shared frames jointly; when neither mask has a pixel on the shared frames the
   IoU term is 0.5 (no evidence either way).
3. *Hungarian* matching (``scipy.optimize.linear_sum_assignment``) on that cost; a pair continues the track when its
   cost is at most ``max_cost``. Unmatched candidates start new tracks; unmatched live tracks end (no revival).
4. A track's class scores are the mean of its queries' ``sigmoid`` class probabilities over its windows, weighted
   by the number of frames each window owns, times ``(frames the track owns / video frames) ** coverage_exponent``
   (a fragment of a track scores lower than a whole one); its masks on owned frames are the official ones
   (bilinear resize of the logits to the original size, ``sigmoid > 0.5``); frames outside the track's windows are
   empty.

At the end, the official selection runs on the tracks instead of the queries (:meth:`VideoTracker.results`): top-k
(track, class) pairs of the flattened scores, grouped by track in order of first appearance, tracks empty in every
frame dropped, segmentations ``None`` when the score is below ``score_floor``. With a single window,
``candidates >= top_k`` and ``nms_iou=None`` this reproduces ``postprocess_video`` exactly (tested), so the
windowed path only adds the association and the duplicate merging (the coverage factor is 1 for a single window).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_util
from scipy.optimize import linear_sum_assignment

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESULTS_FILE = "results.json"
OVERLAY_FILE = "overlay.mp4"
CONTACT_SHEET_FILE = "contact_sheet.png"
COMPLETE_MARKER = "_COMPLETE"
VIDEO_OUTPUT_FILES = (RESULTS_FILE, OVERLAY_FILE, CONTACT_SHEET_FILE)

Item = TypeVar("Item")


# ---------------------------------------------------------------------------------------------------- preprocessing
def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(h, w)`` after torchvision's ``Resize(short_side)``: shorter side to ``short_side``, longer side truncated."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def preprocess_frame(frame: np.ndarray, short_side: int = 360) -> torch.Tensor:
    """Official inference preprocessing of one frame: PIL bilinear resize of the shorter side, ImageNet mean/std.

    Written here because ``pipelines/transforms.py`` has no evaluation transform yet; matches the official
    ``T.Resize(360)`` + ``ToTensor`` + ``Normalize`` (reference §12), no padding.

    Args:
        frame: uint8 RGB ``[H, W, 3]``.
        short_side: target length of the shorter side (360 officially).

    Returns:
        float32 ``[3, h, w]``.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a frame must be a uint8 [H, W, 3] RGB array, got {frame.dtype} {tuple(frame.shape)}")
    height, width = frame.shape[:2]
    new_h, new_w = resized_size(height, width, short_side)
    image = Image.fromarray(frame)
    if (new_h, new_w) != (height, width):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


# ---------------------------------------------------------------------------------------------------- windows
def _check_window(window: int, overlap: int) -> None:
    if window < 0 or overlap < 0 or (window > 0 and overlap >= window):
        raise ValueError(
            f"window length must be >= 0 and overlap in [0, window), got window={window}, overlap={overlap}; "
            "use --window 0 for whole-video inference or e.g. --window 24 --overlap 4"
        )


def plan_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """``[(start, end)]`` windows covering ``num_frames`` frames (see the module docstring)."""
    _check_window(window, overlap)
    if window == 0 or num_frames <= window:
        return [(0, num_frames)]
    stride, starts, start = window - overlap, [], 0
    while start + window < num_frames:
        starts.append(start)
        start += stride
    starts.append(num_frames - window)
    return [(s, s + window) for s in starts]


def owned_end(end: int, overlap: int, is_last: bool) -> int:
    """First frame *not* owned by a window ending at ``end`` (the last window owns up to its end)."""
    return end if is_last else end - overlap // 2


def iter_windows(items: Iterable[Item], window: int, overlap: int) -> Iterator[tuple[int, list[Item], bool]]:
    """Group a stream of frames into the windows of :func:`plan_windows` without knowing the length in advance.

    Holds at most ``window + 1`` items. ``window == 0`` collects everything into one window.

    Yields:
        ``(start, items of [start, start + len), is_last)``.
    """
    _check_window(window, overlap)
    iterator = iter(items)
    if window == 0:
        yield 0, list(iterator), True
        return
    stride = window - overlap
    buffer: deque[tuple[int, Item]] = deque(maxlen=window + 1)
    start, count = 0, 0
    for item in iterator:
        buffer.append((count, item))
        count += 1
        if count == start + window + 1:  # a frame after this window exists, so it is not the last
            yield start, [x for i, x in buffer if start <= i < start + window], False
            start += stride
    if count == 0:
        return
    last_start = max(0, count - window)
    yield last_start, [x for i, x in buffer if i >= last_start], True


# ---------------------------------------------------------------------------------------------------- association
@dataclass(frozen=True)
class AssociationConfig:
    """How windows are linked and how results are selected (see the module docstring)."""

    top_k: int = 10
    """(track, class) pairs kept per video, as the official top-10."""
    candidates: int = 20
    """Queries per window that may continue or start a track (by class probability); >= top_k."""
    max_cost: float = 1.0
    """A candidate continues a track when the matching cost is at most this."""
    embedding_weight: float = 1.0
    """Weight of the cosine distance between instance-query embeddings."""
    mask_weight: float = 1.0
    """Weight of ``1 - IoU`` of the masks on the shared frames."""
    score_floor: float = 0.001
    """Entries scoring below this get ``None`` segmentations (official)."""
    nms_iou: float | None = 0.5
    """Candidates of one window whose masks overlap a higher-scoring candidate's by more than this IoU are merged
    into it (None: no merging)."""
    coverage_exponent: float = 0.5
    """Track scores are multiplied by ``(owned frames / video frames) ** coverage_exponent`` (0: plain mean)."""

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.candidates < self.top_k:
            raise ValueError(f"need 1 <= top_k <= candidates, got top_k={self.top_k}, candidates={self.candidates}")
        if self.nms_iou is not None and not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1] or None (no merging), got {self.nms_iou}")
        if self.coverage_exponent < 0:
            raise ValueError(f"coverage_exponent must be >= 0 (0: plain mean score), got {self.coverage_exponent}")


@dataclass
class WindowOutput:
    """Raw outputs of the model on one window (one clip, batch index already taken).

    Attributes:
        start: index of the window's first frame in the video.
        logits: ``[Q, K]`` class logits.
        queries: ``[Q, C]`` last decoder layer instance-query embeddings.
        mask_logits: ``[Q, T_w, h4, w4]`` stride-4 mask logits cropped to the unpadded input
            (``[:ceil(h/4), :ceil(w/4)]``).
    """

    start: int
    logits: torch.Tensor
    queries: torch.Tensor
    mask_logits: torch.Tensor

    @property
    def num_frames(self) -> int:
        return int(self.mask_logits.shape[1])


@dataclass
class _Track:
    embedding: torch.Tensor  # [C] of the last matched query
    masks: torch.Tensor  # bool [T_w, h4, w4] of the last window
    window_start: int
    prob_sum: torch.Tensor  # [K] sum over windows of probs * owned frames
    weight: int = 0
    any_foreground: bool = False
    counts: dict[int, str] = field(default_factory=dict)  # frame -> compressed RLE counts


def _encode(binary: np.ndarray) -> list[str]:
    """RLE counts of bool masks ``[N, H, W]`` (pycocotools, Fortran order)."""
    rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
    return [r["counts"].decode("utf-8") for r in rles]


def mask_iou(first: torch.Tensor, second: torch.Tensor, both_empty: float = 0.5) -> torch.Tensor:
    """IoU of every pair of masks over all frames jointly; ``both_empty`` where both are empty.

    Args:
        first: bool ``[A, T, h, w]``.
        second: bool ``[B, T, h, w]``.
        both_empty: the value for two empty masks (0.5, no evidence either way, for the association cost).

    Returns:
        float ``[A, B]``.
    """
    a = first.flatten(1).float()
    b = second.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(union, both_empty))


def association_cost(
    tracks_emb: torch.Tensor,
    tracks_masks: torch.Tensor,
    query_emb: torch.Tensor,
    query_masks: torch.Tensor,
    config: AssociationConfig,
) -> torch.Tensor:
    """Cost of continuing each track with each candidate query.

    Args:
        tracks_emb: ``[A, C]`` track embeddings; tracks_masks: bool ``[A, O, h, w]`` on the shared frames.
        query_emb: ``[B, C]`` candidate embeddings; query_masks: bool ``[B, O, h, w]`` on the same frames.

    Returns:
        ``[A, B]`` cost (lower is better).
    """
    cosine = F.normalize(tracks_emb.float(), dim=-1) @ F.normalize(query_emb.float(), dim=-1).T
    cost = config.embedding_weight * (1 - cosine)
    if tracks_masks.shape[1] > 0:
        cost = cost + config.mask_weight * (1 - mask_iou(tracks_masks, query_masks))
    return cost


def merge_duplicates(
    probs: torch.Tensor, candidates: torch.Tensor, binary: torch.Tensor, nms_iou: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge candidates whose masks duplicate a higher-scoring candidate's (see the module docstring).

    Args:
        probs: ``[Q, K]`` class probabilities of all queries of the window.
        candidates: ``[N]`` query indices (any order).
        binary: bool ``[N, T_w, h, w]`` masks of the candidates.
        nms_iou: IoU over all frames jointly above which a candidate is a duplicate.

    Returns:
        ``probs`` with the kept candidates' rows raised to the maximum over their duplicates (a new tensor), and
        the bool ``[N]`` mask of the kept candidates.
    """
    iou = mask_iou(binary, binary, both_empty=0.0)  # two empty masks are not duplicates
    probs = probs.clone()
    keep = torch.zeros(len(candidates), dtype=torch.bool)
    kept: list[int] = []  # in order of decreasing score
    for j in torch.argsort(probs[candidates].max(dim=1).values, descending=True, stable=True).tolist():
        first = next((k for k in kept if iou[j, k] > nms_iou), None)
        if first is None:
            kept.append(j)
            keep[j] = True
        else:  # the highest-scoring kept candidate it duplicates takes its class evidence
            target = candidates[first]
            probs[target] = torch.maximum(probs[target], probs[candidates[j]])
    return probs, keep


class VideoTracker:
    """Links the queries of consecutive windows into video-level tracks and selects the official top-k results.

    Args:
        orig_size: ``(h, w)`` of the original frames (masks are written at this size).
        config: association and selection settings.
        chunk_frames: frames resized to the original size at a time (bounds the float buffer).
    """

    def __init__(
        self, orig_size: tuple[int, int], config: AssociationConfig | None = None, chunk_frames: int = 8
    ) -> None:
        self.orig_size = (int(orig_size[0]), int(orig_size[1]))
        self.config = config or AssociationConfig()
        self.chunk_frames = chunk_frames
        self.tracks: list[_Track] = []
        self._live: list[int] = []
        self._owned_to = 0

    def add_window(self, out: WindowOutput, own_end: int) -> None:
        """Associate one window's queries with the live tracks and record the frames it owns.

        Args:
            out: the window's raw outputs; windows must arrive in order and overlap or touch the previous one.
            own_end: first frame the window does not own (:func:`owned_end`).
        """
        if out.start > self._owned_to or own_end <= self._owned_to:
            raise ValueError(
                f"windows must arrive in order: window starts at {out.start} and owns up to {own_end}, "
                f"frames up to {self._owned_to} are already owned"
            )
        probs = out.logits.float().sigmoid()  # [Q, K]
        num_cand = min(self.config.candidates, probs.shape[0])
        candidates = torch.sort(torch.topk(probs.max(dim=1).values, num_cand).indices).values  # query order
        binary = out.mask_logits[candidates] > 0  # [N, T_w, h4, w4]
        if self.config.nms_iou is not None:
            probs, keep = merge_duplicates(probs, candidates, binary, self.config.nms_iou)
            candidates, binary = candidates[keep], binary[keep]
        assignment = self._match(out, candidates, binary)
        new_live = []
        for j, query in enumerate(candidates.tolist()):
            if j in assignment:
                index = assignment[j]
            else:
                index = len(self.tracks)
                self.tracks.append(_Track(out.queries[query], binary[j], out.start, torch.zeros(probs.shape[1])))
            track = self.tracks[index]
            track.embedding, track.masks, track.window_start = out.queries[query].float(), binary[j], out.start
            self._record(track, probs[query], out.mask_logits[query], out.start, own_end)
            new_live.append(index)
        for index in set(self._live) - set(new_live):  # ended tracks: drop what only association needs
            self.tracks[index].masks = self.tracks[index].masks[:0]
        self._live = new_live
        self._owned_to = own_end

    def _match(self, out: WindowOutput, candidates: torch.Tensor, binary: torch.Tensor) -> dict[int, int]:
        """``{candidate position: track index}`` for the candidates that continue a live track."""
        if not self._live:
            return {}
        live = [self.tracks[i] for i in self._live]
        prev_start = live[0].window_start
        shared = max(0, prev_start + live[0].masks.shape[0] - out.start)
        track_masks = torch.stack([t.masks[out.start - prev_start :] for t in live])[:, :shared]
        cost = association_cost(
            torch.stack([t.embedding for t in live]),
            track_masks,
            out.queries[candidates],
            binary[:, :shared],
            self.config,
        )
        rows, cols = linear_sum_assignment(cost.numpy())
        return {int(c): self._live[int(r)] for r, c in zip(rows, cols) if cost[r, c] <= self.config.max_cost}

    def _record(self, track: _Track, probs: torch.Tensor, logits: torch.Tensor, start: int, own_end: int) -> None:
        owned = range(self._owned_to, own_end)
        track.prob_sum += probs * len(owned)
        track.weight += len(owned)
        for chunk in range(owned.start, owned.stop, self.chunk_frames):
            stop = min(chunk + self.chunk_frames, owned.stop)
            part = logits[chunk - start : stop - start]  # [t, h4, w4]
            resized = F.interpolate(part[:, None].float(), self.orig_size, mode="bilinear", align_corners=False)
            binary = resized.sigmoid().numpy()[:, 0] > 0.5  # official threshold, computed the same way
            track.any_foreground |= bool(binary.any())
            for frame, counts in zip(range(chunk, stop), _encode(binary)):
                track.counts[frame] = counts

    def results(self, num_frames: int) -> list[dict[str, Any]]:
        """Official top-k selection over the tracks -> ``[{score, category_id, segmentations}]``.

        Args:
            num_frames: video length; every frame must have been owned by a window.
        """
        if self._owned_to != num_frames:
            raise ValueError(f"the windows owned {self._owned_to} frames but the video has {num_frames}")
        if not self.tracks:
            return []
        exponent = self.config.coverage_exponent
        scores = torch.stack(
            [t.prob_sum / max(t.weight, 1) * (t.weight / num_frames) ** exponent for t in self.tracks]
        )  # [N, K]
        num_classes = scores.shape[1]
        flat = scores.flatten()
        hits: dict[int, list[int]] = {}
        for idx in torch.topk(flat, min(self.config.top_k, flat.numel())).indices.tolist():
            hits.setdefault(idx // num_classes, []).append(idx % num_classes)
        height, width = self.orig_size
        empty = _encode(np.zeros((1, height, width), dtype=bool))[0]
        results = []
        for index, classes in hits.items():
            track = self.tracks[index]
            if not track.any_foreground:
                continue
            for cls in classes:
                score = float(scores[index, cls].numpy())
                segs: list[dict[str, Any] | None]
                if score < self.config.score_floor:
                    segs = [None] * num_frames
                else:
                    segs = [{"size": [height, width], "counts": track.counts.get(t, empty)} for t in range(num_frames)]
                results.append({"score": score, "category_id": int(cls), "segmentations": segs})
        return results


# ---------------------------------------------------------------------------------------------------- outputs
def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def video_output_dir(output: str | Path, name: str) -> Path:
    """``OUTPUT/videos/<safe name>``."""
    return Path(output) / "videos" / name


def read_marker(output: str | Path, name: str) -> dict[str, Any] | None:
    """The ``_COMPLETE`` marker of a video's outputs, or None when absent or unreadable."""
    path = video_output_dir(output, name) / COMPLETE_MARKER
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def outputs_complete(output: str | Path, name: str, fingerprint: dict[str, Any]) -> bool:
    """True when the video's outputs exist, carry a marker and were made with the same settings (``fingerprint``)."""
    marker = read_marker(output, name)
    folder = video_output_dir(output, name)
    if marker is None or marker.get("fingerprint") != fingerprint:
        return False
    return all((folder / f).is_file() for f in marker.get("files", VIDEO_OUTPUT_FILES))


def commit_video_outputs(
    output: str | Path, name: str, fingerprint: dict[str, Any], write: Callable[[Path], dict[str, Any]]
) -> Path:
    """Write a video's outputs into a staging folder, then move it into place in one rename.

    ``write(folder)`` writes the files and returns extra marker fields; the ``_COMPLETE`` marker is written last,
    inside the staging folder, so a crash at any point leaves either the old outputs or no folder, never a
    half-written one that looks complete. Existing outputs of the video are replaced.

    Returns:
        the final folder.
    """
    final = video_output_dir(output, name)
    staging = final.parent / f".{name}.{uuid.uuid4().hex}.partial"
    staging.mkdir(parents=True)
    try:
        extra = write(staging)
        files = sorted(p.name for p in staging.iterdir())
        marker = {"fingerprint": fingerprint, "files": files, **extra}
        (staging / COMPLETE_MARKER).write_text(json.dumps(marker), encoding="utf-8")
        if final.exists():
            trash = final.parent / f".{name}.{uuid.uuid4().hex}.old"
            os.replace(final, trash)
            os.replace(staging, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def merged_results(output: str | Path, videos: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], list[dict]]:
    """Merge the per-video results of the completed videos into one YouTube-VIS results list.

    Args:
        output: the output folder.
        videos: ``(relative path, safe name)`` of the videos to include; ids are 1.. in relative-path order.

    Returns:
        ``(results, index)``: results with ``video_id``, and ``[{id, video, name, length, height, width}]``.
    """
    results: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    for video_id, (video, name) in enumerate(sorted(videos), start=1):
        data = json.loads((video_output_dir(output, name) / RESULTS_FILE).read_text(encoding="utf-8"))
        index.append(
            {
                "id": video_id,
                "video": video,
                "name": name,
                "length": data["num_frames"],
                "height": data["height"],
                "width": data["width"],
            }
        )
        results.extend({"video_id": video_id, **entry} for entry in data["results"])
    return results, index


def summary(
    processed: list[dict[str, Any]], skipped: list[dict[str, str]], failed: list[dict[str, str]], wall_seconds: float
) -> dict[str, Any]:
    """The batch ``summary.json``: lists sorted by video, plus frames and videos per second of the processed ones."""
    frames = sum(int(p["frames"]) for p in processed)

    def rate(count: int) -> float:
        return count / wall_seconds if wall_seconds > 0 else 0.0

    return {
        "processed": sorted(processed, key=lambda p: p["video"]),
        "skipped": sorted(skipped, key=lambda p: p["video"]),
        "failed": sorted(failed, key=lambda p: p["video"]),
        "frames": frames,
        "seconds": wall_seconds,
        "frames_per_second": rate(frames),
        "videos_per_second": rate(len(processed)),
    }
