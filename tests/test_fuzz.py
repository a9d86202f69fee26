"""A bounded fuzzing run in the suite: schemathesis over /api, /ogc, /sta/v1.1 and /open311/v2 on both backends,
a fixed seed and a few valid and invalid cases per operation; no server error, no response outside its schema.
The full-budget run is scripts/fuzz.py (figures in docs/hardening.md)."""

from __future__ import annotations

import pytest

from tests import fuzzing

#: Valid and as many invalid cases per operation: about 1,100 requests per backend, two minutes each.
EXAMPLES = 3


@pytest.mark.slow
def test_fuzzer_finds_no_server_error_and_no_schema_violation(api):
    report = fuzzing.run(api.app, api.login("admin"), examples=EXAMPLES)
    assert report.operations > 180 and report.cases > 900, report
    failures = {k: v for k, v in report.failures.items() if k not in fuzzing.KNOWN}
    assert not failures, "\n\n".join(f"{m} {p}: {why}" for (m, p), why in failures.items())
