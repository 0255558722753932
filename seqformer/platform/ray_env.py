"""Starting or joining Ray, and prebuilding the compiled kernel once per node before training workers start."""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int = 512) -> bool:
    """Connect to ``address`` / ``$RAY_ADDRESS``, or start a loopback-only local Ray. Returns True if started here."""
    import ray

    # the local-Ray settings (loopback only, auth explicitly off, workers not reniced) are the pipelines' ones
    from seqformer.pipelines.ray_data import LOCAL_RAY_ENV, LOCAL_SYSTEM_CONFIG

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        logger.info("connected to the Ray cluster at %s", address)
        return False
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        object_store_memory=object_store_mb * 2**20,
        log_to_driver=True,
        _system_config=LOCAL_SYSTEM_CONFIG,
        runtime_env={
            "env_vars": {k: os.environ[k] for k in (*LOCAL_RAY_ENV, "SEQFORMER_KERNELS_DIR") if k in os.environ},
            "worker_process_setup_hook": "seqformer.platform.ray_env.quiet_local_worker_logs",
        },
    )
    logger.info("started a local Ray on 127.0.0.1 (%s CPUs)", ray.cluster_resources().get("CPU"))
    return True


# Ray Train's placement-group cleaner asks the State API every few seconds whether the training controller is alive;
# the State API is served by the dashboard, which a local Ray started here does not run, so every poll logged a warning
# ("Failed to query Ray Train Controller actor state ...") for the whole run. Its real work (removing the placement
# group of a controller that died) is unaffected.
_QUIET_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_local_worker_logs() -> None:
    """Worker-process setup hook of a local Ray started by :func:`init_ray`: silences the cleaner's poll warnings."""
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _build_on_this_node(cuda: bool) -> dict[str, Any]:
    import socket

    from seqformer.kernels.build import build_kernels

    built = build_kernels(cuda=cuda)
    return {"node": socket.gethostname(), "path": ", ".join(str(b.directory) for b in built)}


def prebuild_kernels_on_all_nodes(cuda: bool) -> list[dict[str, Any]]:
    """Build (or load from cache) the extension once on every alive node, so that workers never race to build it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    build = ray.remote(num_cpus=0)(_build_on_this_node)
    refs = [
        build.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(cuda)
        for node in ray.nodes()
        if node.get("Alive")
    ]
    results = ray.get(refs)
    for item in results:
        logger.info("deformable-attention kernel ready on %s: %s", item["node"], item["path"])
    return results
