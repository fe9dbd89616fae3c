"""Fuzzing the review API from its OpenAPI schema: no input may crash the server (5xx).

Schemathesis generates valid and malformed requests (positive and negative modes) for
every operation of the schema, a bounded number each so the test stays fast, and
sends them, logged in as a supervisor with the CSRF token, to the app in process over
a seeded store.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case

from geoscreen.review import audit
from geoscreen.web.app import create_app
from geoscreen.web.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, AuthSettings
from geoscreen.web.testing import Seeded, log_in

EXAMPLES = 15


def _has_inputs(operation: dict[str, Any]) -> bool:
    return bool(operation.get("parameters") or operation.get("requestBody"))


def _fuzz(
    operation: APIOperation,
    mode: GenerationMode,
    headers: dict[str, str],
    cookies: dict[str, str],
    calls: dict[str, int],
) -> None:
    """Send ``EXAMPLES`` generated requests to one operation; none may answer 5xx."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)  # fmt: skip
    def no_crash(case: Case) -> None:
        response = case.call(headers=headers, cookies=cookies)
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, (case.method, case.formatted_path)
        calls[operation.label] = calls.get(operation.label, 0) + 1

    no_crash()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_input_crashes_the_server(seeded: Seeded, mode: GenerationMode) -> None:
    app = create_app(
        seeded.db,
        scenes=seeded.scenes,
        evidence_root=seeded.evidence_root,
        auth=AuthSettings(ip_attempts=3),  # a few real logins, then 429s (argon2 is slow)
    )
    client = TestClient(app)
    csrf = log_in(client, "sue", seeded.password)
    headers = {"X-CSRF-Token": csrf}
    # the same token as pre-login cookie too, so login bodies get past the CSRF check
    cookies = {SESSION_COOKIE: str(client.cookies.get(SESSION_COOKIE)), LOGIN_CSRF_COOKIE: csrf}
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda op: op.path == "/api/logout",  # logging out last
    )
    assert len(operations) >= 10
    calls: dict[str, int] = {}

    for operation in operations:
        try:
            _fuzz(operation, mode, headers, cookies, calls)
        except Unsatisfiable:  # negative mode: an operation without inputs cannot be malformed
            assert mode is GenerationMode.NEGATIVE and not _has_inputs(operation.definition.raw)
    fuzzed = len(operations) if mode is GenerationMode.POSITIVE else 7
    assert len(calls) >= fuzzed, calls
    assert audit.verify(app.state.geoscreen.store).ok
    app.state.geoscreen.store.close()
