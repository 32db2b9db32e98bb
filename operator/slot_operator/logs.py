"""The operator's log lines pass the same redaction as status and Events (logic/verdict.py `redact`).

A probe's own words (its JSON detail, its termination message) reach log lines through the
messages the operator logs; a filter on every handler of the root logger masks credentials in
each record before any handler formats it, whichever library logged it.
"""

from __future__ import annotations

import logging

from slot_operator.logic import verdict


class RedactingFilter(logging.Filter):
    """Replaces a record's message with its redacted text when redaction changes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = verdict.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of `logger` (the root logger by default); idempotent."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
            handler.addFilter(RedactingFilter())
