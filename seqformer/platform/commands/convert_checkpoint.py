"""``seqformer convert-checkpoint OFFICIAL.pth OUT.pth``: import an official SeqFormer model-zoo checkpoint."""

from __future__ import annotations

import argparse

HELP = "import an official SeqFormer checkpoint (strict key/shape check, weights_only load)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("official", help="official checkpoint (.pth with a 'model' entry, or a bare state dict)")
    parser.add_argument("out", help="output file: {'model': state dict, 'model_config': ModelConfig fields}")
    parser.add_argument(
        "--backbone",
        choices=["resnet50", "resnet101", "resnext101", "swin_l"],
        default=None,
        help="backbone (default: inferred from the checkpoint's keys)",
    )
    parser.add_argument("--num-classes", type=int, default=None, help="class count (default: from the class head)")
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="convert even when keys are missing, unexpected or mis-shaped (they are listed); refused by default",
    )


def run(args: argparse.Namespace) -> int:
    from seqformer.model.checkpoint import (
        convert_official_checkpoint,
        extract_model_state,
        infer_config_fields,
        read_checkpoint,
    )
    from seqformer.model.config import ModelConfig

    try:
        fields = infer_config_fields(extract_model_state(read_checkpoint(args.official)))
        if args.backbone is not None:
            fields["backbone"] = args.backbone
        if args.num_classes is not None:
            fields["num_classes"] = args.num_classes
        cfg = ModelConfig.from_dict(fields)
        report = convert_official_checkpoint(args.official, args.out, cfg=cfg, strict=not args.allow_partial)
    except (FileNotFoundError, ValueError) as err:
        print(f"seqformer convert-checkpoint: {err}")
        return 1
    print(
        f"wrote {args.out} ({cfg.backbone}, {cfg.num_classes} classes, {cfg.num_queries} queries): {report.summary()}"
    )
    return 0
