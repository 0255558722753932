"""SeqFormer platform: video instance segmentation on Ray + MLflow.

Subpackages:
- ``seqformer.kernels``: the multi-scale deformable attention op (C++/CUDA kernels, PyTorch reference).
- ``seqformer.model``: SeqFormer in plain PyTorch (backbone, transformer, heads, matcher, criterion, post-processing).
- ``seqformer.pipelines``: YouTube-VIS / COCO readers, clip records, augmentation, Ray Data wiring, evaluation.
- ``seqformer.platform``: experiment config, Ray Train / Tune drivers, MLflow tracking, the ``seqformer`` CLI.
"""

__version__ = "0.1.0"
