"""The API client's pure parts (kube/api.py): backoff between retries, errors that name their cause."""

from __future__ import annotations

import json

import pytest
from slot_operator.kube import api


@pytest.mark.parametrize("attempt", range(8))
def test_backoff_is_jittered_under_a_growing_capped_ceiling(attempt: int) -> None:
    ceiling = min(api.BACKOFF_BASE * 2**attempt, api.BACKOFF_MAX)
    delays = [api.backoff_delay(attempt) for _ in range(200)]
    assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    assert len(set(delays)) > 100  # jittered: clients that failed together do not retry together


def test_retry_after_is_a_floor_within_bounds() -> None:
    assert api.backoff_delay(0, retry_after=3) == 3
    assert api.backoff_delay(0, retry_after=3600) == api.BACKOFF_MAX * 4


def test_errors_carry_the_servers_reason_and_field_causes() -> None:
    body = {
        "kind": "Status",
        "status": "Failure",
        "reason": "Invalid",
        "message": 'Job.batch "x" is invalid: spec.template.spec.containers[0].resources.limits: Invalid value',
        "details": {"causes": [{"field": "spec.template.spec.containers[0].resources.limits", "message": "bad"}]},
        "code": 422,
    }
    error = api.api_error(422, json.dumps(body).encode())
    assert (error.status, error.reason) == (422, "Invalid")
    assert error.causes == (("spec.template.spec.containers[0].resources.limits", "bad"),)
    assert str(error).startswith("HTTP 422: Job.batch")


def test_an_error_body_that_is_not_json_is_kept_short() -> None:
    error = api.api_error(502, b"<html>" + b"x" * 1000)
    assert error.status == 502
    assert len(error.message) == 300
