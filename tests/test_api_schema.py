"""A property-based run of schemathesis against the live ``/openapi.json``: generated
requests for every operation, a bounded number each; no 5xx, and every response
matches the schema. Runs through schemathesis's Python API inside one test (its
pytest integration would multiply the daemon start per operation)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from mailbuilder import build_mail

from emaild.intake import Envelope

EXAMPLES = 15
BUDGET_SECONDS = 60.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_generated_requests_get_no_5xx_and_match_the_schema(api: Any) -> None:
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
    )

    api.app.pipeline.ingest(build_mail(), Envelope(channel="pipe"))  # case 1 exists
    schema = schemathesis.openapi.from_url(f"{api.base}/api/v1/openapi.json")
    headers = {"Authorization": f"Bearer {api.tokens['admin']}"}
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    started = time.monotonic()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            response = case.call(base_url=api.base, headers=headers, timeout=30)
            case.validate_response(response, checks=checks)

        run()
        assert time.monotonic() - started < BUDGET_SECONDS * 2, "schemathesis run over budget"
    assert operations >= 14
