"""SeqFormer platform: video instance segmentation on Ray + MLflow.

Subpackages:
- ``seqformer.kernels``: the multi-scale deformable attention op (C++/CUDA kernels, PyTorch reference).
- ``seqformer.model``: SeqFormer in plain PyTorch (backbone, transformer, heads, matcher, criterion, post-processing).
- ``seqformer.pipelines``: YouTube-VIS / COCO readers, clip records, augmentation, Ray Data wiring, evaluation.
- ``seqformer.platform``: experiment config, Ray Train / Tune drivers, MLflow tracking, the ``seqformer`` CLI.
"""

__version__ = "0.1.0"


def _default_local_ray_env() -> None:
    """Keep a local Ray started by this process on 127.0.0.1 with token auth explicitly off.

    Ray reads these variables when it is imported, so they are set here, before anything imports ray. They only
    affect a Ray that this process starts itself; with ``RAY_ADDRESS`` set (a cluster, ``ray job submit``) nothing
    is changed, and values already in the environment always win.
    """
    import os

    if os.environ.get("RAY_ADDRESS"):
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


_default_local_ray_env()
