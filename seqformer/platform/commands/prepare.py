"""``seqformer prepare``: YouTube-VIS / COCO → sharded Parquet clip records with Ray Data (see pipelines/prepare.py).

Two forms::

    seqformer prepare EXPERIMENT.yaml [key=value ...]
    seqformer prepare --ytvis-root DIR --annotations FILE --output DIR [--num-frames N] [--shard-size K]
                      [--max-size S] [--num-cpus C]

The experiment form prepares ``data.train_annotations`` (and COCO when ``data.joint_coco``) into
``data.prepared_dir``; for ``data.dataset: synthetic`` it first generates the data under ``data.root`` (train from
``data.synthetic.seed``, val from seed + 1) unless it is already there.
"""

from __future__ import annotations

import argparse

HELP = "turn YouTube-VIS / COCO into sharded Parquet clip records (Ray Data)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", nargs="?", help="experiment YAML (omit for the ad-hoc form)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.shard_size=64")
    parser.add_argument("--ytvis-root", help="YouTube-VIS root; frames under DIR/JPEGImages/<video>/")
    parser.add_argument("--annotations", help="YouTube-VIS instances JSON")
    parser.add_argument("--coco-root", help="COCO image folder (train2017/), optional")
    parser.add_argument("--coco-annotations", help="COCO instances JSON, optional")
    parser.add_argument(
        "--coco-category-map",
        default="ytvis19",
        choices=["ytvis19", "identity"],
        help="COCO→YouTube-VIS category mapping (default: the official ytvis19 map)",
    )
    parser.add_argument("--output", help="output folder for the shards and manifest.json")
    parser.add_argument(
        "--num-frames",
        type=int,
        default=None,
        help="records hold at most N consecutive frames (long videos become several records)",
    )
    parser.add_argument("--shard-size", type=int, default=None, help="clip records per shard (default 256)")
    parser.add_argument("--max-size", type=int, default=None, help="longer side of stored frames (default 768)")
    parser.add_argument("--jpeg-quality", type=int, default=None, help="quality of re-encoded frames (default 95)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray started if none runs")
    parser.add_argument("--local", action="store_true", help="build in this process without Ray (debugging)")


def _adhoc(args: argparse.Namespace) -> tuple[list, str, dict]:
    from seqformer.pipelines.prepare import Source

    missing = [
        flag
        for flag, value in (
            ("--ytvis-root", args.ytvis_root),
            ("--annotations", args.annotations),
            ("--output", args.output),
        )
        if not value
    ]
    if missing:
        raise ValueError(
            f"missing {', '.join(missing)}: pass an EXPERIMENT.yaml, or --ytvis-root DIR "
            "--annotations FILE --output DIR"
        )
    sources = [Source("ytvis", args.annotations, args.ytvis_root)]
    if args.coco_annotations or args.coco_root:
        if not (args.coco_annotations and args.coco_root):
            raise ValueError("--coco-root and --coco-annotations must be given together")
        sources.append(Source("coco", args.coco_annotations, args.coco_root, args.coco_category_map))
    return sources, args.output, {}


def _from_experiment(args: argparse.Namespace) -> tuple[list, str, dict]:
    from pathlib import Path

    from seqformer.pipelines.prepare import Source
    from seqformer.platform.config import load_experiment

    cfg = load_experiment(args.experiment, args.overrides)
    data = cfg.data
    if data.dataset == "synthetic":
        _ensure_synthetic(data)
    if not (data.root and data.train_annotations):
        raise ValueError(f"{args.experiment}: data.root and data.train_annotations must be set to prepare")
    sources = [Source("ytvis", data.train_annotations, data.root)]
    if data.joint_coco:
        category_map = "identity" if data.dataset == "synthetic" else "ytvis19"
        sources.append(Source("coco", str(data.coco_annotations), str(data.coco_root), category_map))
    defaults = {"shard_size": data.shard_size, "max_size": data.max_size, "jpeg_quality": data.jpeg_quality}
    return sources, str(Path(data.prepared_dir)), defaults


def _ensure_synthetic(data) -> None:  # noqa: ANN001 - DataConfig, imported lazily
    from pathlib import Path

    from seqformer.pipelines import synthetic

    if not data.root:
        raise ValueError("data.root must name the folder for the synthetic dataset (data.dataset is 'synthetic')")
    root, syn = Path(data.root), data.synthetic
    train = Path(data.train_annotations or root / "train.json")
    val = Path(data.val_annotations or root / "val.json")
    if not train.is_file():
        synthetic.generate_ytvis(
            root,
            syn.train_videos,
            syn.height,
            syn.width,
            syn.min_frames,
            syn.max_frames,
            seed=syn.seed,
            annotations_name=str(train.resolve()),
        )
        print(f"generated {syn.train_videos} synthetic training videos under {root}")
    if not val.is_file():
        synthetic.generate_ytvis(
            Path(data.val_root or root),
            syn.val_videos,
            syn.height,
            syn.width,
            syn.min_frames,
            syn.max_frames,
            seed=syn.seed + 1,
            annotations_name=str(val.resolve()),
        )
        print(f"generated {syn.val_videos} synthetic validation videos under {data.val_root or root}")
    if data.joint_coco and data.coco_annotations and not Path(data.coco_annotations).is_file():
        raise ValueError(f"data.coco_annotations {data.coco_annotations} does not exist")
    data.train_annotations = data.train_annotations or str(train)


def run(args: argparse.Namespace) -> int:
    from seqformer.pipelines.prepare import PrepareOptions, local_executor, prepare

    sources, output, defaults = _from_experiment(args) if args.experiment else _adhoc(args)
    chosen = {"shard_size": args.shard_size, "max_size": args.max_size, "jpeg_quality": args.jpeg_quality}
    options = PrepareOptions(
        num_frames=args.num_frames, **{k: v for k, v in {**defaults, **{k: v for k, v in chosen.items() if v}}.items()}
    )
    if args.local:
        executor = local_executor(options)
    else:
        from seqformer.pipelines.ray_data import ensure_ray, ray_executor

        ensure_ray(num_cpus=args.num_cpus)
        executor = ray_executor(options)
    manifest = prepare(sources, output, options, executor=executor)
    reused = sum(s["reused"] for s in manifest["shards"])
    print(
        f"prepared {manifest['records']} clip records in {len(manifest['shards'])} shards ({reused} reused) -> {output}"
    )
    for item in manifest["skipped"]:
        print(f"  skipped {item['dataset']} video {item['video_id']}: {item['reason']}")
    return 0
