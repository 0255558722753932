"""YouTube-VIS evaluation: the official metrics (faster), results writing and held-out splits.

* :func:`evaluate_files`, :func:`evaluate`, :class:`YTVISEvaluator` — scoring (:mod:`.ytvis_eval`).
* :func:`write_results_json`, :func:`write_results_zip` — results files for local scoring or the challenge server.
* :func:`split_annotations` — train/val subsets of a training annotation file, by video.
"""

from seqformer.pipelines.evaluation.accumulate import METRIC_KEYS
from seqformer.pipelines.evaluation.results import write_results_json, write_results_zip
from seqformer.pipelines.evaluation.split import split_annotations
from seqformer.pipelines.evaluation.ytvis_eval import YTVISEvaluator, evaluate, evaluate_files

__all__ = [
    "METRIC_KEYS",
    "YTVISEvaluator",
    "evaluate",
    "evaluate_files",
    "split_annotations",
    "write_results_json",
    "write_results_zip",
]
