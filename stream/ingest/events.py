"""Decoding and validation of interaction events.

Each Kafka record's value is one JSON object. :func:`parse_event` turns the
raw bytes into an :class:`Interaction` or a :class:`Rejection` with a
machine-readable reason; it never raises for bad input.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import msgspec

from stream.ingest.channels import ChannelClass, ChannelTable, normalize_channel

# Epoch milliseconds below this are read as seconds sent by mistake: 10**11 ms
# is March 1973, while 10**11 s would be the year 5138.
MIN_EPOCH_MS = 100_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Reason(StrEnum):
    """Reason code of a record sent to the dead-letter topic."""

    EMPTY_VALUE = "empty_value"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    INVALID_TYPE = "invalid_type"
    INVALID_TIME = "invalid_time"
    TIME_WITHOUT_OFFSET = "time_without_offset"
    FUTURE_TIME = "future_time"
    UNKNOWN_CHANNEL = "unknown_channel"
    RESERVED_TENANT = "reserved_tenant"
    TOO_LONG = "too_long"
    INVALID_ID = "invalid_id"
    TOO_LARGE = "too_large"
    LATE = "late"


# Event ids and tenants are kept in counting state, journal records and metric
# labels; this bound keeps each of those small.
MAX_ID_LENGTH = 128
# Ids go into log lines, metric labels and record keys, where a line break or
# another control character would split or disguise them: C0, DEL and C1,
# whose U+0085 many tools read as a line break.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# An RFC 3339 time whose second is 60, upper-cased: a leap second.
_LEAP_SECOND = re.compile(
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:60(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)"
)
_DAY_SECONDS = 86_400
# A valid event travels on to the counting stage with its raw key, value and
# headers and its parsed fields, about twice its size, in one record that must
# stay below Kafka's default limit of 1 MiB. The limit is on key, value and
# headers together.
MAX_EVENT_BYTES = 200 * 1024
# An estimate of the bytes Kafka adds around each header: two length varints
# of up to 5 bytes each, rounded up.
HEADER_OVERHEAD_BYTES = 16


class Interaction(msgspec.Struct, array_like=True, frozen=True):
    """One valid interaction, as it travels from ingest to the counting stage."""

    event_id: str
    occurred_at_ms: int
    tenant: str
    channel: str
    channel_class: int
    resolved: bool | None
    segment: str | None
    customer_id: str | None
    source_topic: str
    source_partition: int
    source_offset: int
    raw_key: bytes | None
    raw_value: bytes
    # The record's headers, copied to its dead letter if the event is late.
    raw_headers: list[tuple[str, bytes | None]] | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot be counted: the reason code and a sentence for people."""

    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """Source topic, partition, offset, exact bytes and headers of a record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()


def headers_size(headers: Sequence[tuple[str, bytes | None]]) -> int:
    """Return about how many bytes ``headers`` take in a Kafka record."""
    return sum(
        len(name.encode()) + len(value or b"") + HEADER_OVERHEAD_BYTES for name, value in headers
    )


def record_extra_bytes(
    key: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
) -> int:
    """Return about how many bytes a record's key and headers add to its value."""
    return len(key or b"") + (headers_size(headers) if headers else 0)


def parse_time_ms(value: Any, *, now_ms: int, max_future_ms: int) -> int | Rejection:
    """Read ``occurred_at`` as epoch milliseconds: RFC 3339 with an offset, or an integer."""
    if isinstance(value, bool):
        return Rejection(Reason.INVALID_TYPE, f"occurred_at must be a string or integer, got {value!r}")

    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        epoch_ms = int(value)
        if epoch_ms < MIN_EPOCH_MS:
            return Rejection(
                Reason.INVALID_TIME,
                f"occurred_at {value!r} is below 10^11, before 1973: send epoch "
                "milliseconds, not seconds",
            )
    elif isinstance(value, str):
        text = value.upper() if "z" in value or "t" in value else value
        leap_second = _LEAP_SECOND.fullmatch(text) is not None
        if leap_second:
            # RFC 3339 allows the leap second at the end of a UTC day, which
            # Python rejects. It counts as the second before it.
            text = text[:17] + "59" + text[19:]
        try:
            # RFC 3339 allows a lower-case "t" and "z", which Python 3.11 rejects.
            moment = datetime.fromisoformat(text)
        except ValueError:
            return Rejection(
                Reason.INVALID_TIME,
                f"occurred_at {value!r} is not RFC 3339 (like 2025-06-02T14:07:00Z) "
                "nor epoch milliseconds",
            )
        if len(value) <= 10 or value[10] not in "Tt ":
            return Rejection(Reason.INVALID_TIME, f"occurred_at {value!r} has no time of day")
        if moment.tzinfo is None:
            return Rejection(
                Reason.TIME_WITHOUT_OFFSET,
                f"occurred_at {value!r} has no UTC offset: append Z or +HH:MM",
            )
        since_epoch = moment - EPOCH
        epoch_ms = (
            since_epoch.days * 86_400_000
            + since_epoch.seconds * 1_000
            + since_epoch.microseconds // 1_000
        )
        if epoch_ms < MIN_EPOCH_MS:
            return Rejection(
                Reason.INVALID_TIME, f"occurred_at {value!r} is before 1973, which is not accepted"
            )
        if leap_second and epoch_ms // 1000 % _DAY_SECONDS != _DAY_SECONDS - 1:
            return Rejection(
                Reason.INVALID_TIME,
                f"occurred_at {value!r} has second 60, which is valid only at 23:59:60 UTC",
            )
    else:
        return Rejection(
            Reason.INVALID_TYPE,
            f"occurred_at must be a string or integer, got {type(value).__name__}",
        )

    if epoch_ms > now_ms + max_future_ms:
        return Rejection(
            Reason.FUTURE_TIME,
            f"occurred_at {value!r} is more than {max_future_ms // 1000} s ahead of the "
            "worker's clock: check the producer's clock",
        )
    return epoch_ms


def _optional_str(document: dict[str, Any], field: str) -> str | None | Rejection:
    value = document.get(field)
    if value is None or isinstance(value, str):
        return value
    return Rejection(Reason.INVALID_TYPE, f"{field} must be a string, got {type(value).__name__}")


MAX_DETAIL_CHARS = 500


def _id_problem(field: str, text: str) -> Rejection | None:
    """Return why ``text`` cannot be an id: blank, or containing a control character."""
    if not text or text.isspace():
        return Rejection(Reason.INVALID_ID, f"{field} is blank")
    # Most ids are printable, and only the others can contain a control character.
    if not text.isprintable():
        control = _CONTROL_CHARACTER.search(text)
        if control is not None:
            return Rejection(
                Reason.INVALID_ID,
                f"{field} contains the control character U+{ord(control.group()):04X}: "
                "ids must be printable",
            )
    return None


def _event_id_problem(event_id: str) -> Rejection | None:
    if len(event_id) > MAX_ID_LENGTH:
        return Rejection(
            Reason.TOO_LONG,
            f"event_id is {len(event_id)} characters long, more than the {MAX_ID_LENGTH} allowed",
        )
    return _id_problem("event_id", event_id)


def _tenant_problem(tenant: str, reserved_tenants: frozenset[str]) -> Rejection | None:
    if len(tenant) > MAX_ID_LENGTH:
        return Rejection(
            Reason.TOO_LONG,
            f"tenant is {len(tenant)} characters long, more than the {MAX_ID_LENGTH} allowed",
        )
    if (problem := _id_problem("tenant", tenant)) is not None:
        return problem
    if tenant in reserved_tenants:
        return Rejection(
            Reason.RESERVED_TENANT,
            f"tenant {tenant!r} is reserved for the all-tenants figure: rename the tenant",
        )
    return None


class Source(Protocol):
    """A record's topic, partition, offset, exact bytes and headers.

    A :class:`SourceRecord` has them, and so does a consumer record.
    """

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


class _Fields(msgspec.Struct):
    """The fields of an event, each of a JSON type the contract allows.

    Decoding into it checks the types in one step. A record that does not
    fit is read again field by field, which finds the first problem and
    names it in the rejection.
    """

    event_id: str | int
    occurred_at: str | int
    channel: str
    tenant: str | None = None
    resolved: bool | None = None
    segment: str | None = None
    customer_id: str | int | None = None


_fields_decoder = msgspec.json.Decoder(_Fields)
_decoder = msgspec.json.Decoder()


def parse_event(
    source: Source,
    *,
    channels: ChannelTable,
    count_unknown_channels: bool,
    default_tenant: str,
    reserved_tenants: frozenset[str] = frozenset(),
    now_ms: int,
    max_future_ms: int,
) -> Interaction | Rejection:
    """Decode, validate and classify one record; never raise for bad input.

    ``default_tenant`` stands in for a missing or empty tenant; the
    ``reserved_tenants`` are rejected. Unknown channels are rejected, or
    counted as unclassified with ``count_unknown_channels``. Times more than
    ``max_future_ms`` ahead of ``now_ms`` are rejected. Any unexpected error
    while reading the record becomes an ``invalid_json`` rejection, and the
    detail is cut to a bounded length so the dead-letter record stays small.
    """
    try:
        result = _parse_event(
            source,
            channels,
            count_unknown_channels,
            default_tenant,
            reserved_tenants,
            now_ms,
            max_future_ms,
        )
    except (RecursionError, UnicodeError, ValueError, TypeError, OverflowError) as exc:
        result = Rejection(Reason.INVALID_JSON, f"value cannot be read: {exc!r}")
    if isinstance(result, Rejection) and len(result.detail) > MAX_DETAIL_CHARS:
        return Rejection(result.reason, result.detail[:MAX_DETAIL_CHARS] + "…")
    return result


def _parse_event(
    source: Source,
    channels: ChannelTable,
    count_unknown_channels: bool,
    default_tenant: str,
    reserved_tenants: frozenset[str],
    now_ms: int,
    max_future_ms: int,
) -> Interaction | Rejection:
    raw = source.value
    if not raw:
        return Rejection(Reason.EMPTY_VALUE, "record value is empty")
    if len(raw) > MAX_EVENT_BYTES:
        return Rejection(
            Reason.TOO_LARGE,
            f"record value is {len(raw)} bytes, more than the {MAX_EVENT_BYTES} allowed",
        )
    # The key and headers travel with the event to the counting stage.
    key = source.key
    headers = source.headers
    size = len(raw)
    if key:
        size += len(key)
    if headers:
        size += headers_size(headers)
    if size > MAX_EVENT_BYTES:
        return Rejection(
            Reason.TOO_LARGE,
            f"record key, value and headers are {size} bytes, "
            f"more than the {MAX_EVENT_BYTES} allowed",
        )
    fields: _Fields | Rejection
    try:
        fields = _fields_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, ValueError):
        fields = _read_fields(raw, default_tenant, reserved_tenants)
    else:
        fields = _check_values(fields, default_tenant, reserved_tenants)
    if isinstance(fields, Rejection):
        return fields

    occurred_at_ms = parse_time_ms(fields.occurred_at, now_ms=now_ms, max_future_ms=max_future_ms)
    if isinstance(occurred_at_ms, Rejection):
        return occurred_at_ms

    channel = fields.channel
    listed = channels.lookup(channel)
    if listed is not None:
        channel, channel_class = listed
    elif count_unknown_channels:
        channel, channel_class = normalize_channel(channel), ChannelClass.UNCLASSIFIED
    else:
        return Rejection(
            Reason.UNKNOWN_CHANNEL,
            f"channel {channel!r} is not in the channel table: add it to channels_file",
        )

    return Interaction(
        event_id=fields.event_id,  # type: ignore[arg-type]  # a string by now
        occurred_at_ms=occurred_at_ms,
        tenant=fields.tenant,  # type: ignore[arg-type]  # a string by now
        channel=channel,
        channel_class=int(channel_class),
        resolved=fields.resolved,
        segment=fields.segment,
        customer_id=fields.customer_id,  # type: ignore[arg-type]  # a string or None by now
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        raw_key=key,
        raw_value=raw,
        raw_headers=list(headers) if headers else None,
    )


def _check_values(
    fields: _Fields, default_tenant: str, reserved_tenants: frozenset[str]
) -> _Fields | Rejection:
    """Check the values of fields whose types are right, in the order :func:`_read_fields` does.

    Numeric ids become strings and a missing tenant the default one. An id
    that is printable, not blank and short enough needs no closer look.
    """
    if fields.event_id == "" or fields.occurred_at == "" or fields.channel == "":
        for field in ("event_id", "occurred_at", "channel"):
            if getattr(fields, field) == "":
                return Rejection(
                    Reason.MISSING_FIELD, f"required field {field} is missing or empty"
                )
    event_id = fields.event_id
    if isinstance(event_id, int):
        event_id = fields.event_id = str(event_id)
    if len(event_id) > MAX_ID_LENGTH or not event_id.isprintable() or event_id.isspace():
        if (problem := _event_id_problem(event_id)) is not None:
            return problem
    tenant = fields.tenant
    if not tenant:
        fields.tenant = default_tenant
    elif (
        len(tenant) > MAX_ID_LENGTH
        or not tenant.isprintable()
        or tenant.isspace()
        or tenant in reserved_tenants
    ):
        if (problem := _tenant_problem(tenant, reserved_tenants)) is not None:
            return problem
    if isinstance(fields.customer_id, int):
        fields.customer_id = str(fields.customer_id)
    return fields


def _encoding_rejection(raw: bytes) -> Rejection:
    """Return the rejection of a value that is not UTF-8, naming the first bad byte's offset."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(
            Reason.INVALID_JSON,
            f"value is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            f"({exc.reason})",
        )
    return Rejection(Reason.INVALID_JSON, "value is not valid UTF-8")


def _read_fields(
    raw: bytes, default_tenant: str, reserved_tenants: frozenset[str]
) -> _Fields | Rejection:
    """Read the fields of a record one by one, and return the first problem found."""
    try:
        document = _decoder.decode(raw)
    except UnicodeDecodeError:
        # The decoder reports the position inside the string it was reading.
        return _encoding_rejection(raw)
    except (msgspec.DecodeError, RecursionError, ValueError) as exc:
        return Rejection(Reason.INVALID_JSON, f"value is not valid JSON: {exc}")
    if not isinstance(document, dict):
        return Rejection(
            Reason.NOT_AN_OBJECT, f"value must be a JSON object, got {type(document).__name__}"
        )

    for field in ("event_id", "occurred_at", "channel"):
        if document.get(field) in (None, ""):
            return Rejection(Reason.MISSING_FIELD, f"required field {field} is missing or empty")

    event_id = document["event_id"]
    if isinstance(event_id, int) and not isinstance(event_id, bool):
        event_id = str(event_id)
    if not isinstance(event_id, str):
        return Rejection(
            Reason.INVALID_TYPE, f"event_id must be a string, got {type(event_id).__name__}"
        )
    if (problem := _event_id_problem(event_id)) is not None:
        return problem
    channel = document["channel"]
    if not isinstance(channel, str):
        return Rejection(
            Reason.INVALID_TYPE, f"channel must be a string, got {type(channel).__name__}"
        )

    tenant = document.get("tenant")
    if tenant is None or tenant == "":
        tenant = default_tenant
    elif not isinstance(tenant, str):
        return Rejection(Reason.INVALID_TYPE, f"tenant must be a string, got {type(tenant).__name__}")
    elif (problem := _tenant_problem(tenant, reserved_tenants)) is not None:
        return problem

    resolved = document.get("resolved")
    if resolved is not None and not isinstance(resolved, bool):
        return Rejection(
            Reason.INVALID_TYPE, f"resolved must be true or false, got {type(resolved).__name__}"
        )
    segment = _optional_str(document, "segment")
    if isinstance(segment, Rejection):
        return segment
    customer_id = document.get("customer_id")
    if isinstance(customer_id, int) and not isinstance(customer_id, bool):
        customer_id = str(customer_id)
    elif customer_id is not None and not isinstance(customer_id, str):
        return Rejection(
            Reason.INVALID_TYPE, f"customer_id must be a string, got {type(customer_id).__name__}"
        )
    return _Fields(
        event_id=event_id,
        occurred_at=document["occurred_at"],
        channel=channel,
        tenant=tenant,
        resolved=resolved,
        segment=segment,
        customer_id=customer_id,
    )
