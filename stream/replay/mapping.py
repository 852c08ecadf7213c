"""Mapping files that turn the rows of a source file into interaction events.

A mapping file (``config/mappings/<name>.toml``) names the source columns of
the event id, the event time, the tenant and the channel, and maps each raw
channel value to the channel name that the event carries::

    [event_id]
    column = "CaseID"
    prefix = "sf311-"              # optional, keeps ids of two data sets apart

    [occurred_at]
    column = "Opened"
    format = "%m/%d/%Y %I:%M:%S %p"  # datetime.strptime format
    zone = "America/Los_Angeles"     # IANA zone of times without an offset

    [tenant]                         # optional section
    column = "Supervisor.District"
    fallback = "unknown"             # optional, used when the cell is empty

    [channel]
    column = "Source"
    unmapped = "pass"                # or "skip"

    [channels]
    "Web Self Service" = "web_self_service"

Local times become UTC instants with :mod:`zoneinfo`. A local time that occurs
twice (the hour repeated when daylight saving time ends) takes ``fold=0``,
the first of the two instants. A local time that does not exist (the hour
skipped when daylight saving time starts) is read with the offset in force
before the change, so it moves forward by the size of the change. For
example, 02:30 on the day Los Angeles moves from -08:00 to -07:00 becomes
10:30Z, which is 03:30 local time.

A raw channel value missing from ``[channels]`` is emitted, with
``unmapped = "pass"`` (the default), as its normalised form
(``"Fax Machine"`` becomes ``"fax_machine"``). The worker's channel
classification then decides, and an unclassified channel shows up in its
counters and dead-letter topic instead of disappearing in the replay. With
``unmapped = "skip"`` such rows raise :class:`MappingError` and are skipped.
"""

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream.errors import ConfigError, MappingError
from stream.settings import CONFIG_DIR
from stream.timeutil import ms_to_rfc3339

MAPPINGS_DIR = CONFIG_DIR / "mappings"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_MAPPING_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CHANNEL_NAME = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9]+")

# Epoch-millisecond times below this (1973-03-03) are almost surely seconds.
_MIN_EPOCH_MS = 10**11


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _EventIdSection(_Section):
    column: str = Field(min_length=1)
    prefix: str = ""


class _TimeSection(_Section):
    column: str = Field(min_length=1)
    format: str = Field(min_length=1)
    zone: str = Field(min_length=1)


class _TenantSection(_Section):
    column: str = Field(min_length=1)
    fallback: str | None = Field(default=None, min_length=1)


class _ChannelSection(_Section):
    column: str = Field(min_length=1)
    unmapped: Literal["pass", "skip"] = "pass"


class _MappingFile(_Section):
    description: str = ""
    event_id: _EventIdSection
    occurred_at: _TimeSection
    tenant: _TenantSection | None = None
    channel: _ChannelSection
    channels: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MappedEvent:
    """An event ready to produce, with its event time and how its channel was found.

    ``unmapped_channel`` is the raw channel value when it was missing from the
    mapping's ``[channels]`` table and passed through normalised, else None.
    """

    event: dict[str, Any]
    occurred_at_ms: int
    unmapped_channel: str | None = None


@dataclass(frozen=True, slots=True)
class SourceMapping:
    """A validated mapping file: source columns and conversions for each event field."""

    name: str
    path: Path
    description: str
    event_id_column: str
    event_id_prefix: str
    time_column: str
    time_format: str
    zone: ZoneInfo
    tenant_column: str | None
    tenant_fallback: str | None
    channel_column: str
    channels: Mapping[str, str]
    unmapped_channel: Literal["pass", "skip"]

    @property
    def columns(self) -> tuple[str, ...]:
        """Source columns that every row must have."""
        columns = [self.event_id_column, self.time_column, self.channel_column]
        if self.tenant_column is not None:
            columns.append(self.tenant_column)
        return tuple(columns)

    def check_columns(self, header: list[str], source: str) -> None:
        """Raise :class:`ConfigError` unless the header has each mapped column exactly once."""
        missing = [column for column in self.columns if column not in header]
        if missing:
            raise ConfigError(
                f"mapping {self.name!r} ({self.path}) needs columns {missing} that {source} "
                f"does not have. Its columns are {header}. Pick the mapping for this file "
                f"or fix the column names in the mapping file"
            )
        repeated = [column for column in self.columns if header.count(column) > 1]
        if repeated:
            raise ConfigError(
                f"{source} has the mapped columns {repeated} more than once, so the mapping "
                f"{self.name!r} cannot tell which to read. Rename the duplicate header"
            )

    def map_row(self, row: Mapping[str, Any]) -> MappedEvent:
        """Convert one source row into an event, or raise :class:`MappingError`."""
        raw_id = _cell(row, self.event_id_column)
        if not raw_id:
            raise MappingError(
                "missing_event_id", f"event id column {self.event_id_column!r} is empty"
            )

        occurred_at_ms = self._parse_time(_cell(row, self.time_column))
        channel, unmapped = self._map_channel(_cell(row, self.channel_column))

        event: dict[str, Any] = {
            "event_id": self.event_id_prefix + raw_id,
            "occurred_at": ms_to_rfc3339(occurred_at_ms),
            "channel": channel,
        }
        if self.tenant_column is not None:
            tenant = _cell(row, self.tenant_column) or self.tenant_fallback
            if tenant:
                event["tenant"] = tenant
        return MappedEvent(event=event, occurred_at_ms=occurred_at_ms, unmapped_channel=unmapped)

    def to_event(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Convert one source row into an event dict, or raise :class:`MappingError`."""
        return self.map_row(row).event

    def _parse_time(self, text: str) -> int:
        if not text:
            raise MappingError("missing_time", f"time column {self.time_column!r} is empty")
        try:
            parsed = datetime.strptime(text, self.time_format)
        except ValueError as exc:
            raise MappingError(
                "invalid_time",
                f"invalid time {text!r} in column {self.time_column!r}: "
                f"expected format {self.time_format!r} ({exc})",
            ) from exc
        if parsed.tzinfo is None:
            # replace() leaves fold=0: see the module docstring for repeated and skipped times.
            parsed = parsed.replace(tzinfo=self.zone)
        return (parsed - _EPOCH) // _ONE_MS

    def _map_channel(self, raw: str) -> tuple[str, str | None]:
        if not raw:
            raise MappingError(
                "missing_channel", f"channel column {self.channel_column!r} is empty"
            )
        mapped = self.channels.get(raw)
        if mapped is not None:
            return mapped, None
        if self.unmapped_channel == "skip":
            raise MappingError(
                "unmapped_channel",
                f"channel value {raw!r} is not in the [channels] table of mapping "
                f"{self.name!r}. Add it there to replay these rows",
            )
        normalised = normalise_channel(raw)
        if not normalised:
            raise MappingError(
                "invalid_channel",
                f"channel value {raw!r} has no letters or digits to form a channel name",
            )
        return normalised, raw


def normalise_channel(raw: str) -> str:
    """Lower-case a raw channel value and join its ASCII letter and digit runs with ``_``."""
    return _NOT_NAME_CHARS.sub("_", raw.lower()).strip("_")


def check_event(record: Mapping[str, Any]) -> MappedEvent:
    """Check a record that is already an event and return it unchanged with its event time.

    Raises :class:`MappingError` when ``event_id`` or ``channel`` is not a
    non-empty string, or ``occurred_at`` is neither RFC 3339 text with an
    offset nor an integer of epoch milliseconds.
    """
    event_id = record.get("event_id")
    if not isinstance(event_id, str) or not event_id.strip():
        raise MappingError("missing_event_id", f"event_id {event_id!r} is not a non-empty string")

    occurred_at_ms = _parse_event_time(record.get("occurred_at"))

    channel = record.get("channel")
    if not isinstance(channel, str) or not channel.strip():
        raise MappingError("missing_channel", f"channel {channel!r} is not a non-empty string")
    return MappedEvent(event=dict(record), occurred_at_ms=occurred_at_ms)


def _parse_event_time(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < _MIN_EPOCH_MS:
            raise MappingError(
                "invalid_time",
                f"occurred_at {value} is below 10^11, so it looks like seconds: "
                f"send epoch milliseconds",
            )
        return value
    if not isinstance(value, str) or not value.strip():
        raise MappingError("missing_time", f"occurred_at {value!r} is missing or not a string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise MappingError(
            "invalid_time", f"occurred_at {value!r} is not RFC 3339 text like 2025-06-02T14:07:00Z"
        ) from exc
    if parsed.tzinfo is None:
        raise MappingError(
            "invalid_time", f"occurred_at {value!r} has no UTC offset: add Z or +HH:MM"
        )
    return (parsed - _EPOCH) // _ONE_MS


def _cell(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None:
        return ""
    return str(value).strip()


def resolve_mapping_path(name_or_path: str | Path) -> Path:
    """Return the file of a mapping given by bare name (``sf311``) or by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or "\\" in text or text.endswith(".toml"):
        return Path(name_or_path)
    if not _MAPPING_NAME.match(text):
        raise ConfigError(
            f"invalid mapping name {text!r}: use a file name from {MAPPINGS_DIR} without "
            f".toml, like 'sf311', or a path to a .toml file"
        )
    return MAPPINGS_DIR / f"{text}.toml"


def load_mapping(name_or_path: str | Path) -> SourceMapping:
    """Load and validate a mapping file, or raise :class:`ConfigError` naming what is wrong.

    A bare name such as ``sf311`` reads ``config/mappings/sf311.toml``. Anything
    with a path separator or a ``.toml`` suffix is read as a path.
    """
    path = resolve_mapping_path(name_or_path)
    if not path.is_file():
        available = sorted(item.stem for item in MAPPINGS_DIR.glob("*.toml"))
        raise ConfigError(
            f"mapping file not found: {path}. Pass one of the mappings in {MAPPINGS_DIR} "
            f"({', '.join(available) or 'none'}) or the path of a .toml file"
        )
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
        parsed = _MappingFile.model_validate(document)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in mapping file {path}: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"invalid mapping file {path}: {exc}") from exc

    return SourceMapping(
        name=path.stem,
        path=path,
        description=parsed.description,
        event_id_column=parsed.event_id.column,
        event_id_prefix=parsed.event_id.prefix,
        time_column=parsed.occurred_at.column,
        time_format=_checked_time_format(parsed.occurred_at.format, path),
        zone=_checked_zone(parsed.occurred_at.zone, path),
        tenant_column=parsed.tenant.column if parsed.tenant else None,
        tenant_fallback=parsed.tenant.fallback if parsed.tenant else None,
        channel_column=parsed.channel.column,
        channels=_checked_channels(parsed.channels, path),
        unmapped_channel=parsed.channel.unmapped,
    )


def _checked_zone(zone_name: str, path: Path) -> ZoneInfo:
    try:
        return ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"invalid occurred_at.zone {zone_name!r} in mapping file {path}: use an IANA "
            f"time zone name such as 'America/Los_Angeles'"
        ) from exc


def _checked_time_format(time_format: str, path: Path) -> str:
    # A format that round-trips this instant reads year, month, day, hour and minute,
    # so no field silently defaults (a format without %Y would put every event in 1900).
    sample = datetime(2015, 11, 23, 14, 35)
    if "%z" in time_format:
        sample = sample.replace(tzinfo=UTC)
    try:
        round_trip = datetime.strptime(sample.strftime(time_format), time_format)
    except ValueError:
        round_trip = None
    if round_trip != sample:
        raise ConfigError(
            f"invalid occurred_at.format {time_format!r} in mapping file {path}: it must "
            f"read year, month, day, hour and minute, like '%m/%d/%Y %I:%M:%S %p'"
        )
    return time_format


def _checked_channels(channels: dict[str, str], path: Path) -> dict[str, str]:
    invalid = {raw: name for raw, name in channels.items() if not _CHANNEL_NAME.match(name)}
    if invalid:
        raise ConfigError(
            f"invalid channel names in [channels] of mapping file {path}: {invalid}. "
            f"Use lower-case letters, digits and single underscores, like 'web_self_service'"
        )
    padded = [raw for raw in channels if raw != raw.strip()]
    if padded:
        raise ConfigError(
            f"[channels] keys {padded} in mapping file {path} have leading or trailing "
            f"spaces, which never match because cells are stripped. Remove the spaces"
        )
    return dict(channels)
