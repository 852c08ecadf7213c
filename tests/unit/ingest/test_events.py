"""Tests of event decoding and validation: one test or more per rejection reason."""

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from stream.ingest import events
from stream.ingest.channels import ChannelClass, ChannelTable, load_channel_table
from stream.ingest.events import (
    MAX_EVENT_BYTES,
    MAX_ID_LENGTH,
    Interaction,
    Reason,
    Rejection,
    SourceRecord,
    parse_event,
)

CHANNELS_FILE = Path(__file__).resolve().parents[3] / "config" / "channels.toml"

# 2025-06-02T14:07:00Z in epoch milliseconds.
INSTANT_MS = 1_748_873_220_000
NOW_MS = INSTANT_MS + 3_600_000
MAX_FUTURE_MS = 300_000


@pytest.fixture(scope="module")
def channels() -> ChannelTable:
    return load_channel_table(CHANNELS_FILE)


def source(
    value: bytes | None,
    *,
    key: bytes | None = b"k",
    headers: tuple[tuple[str, bytes | None], ...] = (),
) -> SourceRecord:
    return SourceRecord("support-interactions", 2, 41, key, value, headers)


def document(**fields: Any) -> dict[str, Any]:
    """Return a valid event document with the given fields replaced, or removed by ``None``."""
    base: dict[str, Any] = {
        "event_id": "m1",
        "occurred_at": "2025-06-02T14:07:00Z",
        "channel": "chatbot",
        "tenant": "t1",
    }
    base.update(fields)
    return {name: value for name, value in base.items() if value is not None}


def parse(
    channels: ChannelTable,
    value: bytes | None,
    *,
    count_unknown_channels: bool = False,
    now_ms: int = NOW_MS,
    key: bytes | None = b"k",
    headers: tuple[tuple[str, bytes | None], ...] = (),
) -> Interaction | Rejection:
    return parse_event(
        source(value, key=key, headers=headers),
        channels=channels,
        count_unknown_channels=count_unknown_channels,
        default_tenant="default",
        reserved_tenants=frozenset({"*"}),
        now_ms=now_ms,
        max_future_ms=MAX_FUTURE_MS,
    )


def parse_fields(channels: ChannelTable, **fields: Any) -> Interaction | Rejection:
    return parse(channels, json.dumps(document(**fields)).encode())


def accepted(result: Interaction | Rejection) -> Interaction:
    assert isinstance(result, Interaction), result
    return result


def rejected(result: Interaction | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


# Valid events


def test_parse_event_valid_keeps_source(channels: ChannelTable) -> None:
    raw = json.dumps(
        document(resolved=True, segment="smb", customer_id="c-9", extra={"kept": "ignored"})
    ).encode()

    event = accepted(parse(channels, raw))

    assert event.event_id == "m1"
    assert event.occurred_at_ms == INSTANT_MS
    assert event.tenant == "t1"
    assert event.channel == "chatbot"
    assert event.channel_class == ChannelClass.SELF_SERVICE
    assert event.resolved is True
    assert event.segment == "smb"
    assert event.customer_id == "c-9"
    assert event.source_topic == "support-interactions"
    assert event.source_partition == 2
    assert event.source_offset == 41
    assert event.raw_key == b"k"
    assert event.raw_value == raw


def test_parse_event_keeps_headers(channels: ChannelTable) -> None:
    # The counting stage copies them to a late event's dead letter.
    raw = json.dumps(document()).encode()
    headers = (("trace-id", b"4bf92f35"), ("empty", None))

    event = accepted(parse(channels, raw, headers=headers))

    assert event.raw_headers == [("trace-id", b"4bf92f35"), ("empty", None)]
    assert accepted(parse(channels, raw)).raw_headers is None


def test_parse_event_default_tenant(channels: ChannelTable) -> None:
    assert accepted(parse_fields(channels, tenant=None)).tenant == "default"
    assert accepted(parse_fields(channels, tenant="")).tenant == "default"


def test_parse_event_numeric_event_id(channels: ChannelTable) -> None:
    event = accepted(parse_fields(channels, event_id=12345))

    assert event.event_id == "12345"


# Rejections


def test_parse_event_empty_value(channels: ChannelTable) -> None:
    assert rejected(parse(channels, b"")).reason == Reason.EMPTY_VALUE
    assert rejected(parse(channels, None)).reason == Reason.EMPTY_VALUE


def test_parse_event_truncated_json(channels: ChannelTable) -> None:
    result = rejected(parse(channels, b'{"event_id": "m1", "occurred_at": "2025-06-0'))

    assert result.reason == Reason.INVALID_JSON


def test_parse_event_bad_byte_offset_in_value(channels: ChannelTable) -> None:
    value = b'{"event_id": "m1", "tenant": "t\xff1", "channel": "faq", "occurred_at": 1}'

    offset = value.index(b"\xff")

    result = rejected(parse(channels, value))

    assert result.reason == Reason.INVALID_JSON
    assert f"byte 0xff at offset {offset}" in result.detail


def test_parse_event_json_array(channels: ChannelTable) -> None:
    result = rejected(parse(channels, json.dumps([document()]).encode()))

    assert result.reason == Reason.NOT_AN_OBJECT
    assert "list" in result.detail


def test_parse_event_json_scalar(channels: ChannelTable) -> None:
    assert rejected(parse(channels, b'"text"')).reason == Reason.NOT_AN_OBJECT
    assert rejected(parse(channels, b"null")).reason == Reason.NOT_AN_OBJECT


@pytest.mark.parametrize("field", ["event_id", "occurred_at", "channel"])
def test_parse_event_missing_field(channels: ChannelTable, field: str) -> None:
    missing = rejected(parse_fields(channels, **{field: None}))
    empty = rejected(parse_fields(channels, **{field: ""}))

    assert missing.reason == Reason.MISSING_FIELD
    assert field in missing.detail
    assert empty.reason == Reason.MISSING_FIELD
    assert field in empty.detail


def test_parse_event_event_id_not_string(channels: ChannelTable) -> None:
    assert rejected(parse_fields(channels, event_id=True)).reason == Reason.INVALID_TYPE
    assert rejected(parse_fields(channels, event_id={"id": 1})).reason == Reason.INVALID_TYPE


def test_parse_event_tenant_number(channels: ChannelTable) -> None:
    result = rejected(parse_fields(channels, tenant=17))

    assert result.reason == Reason.INVALID_TYPE
    assert "tenant" in result.detail


def test_parse_event_tenant_reserved(channels: ChannelTable) -> None:
    result = rejected(parse_fields(channels, tenant="*"))

    assert result.reason == Reason.RESERVED_TENANT
    assert "'*'" in result.detail


@pytest.mark.parametrize("field", ["event_id", "tenant"])
def test_parse_event_id_too_long(channels: ChannelTable, field: str) -> None:
    result = rejected(parse_fields(channels, **{field: "x" * (MAX_ID_LENGTH + 1)}))

    assert result.reason == Reason.TOO_LONG
    assert field in result.detail
    assert str(MAX_ID_LENGTH + 1) in result.detail


@pytest.mark.parametrize("field", ["event_id", "tenant"])
def test_parse_event_id_blank(channels: ChannelTable, field: str) -> None:
    result = rejected(parse_fields(channels, **{field: "   "}))

    assert result.reason == Reason.INVALID_ID
    assert f"{field} is blank" in result.detail


@pytest.mark.parametrize("field", ["event_id", "tenant"])
@pytest.mark.parametrize("character", ["\n", "\r", "\x00", "\x7f", "\x85", "\x9f"])
def test_parse_event_id_control_character(
    channels: ChannelTable, field: str, character: str
) -> None:
    result = rejected(parse_fields(channels, **{field: f"acme{character}x"}))

    assert result.reason == Reason.INVALID_ID
    assert f"U+{ord(character):04X}" in result.detail


def test_parse_event_id_with_punctuation_accepted(channels: ChannelTable) -> None:
    event = accepted(parse_fields(channels, event_id="a|b c/é", tenant="acme|eu west"))

    assert event.event_id == "a|b c/é"
    assert event.tenant == "acme|eu west"


def test_parse_event_too_large(channels: ChannelTable) -> None:
    raw = json.dumps(document(segment="x" * MAX_EVENT_BYTES)).encode()

    result = rejected(parse(channels, raw))

    assert result.reason == Reason.TOO_LARGE
    assert str(len(raw)) in result.detail


def test_parse_event_at_size_limit(channels: ChannelTable) -> None:
    # The limit covers the key ("k") too.
    base = json.dumps(document(segment="")).encode()
    raw = json.dumps(document(segment="x" * (MAX_EVENT_BYTES - 1 - len(base)))).encode()

    event = accepted(parse(channels, raw))

    assert len(raw) == MAX_EVENT_BYTES - 1
    assert event.raw_value == raw


def test_parse_event_key_size_counted(channels: ChannelTable) -> None:
    raw = json.dumps(document()).encode()
    key = b"k" * (MAX_EVENT_BYTES - len(raw) + 1)

    assert rejected(parse(channels, raw, key=key)).reason == Reason.TOO_LARGE


@pytest.mark.parametrize("field", ["event_id", "tenant"])
def test_parse_event_id_at_length_limit(channels: ChannelTable, field: str) -> None:
    event = accepted(parse_fields(channels, **{field: "x" * MAX_ID_LENGTH}))

    assert getattr(event, field) == "x" * MAX_ID_LENGTH


@pytest.mark.parametrize("resolved", ["yes", 1, "true"])
def test_parse_event_resolved_not_boolean(channels: ChannelTable, resolved: Any) -> None:
    result = rejected(parse_fields(channels, resolved=resolved))

    assert result.reason == Reason.INVALID_TYPE
    assert "resolved" in result.detail


def test_parse_event_resolved_false_kept(channels: ChannelTable) -> None:
    assert accepted(parse_fields(channels, resolved=False)).resolved is False


def test_parse_event_channel_not_string(channels: ChannelTable) -> None:
    assert rejected(parse_fields(channels, channel=["faq"])).reason == Reason.INVALID_TYPE


# Event time


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2025-06-02T14:07:00Z",
        "2025-06-02T16:07:00+02:00",
        "2025-06-02T09:07:00-05:00",
        "2025-06-02T14:07:00.000Z",
        "2025-06-02T14:07:00+00:00",
        INSTANT_MS,
    ],
)
def test_parse_event_time_spellings_same_instant(channels: ChannelTable, occurred_at: Any) -> None:
    assert accepted(parse_fields(channels, occurred_at=occurred_at)).occurred_at_ms == INSTANT_MS


def test_parse_event_time_milliseconds_kept(channels: ChannelTable) -> None:
    event = accepted(parse_fields(channels, occurred_at="2025-06-02T14:07:00.950Z"))

    assert event.occurred_at_ms == INSTANT_MS + 950


@pytest.mark.parametrize(
    "occurred_at", ["2016-12-31T23:59:60.250Z", "2017-01-01T00:59:60.250+01:00"]
)
def test_parse_event_leap_second(
    channels: ChannelTable, occurred_at: str
) -> None:
    event = accepted(parse_fields(channels, occurred_at=occurred_at))

    assert event.occurred_at_ms == 1_483_228_799_250  # 2016-12-31T23:59:59.250Z


def test_parse_event_time_before_1973_rejected(channels: ChannelTable) -> None:
    for text in ("1969-12-31T23:59:59.500Z", "0001-01-01T00:00:00Z", "1900-01-01T00:00:00Z"):
        rejection = parse_fields(channels, occurred_at=text)

        assert isinstance(rejection, Rejection), text
        assert rejection.reason == Reason.INVALID_TIME, text


def test_parse_event_deep_nesting_rejected(channels: ChannelTable) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000

    rejection = parse_event(
        SourceRecord("t", 0, 0, None, raw),
        channels=channels,
        count_unknown_channels=False,
        default_tenant="default",
        now_ms=INSTANT_MS,
        max_future_ms=300_000,
    )

    assert isinstance(rejection, Rejection)
    assert rejection.reason == Reason.INVALID_JSON
    assert len(rejection.detail) <= 501


@pytest.mark.parametrize("occurred_at", [1_748_873_220, 0, 99_999_999_999])
def test_parse_event_epoch_seconds_rejected(channels: ChannelTable, occurred_at: int) -> None:
    result = rejected(parse_fields(channels, occurred_at=occurred_at))

    assert result.reason == Reason.INVALID_TIME
    assert "milliseconds" in result.detail


def test_parse_event_time_without_offset(channels: ChannelTable) -> None:
    result = rejected(parse_fields(channels, occurred_at="2025-06-02T14:07:00"))

    assert result.reason == Reason.TIME_WITHOUT_OFFSET
    assert "offset" in result.detail


@pytest.mark.parametrize(
    "occurred_at",
    [
        "last tuesday",
        "2025-06-02",
        "14:07:00Z",
        "2025-13-02T14:07:00Z",
        "2025-06-02T14:07:61Z",
        # Second 60 only at the end of a UTC day, and spelled as RFC 3339 has it.
        "2016-12-31T12:30:60Z",
        "2016-12-31T23:59:60+01:00",
        "2016-12-31T23:59:600Z",
        "2016-12-31T23:59:60Z\x00junk",
        "2017-01-01T00:59:60+00:60",
    ],
)
def test_parse_event_invalid_time(channels: ChannelTable, occurred_at: str) -> None:
    result = rejected(parse_fields(channels, occurred_at=occurred_at))

    assert result.reason == Reason.INVALID_TIME
    assert repr(occurred_at) in result.detail


def test_parse_event_time_wrong_type(channels: ChannelTable) -> None:
    assert rejected(parse_fields(channels, occurred_at=True)).reason == Reason.INVALID_TYPE
    assert rejected(parse_fields(channels, occurred_at=[INSTANT_MS])).reason == Reason.INVALID_TYPE


def test_parse_event_future_time(channels: ChannelTable) -> None:
    far = rejected(parse_fields(channels, occurred_at="2030-01-01T00:00:00Z"))
    just_over = rejected(parse_fields(channels, occurred_at=NOW_MS + MAX_FUTURE_MS + 1))
    at_limit = accepted(parse_fields(channels, occurred_at=NOW_MS + MAX_FUTURE_MS))

    assert far.reason == Reason.FUTURE_TIME
    assert just_over.reason == Reason.FUTURE_TIME
    assert at_limit.occurred_at_ms == NOW_MS + MAX_FUTURE_MS


# Channels


def test_parse_event_unknown_channel_rejected(channels: ChannelTable) -> None:
    result = rejected(parse_fields(channels, channel="fax_machine"))

    assert result.reason == Reason.UNKNOWN_CHANNEL
    assert "fax_machine" in result.detail


def test_parse_event_unknown_channel_counted(channels: ChannelTable) -> None:
    raw = json.dumps(document(channel="fax_machine")).encode()

    event = accepted(parse(channels, raw, count_unknown_channels=True))

    assert event.channel == "fax_machine"
    assert event.channel_class == ChannelClass.UNCLASSIFIED


@pytest.mark.parametrize("spelling", ["Live Chat", "LIVE-CHAT", " live chat ", "live_chat"])
def test_parse_event_channel_spelling_classified(channels: ChannelTable, spelling: str) -> None:
    assert accepted(parse_fields(channels, channel=spelling)).channel_class == ChannelClass.ASSISTED


@pytest.mark.parametrize("spelling", ["Live Chat", "LIVE-CHAT", " live chat "])
def test_parse_event_channel_normalised(channels: ChannelTable, spelling: str) -> None:
    assert accepted(parse_fields(channels, channel=spelling)).channel == "live_chat"


# Time zone of the host


@pytest.fixture
def host_time_zone() -> Iterator[None]:
    """Restore the process's TZ variable and time zone after the test."""
    previous = os.environ.get("TZ")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = previous
        time.tzset()


def parse_time_spellings(channels: ChannelTable) -> list[int | Reason]:
    values: list[int | Reason] = []
    for occurred_at in [
        "2025-06-02T14:07:00Z",
        "2025-06-02T16:07:00+02:00",
        INSTANT_MS,
        "2025-06-02T14:07:00",
        "1969-12-31T23:59:59.500Z",
    ]:
        result = parse_fields(channels, occurred_at=occurred_at)
        values.append(result.reason if isinstance(result, Rejection) else result.occurred_at_ms)
    return values


@pytest.mark.usefixtures("host_time_zone")
@pytest.mark.parametrize(
    ("zone", "utc_offset_seconds"),
    [
        ("UTC", 0),
        ("Asia/Tokyo", 32_400),
        ("America/St_Johns", -9_000),
        ("Pacific/Kiritimati", 50_400),
    ],
)
def test_parse_event_host_time_zone_ignored(
    channels: ChannelTable, zone: str, utc_offset_seconds: int
) -> None:
    os.environ["TZ"] = zone
    time.tzset()

    values = parse_time_spellings(channels)

    assert time.localtime(INSTANT_MS // 1000).tm_gmtoff == utc_offset_seconds
    assert values == [
        INSTANT_MS, INSTANT_MS, INSTANT_MS, Reason.TIME_WITHOUT_OFFSET, Reason.INVALID_TIME
    ]


# Typed decoding and reading field by field


class FieldByField:
    """A stand-in for the typed decoder that fits no record, so every record is read field by field."""

    def decode(self, raw: bytes) -> Any:
        raise msgspec.ValidationError("no record fits")


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"event_id": 12345, "customer_id": 77},
        {"customer_id": "c-1", "segment": "smb", "resolved": True},
        {"resolved": False, "tenant": ""},
        {"tenant": None},
        {"occurred_at": INSTANT_MS},
        {"occurred_at": "2025-06-02t14:07:00z"},
        {"occurred_at": "2025-06-02T16:07:00+02:00"},
        {"occurred_at": "2025-06-02"},
        {"occurred_at": "2025-06-02T14:07:00"},
        {"occurred_at": "2030-01-01T00:00:00Z"},
        {"occurred_at": 1_748_873_220},
        {"occurred_at": ""},
        {"event_id": ""},
        {"channel": ""},
        {"channel": "Knowledge Base"},
        {"channel": "carrier-pigeon"},
        {"event_id": "x" * (MAX_ID_LENGTH + 1)},
        {"event_id": "   "},
        {"event_id": "a\nb"},
        {"event_id": "a\u00a0b\u200b"},
        {"tenant": "*"},
        {"tenant": "t" * (MAX_ID_LENGTH + 1)},
        {"tenant": " \t"},
        {"tenant": "acme\x07"},
        {"tenant": "ga\u0085mma"},
        {"event_id": "a\u009fb"},
        {"tenant": "acme\u00a0corp"},
        {"event_id": True},
        {"resolved": 1},
        {"occurred_at": 1.748873220e12},
        {"event_id": "x" * (MAX_ID_LENGTH + 1), "resolved": "yes"},
        {"segment": ["smb"]},
        {"customer_id": 1.5},
    ],
)
def test_typed_and_field_reading_agree(
    channels: ChannelTable, monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any]
) -> None:
    raw = json.dumps(document(**fields)).encode()
    typed = parse(channels, raw)

    monkeypatch.setattr(events, "_fields_decoder", FieldByField())

    assert parse(channels, raw) == typed


def test_typed_event_skips_field_reading(
    channels: ChannelTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_fields(*args: Any) -> Any:
        raise AssertionError("read field by field")

    monkeypatch.setattr(events, "_read_fields", read_fields)

    assert accepted(parse_fields(channels, event_id=7, resolved=True)).event_id == "7"


def test_explicit_null_required_field_is_missing(channels: ChannelTable) -> None:
    raw = b'{"event_id": null, "occurred_at": "2025-06-02T14:07:00Z", "channel": "chatbot"}'

    assert rejected(parse(channels, raw)).reason == Reason.MISSING_FIELD
