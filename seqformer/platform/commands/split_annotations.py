"""``seqformer split-annotations TRAIN.json --out-dir DIR [--val-fraction 0.1] [--seed 0]``."""

from __future__ import annotations

import argparse

HELP = "split a YouTube-VIS training annotation file into instances_train_sub.json / instances_val_sub.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("annotations", help="YouTube-VIS training annotation file (.json or .json.gz)")
    parser.add_argument(
        "--out-dir", required=True, help="folder for instances_train_sub.json and instances_val_sub.json"
    )
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of videos held out (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    import json

    from seqformer.pipelines.evaluation import split_annotations

    paths = split_annotations(args.annotations, args.out_dir, args.val_fraction, args.seed)
    for name, path in paths.items():
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        print(f"{name}: {len(data['videos'])} videos, {len(data['annotations'])} tracks -> {path}")
    return 0
