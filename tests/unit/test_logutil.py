"""Rate-limited warnings: a few examples per kind and interval, then a count."""

import logging
from collections.abc import Iterator

import pytest

from stream.logutil import RateLimitedLog, RepeatFilter, limit_repeats


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def log(clock: FakeClock) -> RateLimitedLog:
    return RateLimitedLog(logging.getLogger("test.logutil"), burst=3, interval_seconds=60, clock=clock)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_burst_logged_then_suppressed(
    log: RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        for number in range(10):
            log.warning("late event", "late event %d", number)

    assert messages(caplog) == ["late event 0", "late event 1", "late event 2"]


def test_kinds_have_separate_budgets(
    log: RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        for number in range(5):
            log.warning("late event", "late %d", number)
            log.warning("invalid_json rejection", "invalid %d", number)

    assert messages(caplog).count("late 2") == 1
    assert messages(caplog).count("invalid 2") == 1
    assert len(messages(caplog)) == 6


def test_next_interval_reports_suppressed(
    log: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        for number in range(8):
            log.warning("late event", "late %d", number)
        clock.now += 61
        log.warning("late event", "late again")

    assert messages(caplog)[3] == (
        "5 more late event warnings in 60 s not logged"
    )
    assert messages(caplog)[4] == "late again"


def test_flush_reports_ended_interval_once(
    log: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        for number in range(4):
            log.warning("late event", "late %d", number)
        log.flush()
        still_open = len(caplog.records)
        clock.now += 61
        log.flush()
        log.flush()

    assert still_open == 3
    assert messages(caplog)[3:] == [
        "1 more late event warnings in 60 s not logged"
    ]


# Repeated records of a library's loggers


@pytest.fixture
def client_logger(clock: FakeClock) -> Iterator[logging.Logger]:
    """A library-like logger tree, ``client.conn`` under ``client``, with a repeat filter."""
    logger = logging.getLogger("client.conn")
    repeat_filter = RepeatFilter(burst=2, interval_seconds=60, clock=clock)
    limit_repeats("client", repeat_filter)
    yield logger
    for name in ("client", "client.conn"):
        logging.getLogger(name).removeFilter(repeat_filter)


def test_repeats_beyond_burst_dropped(
    client_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        for node in range(50):
            client_logger.error("Unable connect to node with id %s", node)
        client_logger.error("Unable to update metadata from %s", [1])

    assert messages(caplog) == [
        "Unable connect to node with id 0",
        "Unable connect to node with id 1",
        "Unable to update metadata from [1]",
    ]


def test_next_interval_reports_dropped_count(
    client_logger: logging.Logger, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        for node in range(5):
            client_logger.error("Unable connect to node with id %s", node)
        clock.now += 60
        client_logger.error("Unable connect to node with id %s", 9)

    assert messages(caplog)[-1] == (
        "Unable connect to node with id 9 (3 more records like this in 60 s not logged)"
    )
