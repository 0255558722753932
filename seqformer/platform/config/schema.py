"""Typed experiment configuration (pydantic 2): the single place where defaults live.

An experiment YAML has the sections ``model``, ``data``, ``train``, ``eval``, ``tune``, ``tracking`` and
``resources``. Unknown keys are rejected everywhere. ``model`` is :class:`seqformer.model.config.ModelConfig`, a frozen
dataclass owned by the model package, so the model itself never imports pydantic.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from seqformer.model.config import ModelConfig

# Unknown keys inside ``model:`` are rejected as in every other section.
ModelConfig.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, assignments are validated."""

    # inf / nan are never meaningful settings (an infinite learning rate would pass gt=0 otherwise)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SyntheticDataConfig(Section):
    """Generated moving-shapes data in the exact YouTube-VIS layout (demo and tests)."""

    train_videos: int = Field(48, ge=1, description="Number of training videos to generate.")
    val_videos: int = Field(16, ge=1, description="Number of validation videos to generate.")
    height: int = Field(96, ge=32, le=2048, description="Frame height in pixels.")
    width: int = Field(96, ge=32, le=2048, description="Frame width in pixels.")
    min_frames: int = Field(10, ge=1, description="Fewest frames per video.")
    max_frames: int = Field(40, ge=1, description="Most frames per video.")
    seed: int = Field(0, description="Seed of the training split; the validation split uses seed + 1.")

    @model_validator(mode="after")
    def _frames_order(self) -> SyntheticDataConfig:
        if self.min_frames > self.max_frames:
            raise ValueError(
                f"data.synthetic.min_frames ({self.min_frames}) must be <= data.synthetic.max_frames "
                f"({self.max_frames})"
            )
        return self


class DataConfig(Section):
    """Where the data is, how it is prepared into clip records, and how clips are sampled and augmented."""

    dataset: Literal["ytvis19", "ytvis21", "synthetic"] = Field(
        "ytvis19", description="Dataset family; 'synthetic' generates moving shapes under data.root."
    )
    root: str | None = Field(
        None, description="YouTube-VIS root holding JPEGImages/<video>/<frame>.jpg (train frames)."
    )
    train_annotations: str | None = Field(
        None, description="Training instances JSON (e.g. instances_train_sub.json), relative to the YAML's cwd."
    )
    val_root: str | None = Field(None, description="Root of the validation frames; defaults to data.root.")
    val_annotations: str | None = Field(
        None, description="Held-out validation instances JSON with ground truth (e.g. instances_val_sub.json)."
    )
    coco_root: str | None = Field(None, description="COCO train2017 image folder, for joint training.")
    coco_annotations: str | None = Field(
        None, description="COCO instances JSON (coco_keepfor_ytvis19.json or the full train2017 file)."
    )
    joint_coco: bool = Field(False, description="Add COCO images as 5-frame pseudo clips (official joint training).")
    prepared_dir: str = Field("prepared", description="Output folder of `seqformer prepare` (Parquet shards).")
    shard_size: int = Field(256, ge=1, description="Clip records per Parquet shard.")
    max_size: int = Field(768, ge=32, description="Frames are stored resized so that the longer side <= this.")
    jpeg_quality: int = Field(95, ge=50, le=100, description="JPEG quality of frames stored in clip records.")
    train_scales: list[int] = Field(
        default_factory=lambda: [288, 320, 352, 392, 416, 448, 480, 512],
        description="Shorter-side sizes of the official multi-scale resize.",
    )
    max_train_size: int = Field(768, ge=32, description="Longer-side cap of the training resize.")
    crop_scales: list[int] = Field(
        default_factory=lambda: [400, 500, 600], description="Shorter-side sizes before the random crop."
    )
    crop_min: int = Field(384, ge=1, description="Smallest random-crop side.")
    crop_max: int = Field(600, ge=1, description="Largest random-crop side.")
    crop_prob: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Probability of the resize + random-crop branch of the augmentation (official 0.5; the crop "
        "can cut objects, which keep their category).",
    )
    photometric: bool = Field(True, description="Per-frame photometric distortion (official recipe).")
    shared_batch_scale: bool = Field(
        False,
        description="Not official (off officially: every clip draws its own size): every clip of a step's batch, on "
        "every worker, takes the same multi-scale size, drawn per step from train_scales (the same distribution of "
        "sizes per clip). Clips then need no padding to a batch partner's size, and no worker waits at the "
        "gradient all-reduce for one that drew a larger size.",
    )
    eval_short_side: int = Field(360, ge=16, description="Inference resize of the shorter side (official 360).")
    items_per_video: Literal["one", "per_frame"] = Field(
        "per_frame", description="Training items per video per epoch: one per annotated frame (official) or one."
    )
    shuffle_buffer: int = Field(
        64, ge=0,
        description="Records (videos) in the shuffle buffer: each training item is drawn at random from the items "
        "of this many records (0: stream order). A value as large as a worker's shard shuffles the whole epoch.",
    )
    synthetic: SyntheticDataConfig = Field(
        default_factory=SyntheticDataConfig, description="Generator settings when data.dataset is 'synthetic'."
    )

    @field_validator("train_scales", "crop_scales")
    @classmethod
    def _non_empty_positive(cls, value: list[int]) -> list[int]:
        if not value or any(v <= 0 for v in value):
            raise ValueError(f"must be a non-empty list of positive sizes, got {value}")
        return value

    @model_validator(mode="after")
    def _crop_order(self) -> DataConfig:
        if self.crop_min > self.crop_max:
            raise ValueError(f"data.crop_min ({self.crop_min}) must be <= data.crop_max ({self.crop_max})")
        if self.joint_coco and not (self.coco_root and self.coco_annotations):
            raise ValueError(
                "data.joint_coco is true but data.coco_root / data.coco_annotations are not both set; "
                "set them or turn data.joint_coco off"
            )
        return self


class TrainConfig(Section):
    """Optimisation and checkpointing (official defaults: AdamW, lr 2e-4, drops at epochs 4 and 10)."""

    epochs: int = Field(12, ge=1, description="Training epochs (one epoch = one pass over the clip records).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps (smoke runs).")
    time_budget_s: float | None = Field(
        None, gt=0, description="Stop training after this many seconds of wall time (demo); None = no limit."
    )
    batch_size: int = Field(2, ge=1, description="Clips per worker per step (official: 2 per GPU).")
    grad_accum_steps: int = Field(1, ge=1, description="Micro-batches accumulated per optimiser step.")
    lr: float = Field(2e-4, gt=0, description="Base learning rate (transformer, heads, mask branch).")
    lr_backbone: float = Field(2e-5, ge=0, description="Learning rate of parameters under 'backbone.0'.")
    lr_linear_proj_mult: float = Field(
        0.1, gt=0, description="Multiplier of lr for 'reference_points' and 'sampling_offsets' parameters."
    )
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay for every group.")
    clip_max_norm: float = Field(0.1, ge=0, description="Global gradient-norm clip (0 disables).")
    lr_drop: list[int] = Field(
        default_factory=lambda: [4, 10],
        description="Milestones at which lr is multiplied by lr_gamma, in the unit of lr_drop_unit.",
    )
    lr_gamma: float = Field(0.1, gt=0, le=1, description="Multiplier applied at every lr_drop milestone.")
    lr_drop_unit: Literal["epoch", "step", "budget"] = Field(
        "epoch",
        description="What lr_drop counts: epochs (official), optimiser steps (short runs), or percent of "
        "train.time_budget_s ('budget': the drop comes at the first step after that share of the budget has passed, "
        "the same step on every worker, so a time-budgeted run drops at the same point of its budget on a fast or a "
        "slow machine).",
    )
    warmup_steps: int = Field(0, ge=0, description="Linear lr warm-up steps (0 = official, none).")
    amp: Literal["none", "bf16", "fp16"] = Field(
        "none",
        description="Autocast dtype (official: none): bf16 on GPU or CPU (fast on CPUs with AMX), fp16 on GPU only.",
    )
    seed: int = Field(42, description="Base seed; each worker adds its rank.")
    init_checkpoint: str | None = Field(
        None, description="Checkpoint to initialise from (official .pth, ours, or models:/name@alias)."
    )
    drop_class_head: bool = Field(False, description="Drop class heads of init_checkpoint (COCO → YTVIS).")
    checkpoint_every_steps: int = Field(500, ge=1, description="Save a checkpoint every this many steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept (best by val metric, else latest).")
    log_every_s: float = Field(10.0, gt=0, description="Seconds between training log lines.")
    max_failures: int = Field(2, ge=0, description="Worker-group restarts Ray Train may do after a failure.")
    prefetch_batches: int = Field(2, ge=0, description="Batches prefetched by the data iterator.")

    @field_validator("lr_drop")
    @classmethod
    def _sorted_milestones(cls, value: list[int]) -> list[int]:
        if any(v < 0 for v in value) or value != sorted(value):
            raise ValueError(f"must be ascending non-negative milestones, got {value}")
        return value

    @model_validator(mode="after")
    def _budget_milestones(self) -> TrainConfig:
        if self.lr_drop_unit == "budget":
            if self.time_budget_s is None:
                raise ValueError(
                    "train.lr_drop_unit is 'budget' (lr_drop in percent of train.time_budget_s) but "
                    "train.time_budget_s is not set; set it or use lr_drop_unit 'step' or 'epoch'"
                )
            if any(not 0 < v < 100 for v in self.lr_drop):
                raise ValueError(
                    f"train.lr_drop holds percentages of train.time_budget_s when lr_drop_unit is 'budget': each "
                    f"must be in 1..99, got {self.lr_drop}"
                )
        return self


class EvalConfig(Section):
    """Validation with the YouTube-VIS evaluator."""

    enabled: bool = Field(True, description="Evaluate on data.val_annotations during and after training.")
    every_steps: int | None = Field(None, ge=1, description="Validate every this many steps (None: end only).")
    top_k: int = Field(10, ge=1, description="(query, class) pairs kept per video (official 10).")
    window: int = Field(0, ge=0, description="Frames per inference window; 0 = whole video (official).")
    window_overlap: int = Field(2, ge=0, description="Frames shared by consecutive windows.")
    nms_iou: float | None = Field(
        0.5, gt=0, le=1,
        description="With windows: a window's queries whose masks overlap a higher-scoring one's by more than this "
        "IoU are merged into it (null: no merging).",
    )
    coverage_exponent: float = Field(
        0.5, ge=0, description="With windows: track score x (frames covered / video frames) ** this (0: plain mean)."
    )
    max_videos: int | None = Field(None, ge=1, description="Evaluate on at most this many videos.")
    metric: str = Field("AP", description="Metric that picks the best checkpoint and the registry champion.")

    @model_validator(mode="after")
    def _overlap(self) -> EvalConfig:
        if self.window and self.window_overlap >= self.window:
            raise ValueError(
                f"eval.window_overlap ({self.window_overlap}) must be smaller than eval.window ({self.window})"
            )
        return self


class TuneConfig(Section):
    """Ray Tune sweep settings (used by sweep YAMLs)."""

    metric: str = Field("val/AP", description="Reported metric the sweep optimises.")
    mode: Literal["max", "min"] = Field("max", description="Whether the metric is maximised or minimised.")
    scheduler: Literal["asha", "fifo"] = Field("fifo", description="Trial scheduler.")
    grace_period: int = Field(1, ge=1, description="ASHA: reports before a trial may be stopped.")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA: halving rate.")
    num_samples: int = Field(1, ge=1, description="Samples drawn from the search space (grid repeats).")
    max_concurrent_trials: int | None = Field(None, ge=1, description="Trials run at once (default: by resources).")
    search_space: dict[str, Any] = Field(
        default_factory=dict,
        description="Dotted config key -> {grid: [...]} | {choice: [...]} | {uniform: [lo, hi]} | "
        "{loguniform: [lo, hi]} | {randint: [lo, hi]}.",
    )


class TrackingConfig(Section):
    """MLflow tracking and registry."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; None → $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working dir.",
    )
    artifact_location: str | None = Field(
        None, description="Artifact root for new experiments; None → ./mlartifacts next to the SQLite database."
    )
    experiment_name: str = Field("seqformer", description="MLflow experiment name.")
    run_name: str | None = Field(None, description="MLflow run name; None → the experiment's name.")
    registered_model_name: str | None = Field(
        None, description="Registry model that receives the best checkpoint; None disables registration."
    )
    enabled: bool = Field(True, description="Log to MLflow at all.")


class ResourcesConfig(Section):
    """Ray Train scaling."""

    num_workers: int = Field(1, ge=1, description="Training workers (one per GPU on GPU clusters).")
    use_gpu: bool = Field(False, description="Give each worker a GPU (NCCL backend) instead of CPUs (gloo).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per training worker.")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Placement of workers across nodes."
    )
    storage_path: str = Field("ray_results", description="Ray Train storage (checkpoints); shared on clusters.")
    ray_address: str | None = Field(None, description="Ray cluster address; None → $RAY_ADDRESS or a local Ray.")
    torch_threads: int | None = Field(None, ge=1, description="torch threads per worker (None: cpus_per_worker).")


class ExperimentConfig(Section):
    """One experiment: what to train on, how, how to evaluate and where to track it."""

    name: str = Field("experiment", description="Experiment name (MLflow run name, Ray Train run name).")
    description: str = Field("", description="Free text.")
    output_dir: str = Field("outputs", description="Folder for this experiment's local outputs.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="SeqFormer architecture and loss settings.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data sources, preparation and augmentation.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation and checkpoints.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Validation.")
    tune: TuneConfig = Field(default_factory=TuneConfig, description="Sweep settings.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow settings.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Ray Train scaling.")

    @model_validator(mode="after")
    def _amp_device(self) -> ExperimentConfig:
        if self.train.amp == "fp16" and not self.resources.use_gpu:
            raise ValueError(
                "train.amp: fp16 autocast runs on GPUs only and resources.use_gpu is false; "
                "set train.amp: bf16 (CPU autocast) or none"
            )
        return self
