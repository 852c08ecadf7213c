"""Logging of repeated events at a bounded rate.

A stream of bad or late records would otherwise write one log line per
record, and the Kafka client logs each failed connection attempt while the
broker is down, thousands a second when it retries without a pause. The log
keeps the first few of each kind per interval as examples, then reports
how many were left out.
"""

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _Window:
    started: float
    logged: int = 0
    suppressed: int = 0


class _Budget:
    """Records logged and dropped per key, in intervals that start with a key's first record."""

    def __init__(self, burst: int, interval_seconds: float, clock: Callable[[], float]) -> None:
        self.interval = interval_seconds
        self._burst = burst
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}

    def admit(self, key: Hashable) -> tuple[bool, int]:
        """Return whether a record of ``key`` may be logged now, and what its last interval dropped.

        The count is not 0 only for the first record after an interval that
        dropped some, so each count is returned once.
        """
        now = self._clock()
        window = self._windows.get(key)
        dropped = 0
        if window is None or now - window.started >= self.interval:
            if window is not None:
                dropped = window.suppressed
            window = self._windows[key] = _Window(now)
        if window.logged < self._burst:
            window.logged += 1
            return True, dropped
        window.suppressed += 1
        return False, dropped

    def take_ended(self) -> list[tuple[Hashable, int]]:
        """Forget the intervals that have ended, and return their keys with what each dropped."""
        now = self._clock()
        ended = [
            (key, window.suppressed)
            for key, window in self._windows.items()
            if now - window.started >= self.interval
        ]
        for key, _ in ended:
            del self._windows[key]
        return ended


class RateLimitedLog:
    """Log at most ``burst`` warnings of each kind per ``interval_seconds``."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._budget = _Budget(burst, interval_seconds, clock)

    def warning(self, kind: str, message: str, *args: object) -> None:
        """Log a warning of ``kind`` unless its budget for this interval is spent."""
        allowed, dropped = self._budget.admit(kind)
        if dropped:
            self._report(kind, dropped)
        if allowed:
            self._logger.warning(message, *args)

    def flush(self) -> None:
        """Log how many warnings were left out in intervals that have ended.

        Call it now and then, so the count of a burst that stopped is logged
        without waiting for the next warning of its kind.
        """
        for kind, dropped in self._budget.take_ended():
            if dropped:
                self._report(str(kind), dropped)

    def _report(self, kind: str, dropped: int) -> None:
        self._logger.warning(
            "%d more %s warnings in %.0f s not logged",
            dropped,
            kind,
            self._budget.interval,
        )


class RepeatFilter(logging.Filter):
    """Pass at most ``burst`` records of each logger and message per ``interval_seconds``.

    The first record passed after a dropped run reports how many records
    like it were not logged.
    """

    def __init__(
        self,
        *,
        burst: int = 10,
        interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._budget = _Budget(burst, interval_seconds, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        allowed, dropped = self._budget.admit((record.name, record.levelno, str(record.msg)))
        if dropped:
            # The note has no % sign, so the record's own arguments still apply.
            record.msg = (
                f"{record.msg} ({dropped} more records like this "
                f"in {self._budget.interval:.0f} s not logged)"
            )
        return allowed


def limit_repeats(prefix: str, repeat_filter: RepeatFilter) -> None:
    """Add ``repeat_filter`` to every logger created so far whose name starts with ``prefix``.

    A logger's filters do not apply to its children, so each module's logger
    gets it. Call this after importing the library.
    """
    names = [name for name in logging.Logger.manager.loggerDict if name.startswith(prefix)]
    for name in [prefix, *names]:
        logger = logging.getLogger(name)
        if repeat_filter not in logger.filters:
            logger.addFilter(repeat_filter)
