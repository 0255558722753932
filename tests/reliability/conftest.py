"""Collects what each reliability test observed; `SEQFORMER_RELIABILITY_OBSERVED=FILE` saves it for the table.

``python -m tests.reliability.report FILE > docs/reliability.md`` renders the table from the case registry
(documented outcomes) and FILE (observed outcomes). Several pytest sessions may add to the same FILE.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

OBSERVED: dict[str, dict[str, str]] = {}
ENV = "SEQFORMER_RELIABILITY_OBSERVED"


@pytest.fixture
def observe(request):
    """``observe(case_id, text)`` records what the test saw, with the test's outcome filled in at the end."""

    def record(case_id: str, text: str) -> None:
        OBSERVED[case_id] = {"observed": text, "test": request.node.nodeid}

    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        for entry in OBSERVED.values():
            if entry["test"] == item.nodeid:
                entry["result"] = "xfail (known bug)" if hasattr(report, "wasxfail") else report.outcome


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get(ENV)
    if not target or not OBSERVED:
        return
    path = Path(target)
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(OBSERVED)
    path.write_text(json.dumps(merged, indent=1, ensure_ascii=False, sort_keys=True))
