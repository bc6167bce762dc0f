"""Stream ids compare as (ms, seq) and parse strictly; pub/sub messages decode or are dropped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.progress.events import StreamId, parse_message, parse_optional

ids = st.builds(StreamId, st.integers(0, 2**48), st.integers(0, 2**20))


def test_ids_compare_as_numbers_not_text() -> None:
    assert StreamId.parse("9-0") < StreamId.parse("10-0")
    assert StreamId.parse("5-9") < StreamId.parse("5-10")
    assert StreamId.parse("5-10") < StreamId.parse("6-0")
    assert StreamId.parse("7") == StreamId(7, 0)
    assert StreamId.parse(b"1700000000000-3") == StreamId(1700000000000, 3)


@given(ids, ids)
def test_order_matches_redis_order(a: StreamId, b: StreamId) -> None:
    assert (a < b) == ((a.ms, a.seq) < (b.ms, b.seq))
    assert StreamId.parse(str(a)) == a


@pytest.mark.parametrize(
    "text", ["", "-", "x-1", "1-x", "1-", "-1", "1-2-3", "1.5-0", " 1 - 2", "²-1", str(2**64)]
)
def test_malformed_ids_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        StreamId.parse(text)


def test_parse_optional_treats_blank_as_from_the_start() -> None:
    assert parse_optional(None) is None
    assert parse_optional("  ") is None
    assert parse_optional("12-1") == StreamId(12, 1)
    with pytest.raises(ValueError):
        parse_optional("nope")


def test_pubsub_message_keeps_data_with_spaces_intact() -> None:
    event = parse_message(b'abc 1700000000000-1 completed {"a": "b c"}')
    assert event is not None
    assert (event.job_id, event.id, event.event) == ("abc", StreamId(1700000000000, 1), "completed")
    assert event.data == '{"a": "b c"}' and event.final


@pytest.mark.parametrize("raw", [b"", b"abc", b"abc 1-1 progress", b"abc x-1 progress {}"])
def test_malformed_pubsub_messages_are_dropped(raw: bytes) -> None:
    assert parse_message(raw) is None
