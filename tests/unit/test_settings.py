"""Tests of the settings: environment overrides, the TOML file and validation errors."""

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream.errors import ConfigError
from stream.settings import Settings, load_settings
from stream.windows.spec import WindowSpec
from stream.worker.topics import internal_topics

MINUTE_MS = 60_000


def test_load_settings_defaults() -> None:
    settings = load_settings()

    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.input_topics == ("support-interactions",)
    assert [spec.name for spec in settings.windows] == ["5m", "1h", "24h"]
    assert settings.grace_ms == 120_000
    assert settings.slice_ms == MINUTE_MS


def test_env_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_WINDOWS", "5m/1m,1h")

    settings = load_settings()

    assert settings.windows == (
        WindowSpec(name="5m", size_ms=5 * MINUTE_MS, step_ms=MINUTE_MS),
        WindowSpec(name="1h", size_ms=60 * MINUTE_MS, step_ms=60 * MINUTE_MS),
    )
    assert settings.slice_ms == MINUTE_MS


@pytest.mark.parametrize(
    ("text", "grace_ms"), [("30s", 30_000), ("2m", 120_000), ("1500", 1_500), ("0s", 0)]
)
def test_env_grace_duration(monkeypatch: pytest.MonkeyPatch, text: str, grace_ms: int) -> None:
    monkeypatch.setenv("ADOPTION_GRACE_MS", text)

    assert load_settings().grace_ms == grace_ms


def test_env_input_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_INPUT_TOPICS", "a, b,")

    assert load_settings().input_topics == ("a", "b")


def test_env_kafka_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:29092,127.0.0.1:29093")

    assert load_settings().bootstrap_servers == "127.0.0.1:29092,127.0.0.1:29093"


def test_env_adoption_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_BOOTSTRAP_SERVERS", "127.0.0.1:39092")

    assert load_settings().bootstrap_servers == "127.0.0.1:39092"


def test_env_overrides_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_file = tmp_path / "adoption-rate.toml"
    config_file.write_text('grace_ms = "5m"\nidle_timeout_ms = "45s"\n', encoding="utf-8")
    monkeypatch.setenv("ADOPTION_CONFIG_FILE", str(config_file))
    from_file = load_settings()

    monkeypatch.setenv("ADOPTION_GRACE_MS", "30s")
    from_env = load_settings()

    assert from_file.grace_ms == 300_000
    assert from_file.idle_timeout_ms == 45_000
    assert from_env.grace_ms == 30_000
    assert from_env.idle_timeout_ms == 45_000


@pytest.mark.parametrize("text", ["1023", "2147483648", "abc"])
def test_max_partition_fetch_bytes_rejected(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("ADOPTION_MAX_PARTITION_FETCH_BYTES", text)

    with pytest.raises(ConfigError, match="max_partition_fetch_bytes"):
        load_settings()


def test_max_partition_fetch_bytes_largest_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_MAX_PARTITION_FETCH_BYTES", "2147483647")

    assert load_settings().max_partition_fetch_bytes == 2**31 - 1


def test_settings_frozen() -> None:
    settings = load_settings()

    with pytest.raises(ValueError, match="frozen"):
        settings.grace_ms = 1


@pytest.mark.parametrize(
    ("variable", "text", "field"),
    [
        ("ADOPTION_GRACE_MS", "soon", "grace_ms"),
        ("ADOPTION_GRACE_MS", "-5", "grace_ms"),
        ("ADOPTION_IDLE_TIMEOUT_MS", "5 minutes", "idle_timeout_ms"),
        ("ADOPTION_WINDOWS", "5m/10m", "windows"),
        ("ADOPTION_WINDOWS", "10m/3m", "windows"),
        ("ADOPTION_WINDOWS", "0m", "windows"),
        ("ADOPTION_INTERNAL_PARTITIONS", "0", "internal_partitions"),
        ("ADOPTION_WEB_PORT", "70000", "web_port"),
        ("ADOPTION_UNKNOWN_CHANNEL", "drop", "unknown_channel"),
        ("ADOPTION_PROCESSING_GUARANTEE", "maybe_once", "processing_guarantee"),
        ("ADOPTION_LOG_LEVEL", "LOUD", "log_level"),
    ],
)
def test_env_invalid_value_names_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, field: str
) -> None:
    monkeypatch.setenv(variable, text)

    with pytest.raises(ConfigError, match=field):
        load_settings()


@pytest.mark.parametrize(
    "variable",
    [
        "ADOPTION_IDLE_TIMEOUT_MS",
        "ADOPTION_TICK_INTERVAL_MS",
        "ADOPTION_BATCH_WITHIN_MS",
        "ADOPTION_COMMIT_INTERVAL_MS",
        "ADOPTION_SESSION_TIMEOUT_MS",
    ],
)
def test_zero_interval_rejected(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    # With a zero batch wait, Faust waits for a full batch however long that takes.
    monkeypatch.setenv(variable, "0")

    field = variable.removeprefix("ADOPTION_").lower()
    with pytest.raises(ConfigError, match=field):
        load_settings()


@pytest.mark.parametrize(
    ("field", "output_topic"),
    [
        ("output_topic", "self-service-adoption-rates"),
        ("dead_letter_topic", "support-interactions-dlq"),
        ("alerts_topic", "self-service-adoption-alerts"),
    ],
)
def test_input_topic_equal_to_output_topic(
    monkeypatch: pytest.MonkeyPatch, field: str, output_topic: str
) -> None:
    monkeypatch.setenv("ADOPTION_INPUT_TOPICS", f"a,{output_topic}")

    message = rf"{field} '{output_topic}' is also in input_topics"
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_output_topic_set_to_input_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_INPUT_TOPICS", "events")
    monkeypatch.setenv("ADOPTION_OUTPUT_TOPIC", "events")

    with pytest.raises(ConfigError, match=r"output_topic 'events' is also in input_topics"):
        load_settings()


@pytest.mark.parametrize("text", ["", " , "])
def test_env_input_topics_empty(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("ADOPTION_INPUT_TOPICS", text)

    with pytest.raises(ConfigError, match="input_topics is empty"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("ADOPTION_INPUT_TOPICS", '["events"]', "input_topics"),
        ("ADOPTION_INPUT_TOPICS", "events;audit", "input_topics"),
        ("ADOPTION_OUTPUT_TOPIC", "rates per tenant", "output_topic"),
        ("ADOPTION_DEAD_LETTER_TOPIC", "..", "dead_letter_topic"),
        ("ADOPTION_ALERTS_TOPIC", "alerts/high", "alerts_topic"),
        ("ADOPTION_APP_ID", "adoption:rate", "app_id"),
    ],
)
def test_invalid_topic_name_rejected(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError) as raised:
        load_settings()

    message = str(raised.value)
    expected = f"invalid settings: {field} {value!r} is not a valid Kafka topic name"
    assert message.startswith(expected)
    assert ("Separate input topics with commas" in message) == (field == "input_topics")


def test_topic_names_at_kafka_length_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_OUTPUT_TOPIC", "o" * 249)
    monkeypatch.setenv("ADOPTION_APP_ID", "a" * 227)

    settings = load_settings()

    assert max(len(topic) for topic in internal_topics(settings)) == 249


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "ADOPTION_OUTPUT_TOPIC",
            "o" * 250,
            "output_topic is 250 characters long, more than the 249 Kafka allows in a topic name",
        ),
        (
            "ADOPTION_APP_ID",
            "a" * 228,
            "app_id is 228 characters long, more than the 227 allowed, since internal topic "
            "names add up to 22 characters to it and Kafka allows 249",
        ),
    ],
)
def test_topic_name_too_long(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_dedup_horizon_shorter_than_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_GRACE_MS", "2m")
    monkeypatch.setenv("ADOPTION_DEDUP_HORIZON_MS", "1m")

    with pytest.raises(ConfigError, match="dedup_horizon_ms"):
        load_settings()


def test_settings_init_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_APP_ID", "from-env")

    assert Settings(app_id="explicit").app_id == "explicit"
    assert load_settings().app_id == "from-env"


def test_exactly_once_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_PROCESSING_GUARANTEE", "exactly_once")

    assert load_settings().processing_guarantee == "exactly_once"


def test_transaction_timeout_defaults_and_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().transaction_timeout_ms == 10_000

    monkeypatch.setenv("ADOPTION_TRANSACTION_TIMEOUT_MS", "30s")

    assert load_settings().transaction_timeout_ms == 30_000


def test_transaction_timeout_below_one_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_TRANSACTION_TIMEOUT_MS", "500ms")

    with pytest.raises(ConfigError, match="transaction_timeout_ms"):
        load_settings()


def test_worker_id_defaults_to_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "node-7")
    monkeypatch.setenv("ADOPTION_WEB_PORT", "6070")

    settings = load_settings()

    assert settings.worker_id is None
    assert settings.effective_worker_id == "node-7-6070"


def test_worker_id_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_WORKER_ID", "worker-a")

    assert load_settings().effective_worker_id == "worker-a"


def test_worker_id_empty_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_WORKER_ID", "")

    with pytest.raises(ConfigError, match="worker_id"):
        load_settings()


def test_misspelt_environment_variable_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_GRACE", "5m")

    with pytest.raises(ConfigError, match="ADOPTION_GRACE"):
        load_settings()


def test_missing_config_file_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    monkeypatch.setenv("ADOPTION_CONFIG_FILE", str(missing))

    with pytest.raises(ConfigError) as raised:
        load_settings()

    assert str(missing) in str(raised.value)
    assert "not a file" in str(raised.value)


def test_config_file_folder_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADOPTION_CONFIG_FILE", str(tmp_path))

    with pytest.raises(ConfigError, match="not a file"):
        load_settings()


def test_invalid_settings_reported_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTION_GRACE_MS", "soon")
    monkeypatch.setenv("ADOPTION_ALERT_FLOOR", "2")

    with pytest.raises(ConfigError) as raised:
        load_settings()

    message = str(raised.value)
    assert "\n" not in message
    assert "grace_ms: invalid duration 'soon'" in message
    assert message.count("'soon'") == 1
    assert "alert_floor: Input should be less than or equal to 1 (got '2')" in message
    assert "errors.pydantic.dev" not in message


def use_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Path:
    """Write ``text`` to a settings file and point ADOPTION_CONFIG_FILE at it."""
    config_file = tmp_path / "settings.toml"
    config_file.write_text(text)
    monkeypatch.setenv("ADOPTION_CONFIG_FILE", str(config_file))
    return config_file


def test_number_inside_a_limit_still_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # "10" is part of "1024" in the message, which does not name the value.
    use_settings_file(monkeypatch, tmp_path, "max_partition_fetch_bytes = 10\n")

    with pytest.raises(ConfigError) as raised:
        load_settings()

    assert "greater than or equal to 1024 (got 10)" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", "invalid duration True"), ("36501d", "more than 36500d")],
)
def test_grace_out_of_range_rejected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, expected: str
) -> None:
    value = text if text == "true" else repr(text)
    use_settings_file(monkeypatch, tmp_path, f"grace_ms = {value}\n")

    with pytest.raises(ConfigError, match=expected):
        load_settings()


def test_default_tenant_must_not_be_all_tenants() -> None:
    with pytest.raises(ValidationError, match="default_tenant '\\*' is the all_tenants name"):
        Settings(default_tenant="*")


def test_empty_all_tenants_rejected() -> None:
    with pytest.raises(ValidationError, match="all_tenants"):
        Settings(all_tenants="")


def test_invalid_toml_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_file = use_settings_file(monkeypatch, tmp_path, "grace_ms = \n")

    with pytest.raises(ConfigError) as raised:
        load_settings()

    assert f"invalid settings file {config_file}: " in str(raised.value)
    assert "line 1" in str(raised.value)
