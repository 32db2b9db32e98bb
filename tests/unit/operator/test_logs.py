"""The operator's log lines are redacted like status and Events (logs.py)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from slot_operator import logs

TOKEN = "sk-ant-api03-AbCdEf0123456789GhIjKlMn"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    root = logging.getLogger("test-logs-root")
    root.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root.addHandler(handler)
    logs.install(root)
    yield root, stream
    root.removeHandler(handler)


def test_arguments_and_messages_are_masked(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.getChild("controller").warning("slot %s/%s: %s", "ns", "codex-1", f"the probe said: token {TOKEN}")
    logger.warning('{"access_token": "abc"} Authorization: Bearer eyJhbGciOi.eyJzdWIi.sig')
    text = stream.getvalue()
    assert TOKEN not in text
    assert '"access_token": "[redacted]"' in text
    assert "Bearer [redacted]" in text
    assert "slot ns/codex-1: the probe said: token [redacted]" in text


def test_names_and_paths_survive(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    line = "slot agents/codex-1: probe codex-1-probe-3f2a9c81d0 started on node-a (~/.codex/auth.json)"
    logger.info(line)
    logger.warning(line)
    assert stream.getvalue().strip() == f"test-logs-root {line}"


def test_install_is_idempotent(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, _ = captured
    logs.install(logger)
    for handler in logger.handlers:
        assert sum(isinstance(f, logs.RedactingFilter) for f in handler.filters) == 1
