"""In-stream drop detection on final window records."""

from stream.ingest.channels import ChannelClass
from stream.publish.alerts import AlertDetector, AlertRules
from stream.windows.counts import WindowCounts

HOUR_MS = 3_600_000
RULES = AlertRules(window="1h", floor=0.2, min_interactions=50, drop_fraction=0.25,
                   baseline_windows=3)


def counts(self_service: int, assisted: int) -> WindowCounts:
    window = WindowCounts()
    window.add_slice({
        (int(ChannelClass.SELF_SERVICE), "faq"): self_service,
        (int(ChannelClass.ASSISTED), "phone"): assisted,
    })
    return window


def check(detector: AlertDetector, hour: int, self_service: int, assisted: int) -> list[dict]:
    return detector.check("t1", "1h", hour * HOUR_MS, counts(self_service, assisted), now_ms=0)


def test_floor_breach_starts_and_resolves() -> None:
    detector = AlertDetector(RULES)

    started = check(detector, 1, 10, 90)
    resolved = check(detector, 2, 50, 50)

    assert [(a["alert"], a["state"]) for a in started] == [("rate_below_floor", "started")]
    assert started[0]["rate"] == 0.1
    assert started[0]["threshold"] == 0.2
    assert [(a["alert"], a["state"]) for a in resolved] == [("rate_below_floor", "resolved")]


def test_floor_needs_minimum_volume() -> None:
    detector = AlertDetector(RULES)

    assert check(detector, 1, 1, 20) == []


def test_empty_window_never_alerts_or_resolves() -> None:
    detector = AlertDetector(RULES)
    check(detector, 1, 10, 90)

    assert check(detector, 2, 0, 0) == []


def test_drop_against_baseline() -> None:
    detector = AlertDetector(RULES)
    for hour in (1, 2, 3):
        assert check(detector, hour, 60, 40) == []

    dropped = check(detector, 4, 40, 60)

    assert [(a["alert"], a["state"]) for a in dropped] == [("rate_dropped", "started")]
    assert dropped[0]["baseline"] == 0.6
    assert abs(dropped[0]["threshold"] - 0.45) < 1e-9


def test_small_dip_does_not_alert() -> None:
    detector = AlertDetector(RULES)
    for hour in (1, 2, 3):
        check(detector, hour, 60, 40)

    assert check(detector, 4, 50, 50) == []


def test_other_window_sizes_ignored() -> None:
    detector = AlertDetector(RULES)

    assert detector.check("t1", "5m", HOUR_MS, counts(1, 99), now_ms=0) == []


def test_repeated_final_record_checked_once() -> None:
    detector = AlertDetector(RULES)
    check(detector, 1, 10, 90)

    assert check(detector, 1, 10, 90) == []
