"""Logging of repeated events at a bounded rate.

A stream of bad or late records would otherwise write one log line per
record, and the Kafka client logs each failed connection attempt while the
broker is down, thousands a second when it retries without a pause. The log
keeps the first few of each kind per interval as examples, then reports
how many were left out.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Window:
    started: float
    logged: int = 0
    suppressed: int = 0


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
        self._burst = burst
        self._interval = interval_seconds
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        """Log a warning of ``kind`` unless its budget for this interval is spent."""
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or now - window.started >= self._interval:
            if window is not None and window.suppressed:
                self._report(kind, window)
            window = self._windows[kind] = _Window(now)
        if window.logged < self._burst:
            window.logged += 1
            self._logger.warning(message, *args)
        else:
            window.suppressed += 1

    def flush(self) -> None:
        """Log how many warnings were left out in intervals that have ended.

        Call it now and then, so the count of a burst that stopped is logged
        without waiting for the next warning of its kind.
        """
        now = self._clock()
        for kind, window in list(self._windows.items()):
            if now - window.started >= self._interval:
                if window.suppressed:
                    self._report(kind, window)
                del self._windows[kind]

    def _report(self, kind: str, window: _Window) -> None:
        self._logger.warning(
            "%d more %s warnings in %.0f s not logged",
            window.suppressed,
            kind,
            self._interval,
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
        self._burst = burst
        self._interval = interval_seconds
        self._clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.started >= self._interval:
            if window is not None and window.suppressed:
                # The note has no % sign, so the record's own arguments still apply.
                record.msg = (
                    f"{record.msg} ({window.suppressed} more records like this "
                    f"in {self._interval:.0f} s not logged)"
                )
            self._windows[key] = _Window(now, logged=1)
            return True
        if window.logged < self._burst:
            window.logged += 1
            return True
        window.suppressed += 1
        return False


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
