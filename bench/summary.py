"""Markdown tables of a results file: medians over repetitions, with ratios to contender (a)."""

import statistics
from collections.abc import Iterable
from typing import Any

from bench.throughput import CONTENDERS

MB = 1_000_000


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "n/a"
    return f"{value / reference:.3g}x"


def _counts_verdict(runs: list[dict[str, Any]]) -> str:
    finished = [run for run in runs if run.get("finished")]
    if not finished:
        return "not compared (unfinished)"
    matched = sum(1 for run in finished if run.get("counts_match"))
    return "yes" if matched == len(finished) else f"no ({len(finished) - matched} runs differ)"


def throughput_table(results: dict[str, Any]) -> str:
    runs_by_kind: dict[str, list[dict[str, Any]]] = results.get("throughput", {})
    medians: dict[str, dict[str, Any]] = {}
    for kind, runs in runs_by_kind.items():
        finished = [run for run in runs if run.get("finished")]
        measured = finished or runs
        rated = sum(1 for run in measured if run.get("events_per_second") is not None)
        runs_cell = f"{len(finished)}/{len(runs)}"
        if rated < len(measured):
            # A load read before the first poll of the counters gives no rate.
            runs_cell += f" ({rated} with a rate)"
        medians[kind] = {
            "runs": runs_cell,
            "rate": _median(run.get("events_per_second") for run in measured),
            "per_cpu": _median(run.get("events_per_cpu_second") for run in measured),
            "rss": _median(run.get("peak_rss_bytes") for run in measured),
            "changelog": _median(run.get("changelog_records_per_event") for run in measured),
            "startup": _median(run.get("startup_seconds") for run in measured),
            "counts": _counts_verdict(runs),
            "processes": max((run.get("worker_processes") or 1 for run in runs), default=1),
        }
    reference = medians.get("a", {})
    lines = [
        "| contender | runs finished | events/s | vs (a) | events per CPU-second | vs (a) "
        "| peak RSS (MB) | vs (a) | changelog records per event | start-up (s) | counts match |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, row in medians.items():
        name = CONTENDERS[kind]
        if row["processes"] > 1:
            name += f", {row['processes']} processes"
        lines.append(
            f"| ({kind}) {name} | {row['runs']} | {_number(row['rate'])} "
            f"| {_ratio(row['rate'], reference.get('rate'))} | {_number(row['per_cpu'])} "
            f"| {_ratio(row['per_cpu'], reference.get('per_cpu'))} "
            f"| {_number(row['rss'] / MB if row['rss'] else None)} "
            f"| {_ratio(row['rss'], reference.get('rss'))} "
            f"| {_number(row['changelog'], 4)} | {_number(row['startup'], 1)} "
            f"| {row['counts']} |"
        )
    return "\n".join(lines)


def runs_table(results: dict[str, Any]) -> str:
    lines = [
        "| run | events/s | events per CPU-second | CPU cores used | peak RSS (MB) "
        "| changelog records | load average before | counts |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for runs in results.get("throughput", {}).values():
        for run in runs:
            counts = run.get("counts", {})
            verdict = "match" if run.get("counts_match") else (
                counts.get("skipped") or "DO NOT MATCH")
            load = run.get("load_average_before") or [None]
            lines.append(
                f"| {run['name']} | {_number(run.get('events_per_second'))} "
                f"| {_number(run.get('events_per_cpu_second'))} "
                f"| {_number(run.get('cpu_cores_used'), 2)} "
                f"| {_number((run.get('peak_rss_bytes') or 0) / MB)} "
                f"| {_number(run.get('changelog_records'))} | {_number(load[0], 1)} | {verdict} |"
            )
    return "\n".join(lines)


def live_section(live: dict[str, Any]) -> str:
    if "error" in live:
        return f"Live phase failed: {live['error']}"
    ack = live.get("delay_from_ack_seconds", {})
    send = live.get("delay_from_send_seconds", {})
    created = live.get("delay_send_to_output_created_seconds", {})
    return "\n".join([
        "| input rate (events/s) | events matched | without output | delay p50 (s) "
        "| delay p99 (s) | max (s) | p99 from send (s) | p99 to output create time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {_number(live.get('rate_achieved'))} | {live.get('events_matched')} "
        f"| {live.get('events_without_output')} | {_number(ack.get('p50'), 3)} "
        f"| {_number(ack.get('p99'), 3)} | {_number(ack.get('max'), 3)} "
        f"| {_number(send.get('p99'), 3)} | {_number(created.get('p99'), 3)} |",
    ])


def recovery_section(recoveries: list[dict[str, Any]]) -> str:
    lines = [
        "| history (events) | changelog records | to /readyz 200 (s) | to probe output (s) "
        "| restore time logged (s, max over partitions) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in recoveries:
        restored = entry.get("restored_partitions") or []
        lines.append(
            f"| {entry['events']:,} | {_number(sum((entry.get('changelog_records') or {}).values()))} "
            f"| {_number(entry.get('seconds_to_ready'), 1)} "
            f"| {_number(entry.get('seconds_to_probe_output'), 1)} "
            f"| {_number(max((p['seconds'] for p in restored), default=None), 2)} |"
        )
    return "\n".join(lines)


def memory_section(entries: list[dict[str, Any]]) -> str:
    variants = [entry for entry in entries if entry.get("series", "variant") == "variant"]
    series = [entry for entry in entries if entry.get("series") == "tenant series"]
    lines = [
        "| variant | events | peak RSS (MB) | RSS at first scrape (MB) | events/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in variants:
        lines.append(
            f"| {entry['variant']} | {entry['events']:,} "
            f"| {_number((entry.get('peak_rss_bytes') or 0) / MB)} "
            f"| {_number((entry.get('rss_bytes_at_first_scrape') or 0) / MB)} "
            f"| {_number(entry.get('events_per_second'))} |"
        )
    by_label = {(entry["windows"], entry["tenants"]): entry for entry in variants}
    many = by_label.get(("5m/1m,1h/5m,24h/1h", 1_000))
    few = by_label.get(("5m/1m,1h/5m,24h/1h", 100))
    if many and few and many.get("peak_rss_bytes") and few.get("peak_rss_bytes"):
        per_tenant = (many["peak_rss_bytes"] - few["peak_rss_bytes"]) / 900
        lines.append("")
        lines.append(f"Peak RSS difference per tenant (1000 vs 100 tenants, same events): "
                     f"{per_tenant / 1000:,.1f} kB.")
    if series:
        lines += ["", tenant_series_table(series)]
    return "\n".join(lines)


def tenant_series_table(series: list[dict[str, Any]]) -> str:
    """Tabulate the runs with fixed events per tenant, with the slope between neighbours."""
    lines = [
        "| tenants | events | peak RSS (MB) | kB per added tenant since the row above |",
        "| --- | --- | --- | --- |",
    ]
    previous: dict[str, Any] | None = None
    for entry in sorted(series, key=lambda item: item["tenants"]):
        step = ""
        if previous is not None and entry.get("peak_rss_bytes") and previous.get("peak_rss_bytes"):
            added = entry["tenants"] - previous["tenants"]
            step = _number((entry["peak_rss_bytes"] - previous["peak_rss_bytes"]) / added / 1000, 1)
        lines.append(f"| {entry['tenants']:,} | {entry['events']:,} "
                     f"| {_number((entry.get('peak_rss_bytes') or 0) / MB)} | {step} |")
        previous = entry
    points = [(entry["tenants"], entry["peak_rss_bytes"]) for entry in series
              if entry.get("peak_rss_bytes")]
    fit = linear_fit(points)
    if fit is not None:
        slope, intercept, r_squared = fit
        lines += ["", f"Least-squares line: {slope / 1000:,.1f} kB per tenant plus "
                      f"{intercept / MB:,.0f} MB, R² = {r_squared:.4f}."]
    return "\n".join(lines)


def linear_fit(points: list[tuple[float, float]]) -> tuple[float, float, float] | None:
    """Return slope, intercept and R squared of the least-squares line through the points."""
    if len(points) < 3:
        return None
    count = len(points)
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    syy = sum((y - mean_y) ** 2 for _, y in points)
    if not sxx or not syy:
        return None
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x, sxy * sxy / (sxx * syy)


def markdown(results: dict[str, Any]) -> str:
    parts = [f"Run `{results.get('run_id')}`."]
    if "load" in results:
        load = results["load"]
        parts.append(
            f"Load: {load['events']:,} events, {load['tenants']:,} tenants, "
            f"{load['load_seconds']:.1f} s ({_number(load.get('events_per_second'))} events/s)."
        )
    if results.get("throughput"):
        parts += ["### Throughput (medians)", throughput_table(results), "### Runs",
                  runs_table(results)]
    if "live" in results:
        parts += ["### Live delay of the worker", live_section(results["live"])]
    if results.get("recovery"):
        parts += ["### Restart with history", recovery_section(results["recovery"])]
    if results.get("memory"):
        parts += ["### Memory of the worker", memory_section(results["memory"])]
    return "\n\n".join(parts)

