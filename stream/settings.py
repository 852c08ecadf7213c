"""Settings of the worker, validated once at start-up and passed down.

Values come, in rising precedence, from the defaults below, a TOML file
(``config/adoption-rate.toml`` or the file named by ``ADOPTION_CONFIG_FILE``),
and environment variables named after the fields with the prefix
``ADOPTION_`` (``ADOPTION_GRACE_MS=5m``).
``KAFKA_BOOTSTRAP_SERVERS`` is honoured too. Durations accept ``"90s"``,
``"5m"``, ``"24h"`` or an integer of milliseconds and are held as ``*_ms``.
"""

import os
import re
import socket
import tomllib
from functools import reduce
from math import gcd
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    NoDecode,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from stream.errors import ConfigError
from stream.timeutil import format_duration, parse_duration_ms
from stream.windows.spec import WindowSpec

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"
DEFAULT_CONFIG_FILE = CONFIG_DIR / "adoption-rate.toml"

# Kafka accepts topic names of at most 249 of these characters. The app id
# prefixes the internal topics, the longest being "<app_id>-all-tenants-changelog".
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]+")
MAX_TOPIC_NAME = 249
MAX_INTERNAL_SUFFIX_LENGTH = len("-all-tenants-changelog")

DURATION_FIELDS = (
    "grace_ms",
    "idle_timeout_ms",
    "tick_interval_ms",
    "max_future_ms",
    "dedup_horizon_ms",
    "batch_within_ms",
    "publish_interval_ms",
    "catch_up_publish_interval_ms",
    "commit_interval_ms",
    "session_timeout_ms",
    "transaction_timeout_ms",
)


def parse_windows(value: Any) -> tuple[WindowSpec, ...]:
    """Parse window specs such as ``"5m/1m,1h/5m,24h"`` or a list of them."""
    if isinstance(value, str):
        items: list[Any] = [part for part in value.split(",") if part.strip()]
    else:
        items = list(value)
    specs: list[WindowSpec] = []
    for item in items:
        if isinstance(item, WindowSpec):
            specs.append(item)
            continue
        size_text, _, step_text = str(item).strip().partition("/")
        size_ms = parse_duration_ms(size_text)
        step_ms = parse_duration_ms(step_text) if step_text else size_ms
        specs.append(WindowSpec(name=format_duration(size_ms), size_ms=size_ms, step_ms=step_ms))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"invalid windows {names}: each window size may appear once")
    if not specs:
        raise ValueError("invalid windows: configure at least one, like '5m/1m'")
    return tuple(specs)


class Settings(BaseSettings):
    """Every setting of the worker, the replay and the demo."""

    model_config = SettingsConfigDict(
        env_prefix="ADOPTION_",
        frozen=True,
        extra="forbid",
        toml_file=None,
        populate_by_name=True,
    )

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            "ADOPTION_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers"
        ),
    )
    app_id: str = "adoption-rate"
    input_topics: Annotated[tuple[str, ...], NoDecode] = ("support-interactions",)
    output_topic: str = "self-service-adoption-rates"
    dead_letter_topic: str = "support-interactions-dlq"
    alerts_topic: str = "self-service-adoption-alerts"
    internal_partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)

    windows: Annotated[tuple[WindowSpec, ...], NoDecode] = parse_windows("5m/1m,1h/5m,24h/1h")
    grace_ms: int = 120_000
    idle_timeout_ms: int = Field(default=30_000, ge=1)
    tick_interval_ms: int = Field(default=1_000, ge=1)
    max_future_ms: int = 300_000
    dedup_horizon_ms: int | None = None
    # A backlog is read in batches of this size: each batch costs a journal
    # record and a pass over the windows it touched, whatever its size. Live
    # traffic fills far less within batch_within_ms, so this adds no delay.
    batch_max_events: int = Field(default=20_000, ge=1)
    # With publish_interval_ms, the longest an event waits before any
    # processing: at 500 and 100 ms, output trailed input by 0.88 s at the
    # 99th percentile at half load (docs/benchmarks.md), against 1.46 s at
    # 1 s and 200 ms, for about twice the output records.
    batch_within_ms: int = Field(default=100, ge=1)
    # Kafka's default of 1 MiB per partition and fetch halved the worker's
    # rate on a backlog, since each fetch costs a round trip of the fetch loop.
    # The fetch request carries it as a 32-bit signed integer.
    max_partition_fetch_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=2**31 - 1)
    publish_interval_ms: int = 500
    # Used while a partition's newest event is older than grace, as on a backlog.
    # Provisional records at the live interval cost about a sixth of its rate.
    catch_up_publish_interval_ms: int = Field(default=5_000, ge=0)
    commit_interval_ms: int = Field(default=1_000, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1)

    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    worker_id: str | None = Field(default=None, min_length=1)
    transaction_timeout_ms: int = Field(default=10_000, ge=1_000)
    unknown_channel: Literal["reject", "count"] = "reject"
    channels_file: Path = CONFIG_DIR / "channels.toml"
    default_tenant: str = Field(default="default", min_length=1)
    all_tenants: str = Field(default="*", min_length=1)
    max_tenant_series: int = Field(default=100, ge=0)
    alert_window: str | None = None
    alert_floor: float = Field(default=0.2, ge=0.0, le=1.0)
    alert_min_interactions: int = Field(default=50, ge=1)
    alert_drop_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    alert_baseline_windows: int = Field(default=288, ge=1)
    data_dir: Path = Path("adoption-rate-data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("input_topics", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(topic.strip() for topic in value.split(",") if topic.strip())
        return value

    @field_validator("windows", mode="before")
    @classmethod
    def _parse_windows(cls, value: Any) -> tuple[WindowSpec, ...]:
        return parse_windows(value)

    @field_validator(*DURATION_FIELDS, mode="before")
    @classmethod
    def _parse_duration(cls, value: Any) -> int | None:
        return None if value is None else parse_duration_ms(value)

    @model_validator(mode="after")
    def _check_topics(self) -> "Settings":
        if not self.input_topics:
            raise ValueError("input_topics is empty: name at least one topic to consume")
        named = [("input_topics", topic, MAX_TOPIC_NAME) for topic in self.input_topics] + [
            ("output_topic", self.output_topic, MAX_TOPIC_NAME),
            ("dead_letter_topic", self.dead_letter_topic, MAX_TOPIC_NAME),
            ("alerts_topic", self.alerts_topic, MAX_TOPIC_NAME),
            ("app_id", self.app_id, MAX_TOPIC_NAME - MAX_INTERNAL_SUFFIX_LENGTH),
        ]
        for field, name, longest in named:
            if not TOPIC_NAME.fullmatch(name) or name in {".", ".."}:
                hint = ". Separate input topics with commas" if field == "input_topics" else ""
                raise ValueError(
                    f"{field} {name!r} is not a valid Kafka topic name: use letters, digits, "
                    f"'.', '_' and '-'{hint}"
                )
            if len(name) > longest:
                limit = (
                    f"the {longest} allowed, since internal topic names add up to "
                    f"{MAX_INTERNAL_SUFFIX_LENGTH} characters to it and Kafka allows "
                    f"{MAX_TOPIC_NAME}"
                    if field == "app_id"
                    else f"the {longest} Kafka allows in a topic name"
                )
                raise ValueError(f"{field} is {len(name)} characters long, more than {limit}")
        if self.dedup_horizon_ms is not None and (
            self.dedup_horizon_ms < self.grace_ms + self.slice_ms
        ):
            raise ValueError(
                f"dedup_horizon_ms {self.dedup_horizon_ms} is shorter than grace plus one slice "
                f"({self.grace_ms + self.slice_ms} ms): an event id would be forgotten while "
                "its window is still open, so a redelivery would count twice"
            )
        if self.alert_window is not None and self.alert_window not in {
            spec.name for spec in self.windows
        }:
            raise ValueError(
                f"alert_window {self.alert_window!r} is not a configured window: use one of "
                f"{[spec.name for spec in self.windows]}"
            )
        if self.default_tenant == self.all_tenants:
            raise ValueError(
                f"default_tenant {self.default_tenant!r} is the all_tenants name: events "
                "without a tenant would be mixed into the all-tenants figure"
            )
        outputs = {
            "output_topic": self.output_topic,
            "dead_letter_topic": self.dead_letter_topic,
            "alerts_topic": self.alerts_topic,
        }
        for field, topic in outputs.items():
            if topic in self.input_topics:
                raise ValueError(
                    f"{field} {topic!r} is also in input_topics: the worker would read its own "
                    "records"
                )
        return self

    @property
    def slice_ms(self) -> int:
        """Length of the event-time slices that every window is summed from."""
        return reduce(gcd, [spec.step_ms for spec in self.windows] +
                      [spec.size_ms for spec in self.windows])

    @property
    def effective_worker_id(self) -> str:
        """Return this worker's identity in transactional ids: ``worker_id``, or host and web port.

        The default stays the same when a worker restarts with the same
        configuration, and differs between two workers on one host, because
        they cannot share a web port.
        """
        if self.worker_id is not None:
            return self.worker_id
        return f"{socket.gethostname()}-{self.web_port}"

    @property
    def sender_timeout_ms(self) -> int:
        """Return how long a counting partition heeds a worker's last watermark tick.

        Three idle timeouts, and at least ten ticks. After that the worker is
        taken for gone, and its watermark no longer keeps windows open.
        """
        return max(3 * self.idle_timeout_ms, 10 * self.tick_interval_ms)

    @property
    def effective_dedup_horizon_ms(self) -> int:
        """Return how long event ids are remembered: the setting, or one hour at least.

        Unset, it is one hour or grace plus one slice, whichever is longer, so
        an id is never forgotten while its window is open.
        """
        if self.dedup_horizon_ms is not None:
            return self.dedup_horizon_ms
        return max(3_600_000, self.grace_ms + self.slice_ms)

    @property
    def alert_window_name(self) -> str:
        """Return the window whose final records the in-stream alerts check.

        ``alert_window`` when set, else ``1h`` when configured, else the largest window.
        """
        if self.alert_window is not None:
            return self.alert_window
        names = [spec.name for spec in self.windows]
        if "1h" in names:
            return "1h"
        return max(self.windows, key=lambda spec: spec.size_ms).name

    @property
    def retention_ms(self) -> int:
        """How long, in event time past the clock, slices are kept."""
        return max(spec.size_ms for spec in self.windows) + self.grace_ms

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get("ADOPTION_CONFIG_FILE", DEFAULT_CONFIG_FILE))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


# Variables with the prefix that are not settings of this class.
OTHER_ADOPTION_VARIABLES = frozenset({"ADOPTION_CONFIG_FILE", "ADOPTION_BROKER_HOME"})


def check_environment(environ: Mapping[str, str]) -> None:
    """Reject ``ADOPTION_*`` variables that name no setting, such as a misspelt one."""
    known = {f"ADOPTION_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(
        name
        for name in environ
        if name.startswith("ADOPTION_") and name not in known | OTHER_ADOPTION_VARIABLES
    )
    if unknown:
        raise ConfigError(
            f"unknown settings in the environment: {', '.join(unknown)}. Settings are "
            "ADOPTION_ plus a key of config/adoption-rate.toml in upper case, like ADOPTION_GRACE_MS"
        )


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, raising :class:`ConfigError` with every problem listed."""
    check_environment(os.environ)
    config_file = os.environ.get("ADOPTION_CONFIG_FILE")
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigError(
            f"ADOPTION_CONFIG_FILE names {config_file!r}, which is not a file: fix the path, "
            f"or unset the variable to read {DEFAULT_CONFIG_FILE}"
        )
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {describe_errors(exc)}") from exc
    except tomllib.TOMLDecodeError as exc:
        path = config_file if config_file is not None else DEFAULT_CONFIG_FILE
        raise ConfigError(f"invalid settings file {path}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
    return settings


def describe_errors(error: ValidationError) -> str:
    """Return pydantic's errors as one line: each setting, what is wrong, and the value given."""
    parts = []
    for detail in error.errors(include_url=False):
        location = ".".join(str(part) for part in detail["loc"])
        message = detail["msg"].removeprefix("Value error, ")
        if not location:
            # A check across settings names the fields in its message.
            parts.append(message)
            continue
        value = detail.get("input")
        # Pydantic's own messages do not name the value; the project's checks may.
        if value is not None and not isinstance(value, dict) and not _names(message, value):
            message = f"{message} (got {value!r})"
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


def _names(message: str, value: Any) -> bool:
    """Tell whether ``message`` quotes ``value`` on its own, not as part of a longer number."""
    return re.search(rf"(?<![\w.]){re.escape(repr(value))}(?![\w.])", message) is not None
