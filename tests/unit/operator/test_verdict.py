"""The probe contract: exit codes, the JSON result line, safe messages (logic/verdict.py)."""

from __future__ import annotations

import json

import pytest
from slot_operator.logic.phases import EXIT_PHASES, STALLED_PHASES, VERDICT_EXIT_CODES, Phase, phase_for_exit
from slot_operator.logic.verdict import MESSAGE_LIMIT, FailureReason, ProbeResult, parse_result_line, safe_message


@pytest.mark.parametrize(
    ("code", "phase"),
    [
        (0, Phase.READY),
        (64, Phase.IMAGE_BROKEN),
        (65, Phase.NEEDS_INIT),
        (66, Phase.NEEDS_REAUTH),
        (1, None),
        (2, None),
        (63, None),
        (67, None),
        (126, None),
        (127, None),
        (137, None),
        (143, None),
        (255, None),
        (-1, None),
    ],
)
def test_exit_code_to_phase(code: int, phase: Phase | None) -> None:
    assert phase_for_exit(code) is phase


def test_phase_api_strings() -> None:
    assert [p.value for p in Phase] == ["Pending", "Ready", "NeedsInit", "NeedsReauth", "ImageBroken"]


def test_verdict_exit_codes_are_the_non_zero_verdicts() -> None:
    assert VERDICT_EXIT_CODES == (64, 65, 66)
    assert set(EXIT_PHASES) == {0, 64, 65, 66}


def test_stalled_phases_are_those_needing_a_human() -> None:
    assert frozenset({Phase.NEEDS_INIT, Phase.NEEDS_REAUTH, Phase.IMAGE_BROKEN}) == STALLED_PHASES
    assert Phase.READY not in STALLED_PHASES
    assert Phase.PENDING not in STALLED_PHASES


def test_failure_reason_api_strings() -> None:
    assert {r.value for r in FailureReason} == {
        "ProbeCrashed",
        "ProbeTimedOut",
        "Unschedulable",
        "ClaimNotFound",
        "ClaimInUse",
        "InvalidSpec",
        "ProbeJobLost",
        "ProbeJobRejected",
        "ImagePullFailed",
        "ContainerConfigError",
    }


def test_result_line_found_among_stderr_noise() -> None:
    # What FallbackToLogsOnError puts in the termination message: interleaved stderr and stdout.
    message = "\n".join(
        [
            "smoke-test: agent=codex home=/home/codex",
            "smoke-test: checking /home/codex/.codex/auth.json",
            json.dumps({"status": "creds-invalid", "agent": "codex", "detail": "auth.json does not parse"}),
            "smoke-test: exiting 66",
            "",
        ]
    )
    assert parse_result_line(message) == ProbeResult(
        status="creds-invalid", agent="codex", detail="auth.json does not parse"
    )


def test_result_line_with_surrounding_whitespace_and_crlf() -> None:
    message = 'smoke-test: hi\r\n   {"status": "ok", "agent": "claude", "detail": "fine"}   \r\nsmoke-test: bye'
    assert parse_result_line(message) == ProbeResult(status="ok", agent="claude", detail="fine")


def test_last_result_line_wins() -> None:
    message = '{"status": "error", "agent": "codex", "detail": "first"}\n{"status": "ok", "agent": "codex"}\n'
    assert parse_result_line(message) == ProbeResult(status="ok", agent="codex", detail=None)


def test_malformed_json_lines_are_skipped() -> None:
    message = '{"status": "creds-missing", "agent": "codex"}\n{"status": "ok", broken}\n{not json}'
    result = parse_result_line(message)
    assert result is not None
    assert result.status == "creds-missing"


@pytest.mark.parametrize(
    "message",
    [
        None,
        "",
        "smoke-test: nothing structured here",
        '{"agent": "codex"}',
        '{"status": 3}',
        "[1, 2, 3]",
        '"status"',
        'smoke-test: {"status": "ok"} trailing',
    ],
)
def test_no_result_line(message: str | None) -> None:
    assert parse_result_line(message) is None


def test_result_fields_of_wrong_type_are_dropped() -> None:
    result = parse_result_line('{"status": "error", "agent": 7, "detail": {"nested": true}}')
    assert result == ProbeResult(status="error", agent=None, detail=None)


def test_result_status_is_capped() -> None:
    result = parse_result_line(json.dumps({"status": "x" * 500}))
    assert result is not None
    assert result.status == "x" * 64


def test_safe_message_flattens_whitespace() -> None:
    assert safe_message("  line one\n\tline two\r\n\nthree  ") == "line one line two three"


def test_safe_message_none_is_empty() -> None:
    assert safe_message(None) == ""
    assert safe_message("") == ""


@pytest.mark.parametrize(
    "secret",
    [
        "sk-ant-oat01-" + "A1b2C3d4E5f6G7h8I9j0" * 3,
        "ya29.a0AfH6SMBx" + "Q" * 40,
        "dGhpcyBpcyBhIHNlY3JldCB0aGF0IHNob3VsZCBuZXZlciBsZWFr==",
        "ghp_" + "a" * 36,
    ],
)
def test_safe_message_masks_token_like_strings(secret: str) -> None:
    out = safe_message(f"refresh failed: token {secret} rejected")
    assert "[redacted]" in out
    assert out.startswith("refresh failed: token ")
    assert out.endswith(" rejected")
    # No 32-character run of the secret survives.
    for start in range(0, len(secret) - 31):
        assert secret[start : start + 32] not in out


JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The value after a credential-like key, in JSON or key=value form.
        (
            '{"tokens": {"access_token": "at-1", "refresh_token": "rt-1"}, "last_refresh": "2026-11-01"}',
            '{"tokens": {"access_token": "[redacted]", "refresh_token": "[redacted]"}, "last_refresh": "2026-11-01"}',
        ),
        ("OPENAI_API_KEY=abc123 rest", "OPENAI_API_KEY=[redacted] rest"),
        ("x-api-key: abc", "x-api-key: [redacted]"),
        ("password: 'hunter2'", "password: '[redacted]'"),
        ('{"client_secret":"s3cr3t"}', '{"client_secret":"[redacted]"}'),
        # An Authorization scheme's credentials.
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer [redacted]"),
        ('curl -H "Authorization: Basic dXNlcjpwYXNz"', 'curl -H "Authorization: Basic [redacted]"'),
        (f"bearer {JWT}", "bearer [redacted]"),
        # A JWT or a provider's token anywhere.
        (f"id {JWT} expired", "id [redacted] expired"),
        ("key sk-ant-api03-AbCdEfGhIjKlMnOp rejected", "key [redacted] rejected"),
        # JSON values and bare words shaped like tokens (mixed case and digits).
        ('{"detail": "Xy7Qp2Lm9Kd4Rt8Vw3Nb"}', '{"detail": "[redacted]"}'),
        ("got AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 back", "got [redacted] back"),
    ],
)
def test_safe_message_redacts_credentials_by_context(text: str, expected: str) -> None:
    assert safe_message(text, limit=1000) == expected


@pytest.mark.parametrize(
    "text",
    [
        "probe Job codex-production-slot-number-one-probe-3fa2b1c9d0 not found: never created",
        "PersistentVolumeClaim 'codex-agent-home-volume-for-team-platform-1' not found in the Slot's namespace",
        "ReadWriteOncePod claim 'codex-1-home' is in use by pod worker-7d9f8c6b5-x2x4q",
        "credentials missing: /home/codex/.codex/auth.json not found (uid 10001, gid 10001)",
        "/Users/Shared/AgentHome2024/.claude/settings.json: unparseable",
        "image ghcr.io/example/agent-shell@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "ErrImagePull: ghcr.io/example/agent-shell:sha-1a2b3c4d5e6f7a8b9c0d-codex not found",
        "Slot uid 0c2a51d4-8b5e-4f0e-9a51-3d1c9b7e2f60 generation 4",
        "auth.json: refresh_token expired on 2026-11-01",
    ],
)
def test_safe_message_keeps_names_paths_and_digests(text: str) -> None:
    assert safe_message(text, limit=1000) == text


def test_safe_message_keeps_ordinary_text() -> None:
    text = "credentials missing: /home/codex/.codex/auth.json not found (uid 10001, gid 10001)"
    assert safe_message(text) == text


def test_safe_message_is_capped_at_the_default_limit() -> None:
    out = safe_message("word " * 200)
    assert MESSAGE_LIMIT == 256
    assert len(out) == MESSAGE_LIMIT
    assert out.endswith("...")
    assert out.startswith("word word ")


def test_safe_message_custom_limit() -> None:
    assert safe_message("abcdefghij", limit=8) == "abcde..."
    assert safe_message("abcdefgh", limit=8) == "abcdefgh"


def test_safe_message_masks_before_capping() -> None:
    # A secret straddling the cut must not leave a visible prefix behind.
    secret = "Zq9" * 34
    out = safe_message("x " * 100 + secret, limit=210)
    assert "Zq9Z" not in out
    assert len(out) <= 210
