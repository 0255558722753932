"""Render ``docs/reliability.md`` from the case registry and the outcomes the tests observed.

Usage::

    SEQFORMER_RELIABILITY_OBSERVED=/tmp/observed.json python -m pytest tests/reliability -m "not cuda"
    python -m tests.reliability.report /tmp/observed.json > docs/reliability.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.reliability.cases import ALL_CASES, FAULT_CASES, SECURITY_CASES

HEADER = """# Reliability: faults and bad input

Every row is a test under `tests/reliability/` (the id is the pytest id). *Documented* is the promised outcome,
which the test asserts; *observed* is what the last recorded run saw (messages on one line, cut at 220
characters, temporary paths shown as `<tmp>`). Rows marked **known bug** are strict `xfail` tests: they fail today
for the reason given, and once the bug is fixed they fail the suite until the mark is removed.

`test_job_fault.py` is marked `slow` (two whole `seqformer run` jobs); everything else runs in the default selection.
Regenerate this file: `SEQFORMER_RELIABILITY_OBSERVED=/tmp/obs.json .venv/bin/python -m pytest tests/reliability -m
"not cuda"`, then `.venv/bin/python -m tests.reliability.report /tmp/obs.json > docs/reliability.md`.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(observed: dict[str, dict[str, str]]) -> str:
    lines = [HEADER]
    sections = [("Faults", FAULT_CASES), ("Security defaults", SECURITY_CASES), ("Bad input", ALL_CASES)]
    for title, cases in sections:
        lines += [
            f"## {title}",
            "",
            "| case | input / fault | documented outcome | observed | result |",
            "|---|---|---|---|---|",
        ]
        for case in cases:
            seen = observed.get(case.id, {})
            result = seen.get("result", "not run")
            bug = getattr(case, "bug", None)
            if bug:
                result = f"**known bug**: {bug}"
            lines.append(
                f"| `{case.id}` | {_cell(case.given)} | {_cell(case.expected)} | "
                f"{_cell(seen.get('observed', '(not recorded)'))} | {_cell(result)} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    data = json.loads(source.read_text()) if source and source.is_file() else {}
    sys.stdout.write(render(data))
