"""Go-style durations and RFC 3339 timestamps (logic/durations.py, logic/timestamps.py)."""

from __future__ import annotations

import datetime

import pytest
from slot_operator.logic import durations, timestamps

td = datetime.timedelta


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", td(seconds=90)),
        ("5m", td(minutes=5)),
        ("6h", td(hours=6)),
        ("1h30m", td(hours=1, minutes=30)),
        ("1h30m15s", td(hours=1, minutes=30, seconds=15)),
        ("2.5h", td(hours=2, minutes=30)),
        ("1.5s", td(seconds=1.5)),
        ("500ms", td(milliseconds=500)),
        ("1ms", td(milliseconds=1)),
        ("250us", td(microseconds=250)),
        ("1m1ms", td(minutes=1, milliseconds=1)),
        ("0s", td(0)),
        ("720h", td(hours=720)),
    ],
)
def test_parse_duration_valid(text: str, expected: datetime.timedelta) -> None:
    assert durations.parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "6", "h", "6x", "6 h", " 6h", "6h ", "-5m", "1.5.5h", "1d", "5m junk", "m5", "1h-30m", "1,5h"],
)
def test_parse_duration_invalid_names_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        durations.parse_duration(text)
    assert repr(text) in str(info.value)


def test_parse_duration_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        durations.parse_duration(None)  # type: ignore[arg-type]


def test_parse_duration_too_long_is_a_value_error_not_an_overflow() -> None:
    # A flag like --default-interval=99999999999999h must be a clear error, not a traceback.
    with pytest.raises(ValueError, match="too long"):
        durations.parse_duration("99999999999999h")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (td(0), "0s"),
        (td(seconds=45), "45s"),
        (td(minutes=5), "5m"),
        (td(hours=6), "6h"),
        (td(hours=1, minutes=30), "1h30m"),
        (td(hours=2, seconds=5), "2h5s"),
        (td(hours=720), "720h"),
        (td(seconds=1.9), "1s"),
        (td(milliseconds=500), "0s"),
    ],
)
def test_format_duration(value: datetime.timedelta, expected: str) -> None:
    assert durations.format_duration(value) == expected


@pytest.mark.parametrize("text", ["45s", "5m", "6h", "1h30m", "2h5s", "1h1m1s"])
def test_format_parse_round_trip(text: str) -> None:
    assert durations.format_duration(durations.parse_duration(text)) == text


def test_format_time_is_utc_second_precision_with_z() -> None:
    value = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
    assert timestamps.format_time(value) == "2024-05-06T07:08:09Z"


def test_format_time_converts_other_zones_to_utc() -> None:
    zone = datetime.timezone(datetime.timedelta(hours=2))
    value = datetime.datetime(2024, 5, 6, 1, 0, 0, tzinfo=zone)
    assert timestamps.format_time(value) == "2024-05-05T23:00:00Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-06T07:08:09Z", datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)),
        ("2024-05-06T07:08:09.5Z", datetime.datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=datetime.UTC)),
        ("2024-05-06T09:08:09+02:00", datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)),
        ("2024-05-06T07:08:09", datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime.datetime) -> None:
    parsed = timestamps.parse_time(text)
    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo is not None


@pytest.mark.parametrize("value", [None, "", "yesterday", "2024-13-01T00:00:00Z", 1714979289, ["2024-05-06T07:08:09Z"]])
def test_parse_time_returns_none_for_absent_or_malformed(value: object) -> None:
    assert timestamps.parse_time(value) is None


def test_time_round_trip() -> None:
    value = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert timestamps.parse_time(timestamps.format_time(value)) == value
