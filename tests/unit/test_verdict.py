"""The probe contract: exit codes, the JSON result line, safe messages (logic/verdict.py)."""

from __future__ import annotations

import json

import pytest
from slot_operator.logic.verdict import (
    EXIT_PHASES,
    MESSAGE_LIMIT,
    STALLED_PHASES,
    VERDICT_EXIT_CODES,
    FailureReason,
    Phase,
    ProbeResult,
    parse_result_line,
    phase_for_exit,
    safe_message,
)


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


def test_safe_message_masks_each_jwt_segment() -> None:
    header = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"
    payload = "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    signature = "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    out = safe_message(f"bearer {header}.{payload}.{signature}")
    assert out == "bearer [redacted].[redacted].[redacted]"


def test_safe_message_keeps_ordinary_text() -> None:
    text = "credentials missing: /home/codex/.codex/auth.json not found (uid 10001, gid 10001)"
    assert safe_message(text) == text


def test_safe_message_keeps_31_char_words_but_masks_32() -> None:
    assert safe_message("a" * 31) == "a" * 31
    assert safe_message("a" * 32) == "[redacted]"


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
    secret = "Z" * 100
    out = safe_message("x " * 100 + secret, limit=210)
    assert "ZZZZ" not in out
    assert len(out) <= 210
