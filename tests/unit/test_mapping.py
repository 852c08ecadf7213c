"""Tests of the mapping files, the row conversion and the file readers of the replay."""

import importlib.util
import json
import tomllib
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stream.errors import ConfigError, InputFileError, MappingError
from stream.replay.mapping import (
    SourceMapping,
    check_event,
    load_mapping,
    normalise_channel,
)
from stream.replay.producer import load_events, record_key
from stream.replay.reader import read_rows
from stream.windows.spec import WindowSpec, window_ends

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SF_CSV = DATA_DIR / "sf311_cases_sample.csv"
BOSTON_CSV = DATA_DIR / "boston311_street_light_outages_2015.csv"
needs_data = pytest.mark.skipif(
    not DATA_DIR.is_dir(), reason=f"the 311 sample data folder {DATA_DIR} is absent"
)

SF_CHANNELS = {
    "Open311": "open311",
    "Web Self Service": "web_self_service",
    "Voice In": "voice_in",
    "Twitter": "twitter",
    "e-mail In": "e_mail_in",
    "Mail In": "mail_in",
    "Integrated Agency": "integrated_agency",
    "Other Department": "other_department",
}
BOSTON_CHANNELS = {
    "Citizens Connect App": "citizens_connect_app",
    "Self Service": "self_service",
    "Constituent Call": "constituent_call",
    "Twitter": "twitter",
    "Employee Generated": "employee_generated",
    "City Worker App": "city_worker_app",
    "Maximo Integration": "maximo_integration",
}
# Classes of the raw Source values, from the data description of each file.
SF_SELF_SERVICE = {"Open311", "Web Self Service"}
SF_ASSISTED = {"Voice In", "Twitter", "e-mail In", "Mail In"}


@pytest.fixture(scope="module")
def sf311() -> SourceMapping:
    return load_mapping("sf311")


@pytest.fixture(scope="module")
def boston311() -> SourceMapping:
    return load_mapping("boston311")


def sf_row(opened: str, source: str = "Voice In", case_id: str = "3600298",
           district: str = "6") -> dict[str, str]:
    return {"CaseID": case_id, "Opened": opened, "Supervisor.District": district,
            "Source": source, "Neighborhood": "Mission Bay"}


def boston_row(opened: str, source: str = "Constituent Call", case_id: str = "101001240735",
               neighborhood: str = "Back Bay") -> dict[str, str]:
    return {"CASE_ENQUIRY_ID": case_id, "OPEN_DT": opened, "neighborhood": neighborhood,
            "Source": source}


def write_mapping(tmp_path: Path, extra: str = "", channel: str = "") -> Path:
    path = tmp_path / "custom.toml"
    path.write_text(
        '[event_id]\ncolumn = "id"\n'
        '[occurred_at]\ncolumn = "time"\nformat = "%Y-%m-%d %H:%M:%S"\nzone = "Europe/Berlin"\n'
        f'[channel]\ncolumn = "source"\n{channel}\n'
        f'[channels]\n"Web" = "web"\n{extra}',
        encoding="utf-8",
    )
    return path


# Times in the data are local wall-clock times. Both zones changed on the same
# days in 2015, forward on 8 March at 02:00 and back on 1 November at 02:00.
SF_TIMES = [
    ("01/15/2015 09:00:00 AM", "2015-01-15T17:00:00.000Z"),  # PST, -08:00
    ("07/15/2015 09:00:00 AM", "2015-07-15T16:00:00.000Z"),  # PDT, -07:00
    ("03/08/2015 01:59:59 AM", "2015-03-08T09:59:59.000Z"),  # last second of PST
    ("03/08/2015 03:00:00 AM", "2015-03-08T10:00:00.000Z"),  # first second of PDT
    ("03/08/2015 02:30:00 AM", "2015-03-08T10:30:00.000Z"),  # skipped: read as 03:30 PDT
    ("11/01/2015 12:59:59 AM", "2015-11-01T07:59:59.000Z"),  # PDT before the repeat
    ("11/01/2015 01:30:00 AM", "2015-11-01T08:30:00.000Z"),  # repeated: first, PDT
    ("11/01/2015 02:00:00 AM", "2015-11-01T10:00:00.000Z"),  # PST after the repeat
    ("12/31/2015 11:59:59 PM", "2016-01-01T07:59:59.000Z"),  # crosses the UTC date
    ("07/01/2008 12:00:00 AM", "2008-07-01T07:00:00.000Z"),  # 12 AM is midnight
    ("07/01/2008 12:00:00 PM", "2008-07-01T19:00:00.000Z"),  # 12 PM is noon
]
BOSTON_TIMES = [
    ("01/01/2015 12:25:23 AM", "2015-01-01T05:25:23.000Z"),  # EST, -05:00
    ("07/23/2015 10:51:00 AM", "2015-07-23T14:51:00.000Z"),  # EDT, -04:00
    ("03/08/2015 01:59:59 AM", "2015-03-08T06:59:59.000Z"),
    ("03/08/2015 03:00:00 AM", "2015-03-08T07:00:00.000Z"),
    ("03/08/2015 02:30:00 AM", "2015-03-08T07:30:00.000Z"),  # skipped: read as 03:30 EDT
    ("11/01/2015 01:30:00 AM", "2015-11-01T05:30:00.000Z"),  # repeated: first, EDT
    ("11/01/2015 02:00:00 AM", "2015-11-01T07:00:00.000Z"),
    ("12/31/2015 08:59:00 PM", "2016-01-01T01:59:00.000Z"),
]


@pytest.mark.parametrize(("opened", "expected"), SF_TIMES)
def test_sf_time_to_utc(sf311: SourceMapping, opened: str, expected: str) -> None:
    assert sf311.to_event(sf_row(opened))["occurred_at"] == expected


@pytest.mark.parametrize(("opened", "expected"), BOSTON_TIMES)
def test_boston_time_to_utc(boston311: SourceMapping, opened: str, expected: str) -> None:
    assert boston311.to_event(boston_row(opened))["occurred_at"] == expected


def test_repeated_hour_keeps_order(sf311: SourceMapping) -> None:
    before = sf311.map_row(sf_row("11/01/2015 12:59:59 AM")).occurred_at_ms
    repeated = sf311.map_row(sf_row("11/01/2015 01:00:00 AM")).occurred_at_ms

    assert repeated - before == 1_000


@pytest.mark.parametrize(("source", "channel"), SF_CHANNELS.items())
def test_sf_channel(sf311: SourceMapping, source: str, channel: str) -> None:
    mapped = sf311.map_row(sf_row("04/30/2014 02:51:52 PM", source=source))

    assert mapped.event["channel"] == channel
    assert mapped.unmapped_channel is None


@pytest.mark.parametrize(("source", "channel"), BOSTON_CHANNELS.items())
def test_boston_channel(boston311: SourceMapping, source: str, channel: str) -> None:
    mapped = boston311.map_row(boston_row("01/01/2015 12:25:23 AM", source=source))

    assert mapped.event["channel"] == channel
    assert mapped.unmapped_channel is None


def test_mapping_tables_match(sf311: SourceMapping, boston311: SourceMapping) -> None:
    assert dict(sf311.channels) == SF_CHANNELS
    assert dict(boston311.channels) == BOSTON_CHANNELS


def test_sf_event_fields(sf311: SourceMapping) -> None:
    event = sf311.to_event(sf_row("04/30/2014 02:51:52 PM", case_id=" 3600298 "))

    assert event == {
        "event_id": "sf311-3600298",
        "occurred_at": "2014-04-30T21:51:52.000Z",
        "channel": "voice_in",
        "tenant": "6",
    }


def test_boston_event_fields(boston311: SourceMapping) -> None:
    event = boston311.to_event(boston_row("01/01/2015 12:25:23 AM"))

    assert event["event_id"] == "boston311-101001240735"
    assert event["tenant"] == "Back Bay"


def test_empty_tenant_uses_fallback(boston311: SourceMapping) -> None:
    event = boston311.to_event(boston_row("01/01/2015 12:25:23 AM", neighborhood="  "))

    assert event["tenant"] == "unknown"


@pytest.mark.parametrize(
    ("row_changes", "reason"),
    [
        ({"CaseID": ""}, "missing_event_id"),
        ({"CaseID": "   "}, "missing_event_id"),
        ({"Opened": ""}, "missing_time"),
        ({"Opened": "2014-04-30 14:51:52"}, "invalid_time"),
        ({"Opened": "13/30/2014 02:51:52 PM"}, "invalid_time"),
        ({"Opened": "04/30/2014 14:51:52 PM"}, "invalid_time"),
        ({"Source": ""}, "missing_channel"),
        ({"Source": "???"}, "invalid_channel"),
    ],
)
def test_unmappable_row_raises(
    sf311: SourceMapping, row_changes: dict[str, str], reason: str
) -> None:
    row = sf_row("04/30/2014 02:51:52 PM") | row_changes

    with pytest.raises(MappingError) as caught:
        sf311.map_row(row)

    assert caught.value.reason == reason


def test_missing_column_raises(sf311: SourceMapping) -> None:
    row = sf_row("04/30/2014 02:51:52 PM")
    del row["Opened"]

    with pytest.raises(MappingError) as caught:
        sf311.map_row(row)

    assert caught.value.reason == "missing_time"


def test_unknown_source_passes_normalised(sf311: SourceMapping) -> None:
    mapped = sf311.map_row(sf_row("04/30/2014 02:51:52 PM", source="Fax Machine (old)"))

    assert mapped.event["channel"] == "fax_machine_old"
    assert mapped.unmapped_channel == "Fax Machine (old)"


def test_unknown_source_skipped_when_configured(tmp_path: Path) -> None:
    mapping = load_mapping(write_mapping(tmp_path, channel='unmapped = "skip"'))
    row = {"id": "1", "time": "2015-06-01 12:00:00", "source": "Fax"}

    with pytest.raises(MappingError) as caught:
        mapping.map_row(row)

    assert caught.value.reason == "unmapped_channel"
    assert "Fax" in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Web Self Service", "web_self_service"),
        ("e-mail In", "e_mail_in"),
        ("  Open311 ", "open311"),
        ("City Worker App", "city_worker_app"),
        ("--", ""),
    ],
)
def test_normalise_channel(raw: str, expected: str) -> None:
    assert normalise_channel(raw) == expected


def test_mapping_without_tenant(tmp_path: Path) -> None:
    mapping = load_mapping(write_mapping(tmp_path))

    event = mapping.to_event({"id": 7, "time": "2015-06-01 12:00:00", "source": "Web"})

    assert event == {
        "event_id": "7",
        "occurred_at": "2015-06-01T10:00:00.000Z",
        "channel": "web",
    }


def test_unknown_mapping_name_lists_available() -> None:
    with pytest.raises(ConfigError) as caught:
        load_mapping("no_such_mapping")

    assert "sf311" in str(caught.value)
    assert "boston311" in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "channel", "message"),
    [
        ('"Phone" = "Phone Line"', "", "invalid channel names"),
        ('" Phone" = "phone"', "", "leading or trailing spaces"),
        ("", 'unmapped = "drop"', "unmapped"),
        ("", 'colour = "red"', "colour"),
    ],
)
def test_invalid_mapping_file_raises(
    tmp_path: Path, extra: str, channel: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_mapping(write_mapping(tmp_path, extra=extra, channel=channel))

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (('"Europe/Berlin"', '"Mars/Olympus"'), "invalid occurred_at.zone"),
        (('"%Y-%m-%d %H:%M:%S"', '"%m-%d %H:%M"'), "invalid occurred_at.format"),
        (('column = "time"\n', ""), "column"),
    ],
)
def test_invalid_time_settings_raise(
    tmp_path: Path, replace: tuple[str, str], message: str
) -> None:
    path = write_mapping(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace(*replace), encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_mapping(path)

    assert message in str(caught.value)


def test_check_columns_names_missing(sf311: SourceMapping) -> None:
    with pytest.raises(ConfigError) as caught:
        sf311.check_columns(["CASE_ENQUIRY_ID", "OPEN_DT", "Source"], "boston.csv")

    assert "CaseID" in str(caught.value)
    assert "boston.csv" in str(caught.value)


def test_csv_field_with_line_break(tmp_path: Path, sf311: SourceMapping) -> None:
    path = tmp_path / "cases.csv"
    path.write_text(
        '"CaseID","Opened","Status.Notes","Supervisor.District","Source"\r\n'
        '1,"01/15/2015 08:05:00 AM","Case Transferred\n Jeff, Inspector\n","4","Voice In"\r\n'
        '2,"01/15/2015 08:06:00 AM","","5","Open311"\r\n',
        encoding="utf-8",
    )

    rows = list(read_rows(path))

    assert [row.number for row in rows] == [2, 5]
    assert rows[0].fields["Status.Notes"] == "Case Transferred\n Jeff, Inspector\n"
    assert sf311.to_event(rows[0].fields)["channel"] == "voice_in"
    assert sf311.to_event(rows[1].fields)["tenant"] == "5"


def test_csv_malformed_row_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cases.csv"
    path.write_text("CaseID,Opened,Source\n1,x\n\n2,y,z\n", encoding="utf-8")

    rows = list(read_rows(path))

    assert len(rows) == 2
    assert rows[0].error is not None
    assert rows[0].error.reason == "malformed_row"
    assert rows[1].fields == {"CaseID": "2", "Opened": "y", "Source": "z"}
    assert rows[1].number == 4


def test_unsupported_suffix_raises(tmp_path: Path) -> None:
    with pytest.raises(InputFileError):
        list(read_rows(tmp_path / "cases.xlsx"))


def test_json_lines_bad_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"event_id": "a"}\n{"event_id": \n\n[1, 2]\n', encoding="utf-8")

    rows = list(read_rows(path))

    assert rows[0].fields == {"event_id": "a"}
    assert rows[1].error is not None
    assert rows[1].error.reason == "invalid_json"
    assert rows[2].error is not None
    assert rows[2].error.reason == "not_an_object"
    assert rows[2].number == 4


def test_json_lines_mapped_like_csv(tmp_path: Path, sf311: SourceMapping) -> None:
    path = tmp_path / "cases.ndjson"
    row = {"CaseID": 3600298, "Opened": "04/30/2014 02:51:52 PM",
           "Supervisor.District": 6, "Source": "Open311"}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")

    events, report = load_events(path, sf311)

    assert report.rows_read == 1
    assert events[0].event["event_id"] == "sf311-3600298"
    assert events[0].event["tenant"] == "6"


@pytest.mark.parametrize(
    ("occurred_at", "expected_ms"),
    [
        ("2025-06-02T14:07:00Z", 1748873220000),
        ("2025-06-02T16:07:00+02:00", 1748873220000),
        ("2025-06-02T14:07:00.250+00:00", 1748873220250),
        (1748873220000, 1748873220000),
    ],
)
def test_event_time_spellings(occurred_at: Any, expected_ms: int) -> None:
    record = {"event_id": "m1", "occurred_at": occurred_at, "channel": "chatbot", "x": 1}

    mapped = check_event(record)

    assert mapped.occurred_at_ms == expected_ms
    assert mapped.event == record


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"occurred_at": "2025-06-02T14:07:00"}, "invalid_time"),
        ({"occurred_at": 1748873220}, "invalid_time"),
        ({"occurred_at": "last tuesday"}, "invalid_time"),
        ({"occurred_at": True}, "missing_time"),
        ({"event_id": ""}, "missing_event_id"),
        ({"event_id": 17}, "missing_event_id"),
        ({"channel": None}, "missing_channel"),
    ],
)
def test_invalid_event_raises(changes: dict[str, Any], reason: str) -> None:
    record = {"event_id": "m1", "occurred_at": "2025-06-02T14:07:00Z", "channel": "chatbot"}

    with pytest.raises(MappingError) as caught:
        check_event(record | changes)

    assert caught.value.reason == reason


def test_load_events_sorts_and_counts(tmp_path: Path, sf311: SourceMapping) -> None:
    path = tmp_path / "cases.csv"
    path.write_text(
        "CaseID,Opened,Supervisor.District,Source\n"
        "3,03/01/2015 10:00:00 AM,1,Voice In\n"
        "1,03/01/2015 09:00:00 AM,1,Open311\n"
        ",03/01/2015 09:00:00 AM,1,Open311\n"
        "2,03/01/2015 10:00:00 AM,1,Fax\n"
        "1,03/01/2015 11:00:00 AM,1,Open311\n"
        "4,yesterday,1,Open311\n",
        encoding="utf-8",
    )

    events, report = load_events(path, sf311)

    assert [item.event["event_id"] for item in events] == [
        "sf311-1", "sf311-3", "sf311-2", "sf311-1",
    ]
    assert report.rows_read == 6
    assert report.skipped == Counter({"missing_event_id": 1, "invalid_time": 1})
    assert report.unmapped_channels == Counter({"Fax": 1})
    assert report.duplicate_event_ids == 1
    assert report.first_event_ms == events[0].occurred_at_ms
    assert report.last_event_ms == events[-1].occurred_at_ms


def test_load_events_limit_counts_file_rows(tmp_path: Path, sf311: SourceMapping) -> None:
    path = tmp_path / "cases.csv"
    path.write_text(
        "CaseID,Opened,Supervisor.District,Source\n"
        "1,03/01/2015 10:00:00 AM,1,Voice In\n"
        "2,03/01/2015 08:00:00 AM,1,Voice In\n"
        "3,03/01/2015 07:00:00 AM,1,Voice In\n",
        encoding="utf-8",
    )

    events, report = load_events(path, sf311, limit=2)

    assert report.rows_read == 2
    assert [item.event["event_id"] for item in events] == ["sf311-2", "sf311-1"]


def test_load_events_csv_needs_mapping(tmp_path: Path) -> None:
    path = tmp_path / "cases.csv"
    path.write_text("CaseID\n1\n", encoding="utf-8")

    with pytest.raises(InputFileError):
        load_events(path, None)


@pytest.mark.parametrize(
    ("key_by", "event", "expected"),
    [
        ("tenant", {"tenant": "Back Bay"}, b"Back Bay"),
        ("tenant", {}, None),
        ("customer", {"tenant": "t1", "customer_id": "c9"}, b"c9"),
        ("customer", {"tenant": "t1"}, None),
        ("none", {"tenant": "t1"}, None),
    ],
)
def test_record_key(key_by: Any, event: dict[str, Any], expected: bytes | None) -> None:
    assert record_key(event, key_by) == expected


@needs_data
def test_sf_file_maps_without_skips(sf311: SourceMapping) -> None:
    events, report = load_events(SF_CSV, sf311)

    assert report.rows_read == 10_000
    assert report.rows_skipped == 0
    assert len(events) == 10_000
    assert report.unmapped_channels == Counter()
    assert report.duplicate_event_ids == 0
    assert events[0].event["occurred_at"] == "2008-07-01T15:54:00.000Z"
    assert events[-1].event["occurred_at"] == "2016-01-28T00:51:21.000Z"
    assert Counter(item.event["channel"] for item in events) == Counter({
        "voice_in": 6674, "open311": 1454, "web_self_service": 1297,
        "integrated_agency": 422, "twitter": 143, "other_department": 6,
        "e_mail_in": 3, "mail_in": 1,
    })


@needs_data
def test_sf_row_with_line_break(sf311: SourceMapping) -> None:
    rows = {row.fields["CaseID"]: row for row in read_rows(SF_CSV)}

    row = rows["2418830"]

    assert row.number == 12
    assert "\n" in row.fields["Status.Notes"]
    assert sf311.to_event(row.fields) == {
        "event_id": "sf311-2418830",
        "occurred_at": "2013-05-28T19:53:59.000Z",
        "channel": "voice_in",
        "tenant": "10",
    }


@needs_data
def test_boston_file_maps_without_skips(boston311: SourceMapping) -> None:
    events, report = load_events(BOSTON_CSV, boston311)

    assert report.rows_read == 7_956
    assert report.rows_skipped == 0
    assert report.unmapped_channels == Counter()
    assert events[0].event["occurred_at"] == "2015-01-01T05:25:23.000Z"
    assert events[-1].event["occurred_at"] == "2016-01-01T01:59:00.000Z"
    assert sum(1 for item in events if item.event["tenant"] == "unknown") == 765


def load_truth() -> ModuleType:
    # tests/ is not a package, so load the module by path.
    path = Path(__file__).resolve().parents[1] / "truth.py"
    spec = importlib.util.spec_from_file_location("truth", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_data
def test_sf_mapping_agrees_with_truth(sf311: SourceMapping) -> None:
    window = WindowSpec(name="24h", size_ms=86_400_000, step_ms=3_600_000)
    classes = {SF_CHANNELS[value]: 1 for value in SF_SELF_SERVICE}
    classes |= {SF_CHANNELS[value]: 0 for value in SF_ASSISTED}
    expected = load_truth().expected_counts(
        SF_CSV,
        id_column="CaseID",
        time_column="Opened",
        time_format="%m/%d/%Y %I:%M:%S %p",
        zone="America/Los_Angeles",
        tenant_column="Supervisor.District",
        tenant_fallback="unknown",
        channel_column="Source",
        self_service_values=SF_SELF_SERVICE,
        assisted_values=SF_ASSISTED,
        window_ms=window.size_ms,
        step_ms=window.step_ms,
        all_tenants="*",
    )

    events, _ = load_events(SF_CSV, sf311)
    counts: Counter[tuple[str, int, int]] = Counter()
    for item in events:
        self_service = classes.get(item.event["channel"])
        if self_service is None:
            continue
        for end_ms in window_ends(window, item.occurred_at_ms):
            for tenant in (item.event["tenant"], "*"):
                counts[(tenant, end_ms, 1)] += self_service
                counts[(tenant, end_ms, 0)] += 1
    actual = {
        (tenant, end_ms): (counts[(tenant, end_ms, 1)], total)
        for (tenant, end_ms, kind), total in counts.items()
        if kind == 0
    }

    assert actual == expected
    assert sum(total for (tenant, _), (_, total) in expected.items() if tenant == "*") == (
        (6674 + 1454 + 1297 + 143 + 3 + 1) * 24
    )


CHANNEL_CLASSES = {
    "open311": "self_service",
    "web_self_service": "self_service",
    "citizens_connect_app": "self_service",
    "self_service": "self_service",
    "voice_in": "assisted",
    "twitter": "assisted",
    "e_mail_in": "assisted",
    "mail_in": "assisted",
    "constituent_call": "assisted",
    "integrated_agency": "excluded",
    "other_department": "excluded",
    "employee_generated": "excluded",
    "city_worker_app": "excluded",
    "maximo_integration": "excluded",
}


def test_mapped_channels_are_classified(sf311: SourceMapping, boston311: SourceMapping) -> None:
    channels_file = Path(__file__).resolve().parents[2] / "config" / "channels.toml"
    with channels_file.open("rb") as handle:
        document = tomllib.load(handle)
    classified = {
        channel: name for name, table in document.items() for channel in table["channels"]
    }

    emitted = set(sf311.channels.values()) | set(boston311.channels.values())

    assert emitted == set(CHANNEL_CLASSES)
    for channel in sorted(emitted):
        assert classified.get(channel) == CHANNEL_CLASSES[channel], channel
