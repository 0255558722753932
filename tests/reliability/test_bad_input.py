"""The bad-input corpus (see corpus.py): every case through its real entry point, with its documented outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.cases import ALL_CASES
from tests.reliability.corpus import Case, Corpus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("corpus"))


def _param(case: Case):  # noqa: ANN202
    marks = [pytest.mark.xfail(strict=True, reason=f"known bug: {case.bug}")] if case.bug else []
    return pytest.param(case, id=case.id, marks=marks)


def test_the_corpus_has_at_least_twenty_distinct_cases():
    ids = [case.id for case in ALL_CASES]
    assert len(ids) >= 20 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", [_param(c) for c in ALL_CASES])
def test_bad_input_has_its_documented_outcome(case: Case, corpus: Corpus, tmp_path: Path, observe) -> None:
    case.check(corpus, tmp_path, lambda text: observe(case.id, text))


def test_reliability_doc_lists_every_case():
    from tests.reliability.cases import FAULT_CASES, SECURITY_CASES

    doc = (REPO / "docs" / "reliability.md").read_text()
    missing = [c.id for c in (*FAULT_CASES, *SECURITY_CASES, *ALL_CASES) if f"`{c.id}`" not in doc]
    assert not missing, f"docs/reliability.md lacks {missing}; regenerate it (see tests/reliability/report.py)"
