"""The Faust application: stages, tables, timers and web pages of the worker.

Flow::

    input topics ──ingest──► <app>-by-tenant (tenant hash) ────count────► output topic
         │                          ▲ ticks                        │
         └─► dead-letter topic      │ (every worker, every         ├─► dead-letter topic (late)
                                    │  partition, on a timer)      └─► <app>-all-tenants ──► output (*)

The counting state of each partition is kept in memory and journaled to the
``journal`` table, one record per batch; see :mod:`stream.windows.journal`.
"""

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, cast

import faust
import msgspec
from aiokafka.errors import KafkaError
from faust.types import TP, TopicT
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream.ingest.channels import load_channel_table
from stream.ingest.deadletter import dead_letter
from stream.ingest.events import (
    Interaction,
    Rejection,
    Source,
    parse_event,
    record_extra_bytes,
)
from stream.logutil import RateLimitedLog, RepeatFilter, limit_repeats
from stream.metrics.registry import WorkerMetrics
from stream.metrics.windows import TenantLabels, WindowCollector, WindowSample
from stream.publish.alerts import encode_alert
from stream.publish.records import encode_record, record_key, window_record
from stream.settings import Settings
from stream.timeutil import ms_to_rfc3339, wall_clock_ms
from stream.worker.all_tenants import AllTenantsState
from stream.worker.client_backoff import pause_failed_metadata_updates
from stream.worker.consumer import SeekingConsumer, SeekingTransport, use_transport
from stream.worker.counting import CountingStage, PartitionOutput
from stream.worker.input_buffer import InputBuffer, Record, RecordBatch, Run, next_offsets
from stream.worker.messages import (
    Batch,
    Tick,
    counting_partition,
    decode_internal,
    decode_partial,
    encode,
)
from stream.worker.offsets import OffsetReader
from stream.worker.output import OutgoingRecord, RecordWriter
from stream.worker.read_committed import CommittedTableManager, ReadCommittedTransport
from stream.worker.transactions import BatchOutput, BatchTransactions, TableChange

logger = logging.getLogger(__name__)

# Kafka's default limit on a record is 1 MiB. Internal records and journal
# records stay well below it. A count batch takes few internal records, so its
# memory stays bounded while a backlog is read.
MAX_BATCH_BYTES = 256 * 1024
MAX_JOURNAL_DELTA_BYTES = 512 * 1024
COUNT_BATCH_RECORDS = 64
# Exit status of a worker stopped by an unexpected error in a stage.
EXIT_AGENT_FAILED = 70
# While the broker is down the Kafka client logs every failed connection and
# metadata request. This filter keeps ten records of each a minute.
CLIENT_LOG_FILTER = RepeatFilter(burst=10, interval_seconds=60.0)


def _retrieve_exception(task: "asyncio.Future[Any]") -> None:
    """Mark a background write's error as seen; the caller has logged the wait."""
    if not task.cancelled():
        task.exception()


@contextlib.contextmanager
def stop_on_error(agent: str) -> Iterator[None]:
    """Stop the process when an agent's batch fails, instead of skipping the batch.

    Faust would restart the agent and acknowledge the failed batch, losing it.
    Exiting before the next commit makes the restarted worker read the batch
    again; de-duplication keeps what was already counted from counting twice.
    """
    try:
        yield
    except Exception:
        logger.critical("agent %s failed; stopping the worker so no batch is skipped",
                        agent, exc_info=True)
        logging.shutdown()
        os._exit(EXIT_AGENT_FAILED)


def split_by_size(
    interactions: list[Interaction], max_bytes: int, cost: Callable[[Interaction], int]
) -> Iterator[list[Interaction]]:
    """Split interactions into lists whose ``cost`` adds up to at most ``max_bytes``."""
    chunk: list[Interaction] = []
    size = 0
    for interaction in interactions:
        interaction_cost = cost(interaction)
        if chunk and size + interaction_cost > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(interaction)
        size += interaction_cost
    if chunk:
        yield chunk


def internal_record_cost(interaction: Interaction) -> int:
    """Estimate an interaction's bytes in a Batch: the parsed fields roughly double the raw value.

    The record's key and headers travel with it, for a late event's dead letter.
    """
    return (
        2 * len(interaction.raw_value)
        + 200
        + record_extra_bytes(interaction.raw_key, interaction.raw_headers)
    )


def journal_cost(interaction: Interaction) -> int:
    """Estimate an interaction's bytes in a journal delta: its id, plus its slice's counts at most."""
    return len(interaction.event_id) + len(interaction.tenant) + len(interaction.channel) + 48


class FaustApp(faust.App):
    """Faust's app, subscribed to the worker's buffered topics from its start.

    No agent iterates the topics whose records go to the worker's buffers
    (see :mod:`stream.worker.input_buffer`), so the app registers them with
    its conductor itself, where agents register their topics: before the
    first subscription.
    """

    buffered_topics: tuple[TopicT, ...] = ()

    async def on_start(self) -> None:
        """Register the buffered topics, then start as Faust does."""
        await super().on_start()
        for topic in self.buffered_topics:
            # Iterating a topic registers it, as an agent's stream does.
            aiter(topic)


class AdoptionApp:
    """The worker: a Faust app with its stages, and the state they share."""

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        limit_repeats("aiokafka", CLIENT_LOG_FILTER)
        pause_failed_metadata_updates()
        self.channels = load_channel_table(settings.channels_file)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry)
        self.record_log = RateLimitedLog(logger)
        self.labels = TenantLabels(
            settings.max_tenant_series, always=frozenset({settings.all_tenants})
        )
        self.counting = CountingStage(settings)
        self.all_tenants = AllTenantsState(settings, log=self.record_log)
        self.owns_all_tenants = False
        self._all_tenants_restored = False
        self.sender_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

        self._input_partitions: set[TP] = set()
        self._input_assigned_at = time.monotonic()
        self._input_active_since = self._input_assigned_at
        self._input_newest_ms: dict[TP, int] = {}
        self._input_last_record: dict[TP, float] = {}
        self._input_next_offset: dict[TP, int] = {}
        self._input_backlog: dict[TP, int] = {}
        # Partitions of the input topics when this worker was last assigned.
        self._input_total: int | None = None
        # The consumer group generation of this worker's last assignment.
        self._generation: int | None = None
        self._ingesting = False
        self._stage_tasks: dict[str, asyncio.Task[Any]] = {}
        self._leaving = False
        self._counting_partitions: set[int] = set()
        self._sent_watermark = Tick(self.sender_id, None, quiet=False)
        self._started = time.monotonic()
        self._last_count_batch = 0.0
        self._assigned = False
        # When the broker last acknowledged this worker's watermark ticks.
        self._ticks_acked_at = self._started

        self.writer = RecordWriter(settings.bootstrap_servers, client_id=f"{settings.app_id}-writer")
        self.offsets = OffsetReader(
            settings.bootstrap_servers,
            client_id=f"{settings.app_id}-offsets",
            isolation_level=(
                "read_committed"
                if settings.processing_guarantee == "exactly_once"
                else "read_uncommitted"
            ),
        )
        self.by_tenant_topic_name = f"{settings.app_id}-by-tenant"
        self.app = self._create_faust_app()
        self._declare_topics()
        self._register_agents()
        self._register_web()
        self.registry.register(
            WindowCollector(self._window_samples, self.counting.tenant_samples, self.labels)
        )

    # Set-up

    def _create_faust_app(self) -> FaustApp:
        settings = self.settings
        brokers = [f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")]
        exactly_once = settings.processing_guarantee == "exactly_once"
        # Exactly-once mode runs Faust at least once and adds the worker's own
        # transactions (stream.worker.transactions) and committed reads.
        extra: dict[str, Any] = {"TableManager": CommittedTableManager} if exactly_once else {}
        app = FaustApp(
            settings.app_id,
            broker=brokers,
            store="memory://",
            autodiscover=False,
            topic_partitions=settings.internal_partitions,
            topic_replication_factor=settings.replication_factor,
            processing_guarantee="at_least_once",
            broker_commit_interval=settings.commit_interval_ms / 1000,
            # A worker that dies leaves the group after this, and its partitions move.
            broker_session_timeout=settings.session_timeout_ms / 1000,
            broker_heartbeat_interval=settings.session_timeout_ms / 3000,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            web_enabled=True,
            web_bind=settings.web_host,
            web_host=settings.web_host,
            web_port=settings.web_port,
            datadir=str(settings.data_dir),
            key_serializer="raw",
            value_serializer="raw",
            stream_buffer_maxsize=max(4_096, settings.batch_max_events * 2),
            broker_max_poll_records=max(500, settings.batch_max_events),
            consumer_max_fetch_size=settings.max_partition_fetch_bytes,
            table_standby_replicas=0,
            **extra,
        )
        # Each has room for two batches of its stage, as Faust's buffer of each stream.
        self.input_buffer = InputBuffer(settings.input_topics, 2 * settings.batch_max_events)
        self.count_buffer = InputBuffer([self.by_tenant_topic_name], 2 * COUNT_BATCH_RECORDS)
        self.all_tenants_buffer = InputBuffer(
            [self.counting.all_tenants_topic], 2 * COUNT_BATCH_RECORDS
        )
        use_transport(
            app,
            ReadCommittedTransport if exactly_once else SeekingTransport,
            [self.input_buffer, self.count_buffer, self.all_tenants_buffer],
        )
        return app

    def _declare_topics(self) -> None:
        settings = self.settings
        app = self.app
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.input_topic = app.topic(*settings.input_topics, **raw)
        self.by_tenant_topic = app.topic(
            self.by_tenant_topic_name,
            partitions=settings.internal_partitions,
            internal=True,
            **raw,
        )
        self.all_tenants_topic = app.topic(
            self.counting.all_tenants_topic, partitions=1, internal=True, **raw
        )
        app.buffered_topics = (self.input_topic, self.by_tenant_topic, self.all_tenants_topic)
        self.journal = app.Table(
            "journal",
            partitions=settings.internal_partitions,
            key_type=bytes,
            value_type=bytes,
        )
        self.all_tenants_table = app.Table(
            "all-tenants", partitions=1, key_type=bytes, value_type=bytes
        )
        self.transactions = BatchTransactions(settings, app, self.writer)

    def _register_agents(self) -> None:
        app = self.app
        settings = self.settings
        within_seconds = settings.batch_within_ms / 1000

        # Each stage takes its topics' records from its buffer, past Faust's
        # streams, and acknowledges a batch only once its output is written.
        @app.task  # type: ignore[untyped-decorator]
        async def ingest() -> None:
            await self._run_stage(
                "ingest",
                self.input_buffer,
                settings.batch_max_events,
                within_seconds,
                self._ingest_batch,
            )

        # Each internal record carries an ingest batch already, so the later
        # stages take what is buffered: waiting for more would only delay output.
        @app.task  # type: ignore[untyped-decorator]
        async def count() -> None:
            await self._run_stage(
                "count", self.count_buffer, COUNT_BATCH_RECORDS, 0.0, self._count_batch
            )

        @app.task  # type: ignore[untyped-decorator]
        async def add_all_tenants() -> None:
            await self._run_stage(
                "all-tenants",
                self.all_tenants_buffer,
                COUNT_BATCH_RECORDS,
                0.0,
                self._add_all_tenants_batch,
            )

        @app.task  # type: ignore[untyped-decorator]
        async def start_transactions() -> None:
            with stop_on_error("start-transactions"):
                await self.transactions.start(["ingest", "count", "all-tenants"])

        @app.timer(settings.tick_interval_ms / 1000)  # type: ignore[untyped-decorator]
        async def send_ticks() -> None:
            await self._send_ticks()

        @app.timer(5.0)  # type: ignore[untyped-decorator]
        async def update_gauges() -> None:
            self._update_gauges()

        @app.on_before_shutdown.connect
        async def close_producers(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            await self._send_farewell()
            await self.transactions.stop()
            await self.writer.stop()
            await self.offsets.stop()

        @app.on_partitions_assigned.connect
        def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            assigned: set[TP] = args[0] if args else kwargs.get("assigned", set())
            self._on_assigned(assigned)

        @app.on_partitions_revoked.connect
        def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.metrics.ready.set(0)
            self._assigned = False

    def _register_web(self) -> None:
        app = self.app

        @app.page("/metrics")
        async def metrics(web: Any, request: Any) -> Any:
            # As in prometheus_client's own handlers, ``name[]`` parameters
            # restrict the response to those series. A poller that wants a
            # few counters then skips the sums of the per-tenant window gauges.
            names = [name for name in request.query.getall("name[]", []) if name]
            # Readiness changes between runs of the gauge timer, so a scrape reads it now.
            self.metrics.ready.set(1 if self.is_ready() else 0)
            registry = self.registry.restricted_registry(names) if names else self.registry
            # aiohttp rejects a charset in content_type, and the exposition
            # format's content type carries one, so it goes in as a header.
            return web.bytes(
                generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            stopped = self.stopped_stages()
            if stopped:
                return web.json({"status": "stage stopped", "stages": stopped}, status=503)
            return web.json({"status": "ok"})

        @app.page("/readyz")
        async def readyz(web: Any, request: Any) -> Any:
            ready = self.is_ready()
            return web.json({"ready": ready}, status=200 if ready else 503)

    # Stages

    async def _run_stage(
        self,
        name: str,
        buffer: InputBuffer,
        max_records: int,
        within_seconds: float,
        process: Callable[[RecordBatch], Awaitable[None]],
    ) -> None:
        """Take batches from ``buffer`` and process them, acknowledging each once it is done.

        An error in ``process`` stops the process (:func:`stop_on_error`).

        Faust's ``take_events`` acknowledges a batch in a ``finally`` block,
        also when the worker stops in the middle of writing it, and Faust then
        commits those offsets. A batch here that is cut short stays
        unacknowledged, so the next worker reads it again.
        """
        consumer = cast(SeekingConsumer, self.app.consumer)
        task = asyncio.current_task()
        if task is not None:
            self._stage_tasks[name] = task
        with stop_on_error(name):
            while True:
                batch = await buffer.take(max_records, within_seconds)
                consumer.track_batch(batch)
                await process(batch)
                consumer.ack_batch(batch)

    async def _ingest_batch(self, batch: RecordBatch) -> None:
        runs = self._unprocessed(batch.runs)
        if not runs:
            return
        async with self.transactions.batch("ingest", next_offsets(runs)) as output:
            watermark = await self._ingest(runs, output)
        # Ticks may carry the new watermark only once the records it
        # follows are on the broker (committed, in exactly-once mode).
        self._sent_watermark = watermark
        self._ingesting = False

    async def _count_batch(self, batch: RecordBatch) -> None:
        async with self.transactions.batch("count", next_offsets(batch.runs)) as output:
            self._count(batch.runs, output)

    async def _add_all_tenants_batch(self, batch: RecordBatch) -> None:
        async with self.transactions.batch("all-tenants", next_offsets(batch.runs)) as output:
            partials = [record for _, run in batch.runs for record in run]
            self._add_all_tenants(partials, output)

    # Ingest

    def _unprocessed(self, runs: Sequence[Run]) -> list[Run]:
        """Return the records at input offsets this worker has not processed since assignment.

        After a rebalance Faust seeks the input partitions back to their
        committed offsets (see :mod:`stream.worker.consumer`), so records it
        delivered before the seek come again. Skipping them by offset keeps
        their dead letters and, in exactly-once mode, the committed offsets
        from repeating or going back.
        """
        next_offsets = dict(self._input_next_offset)
        unprocessed: list[Run] = []
        for tp, records in runs:
            next_offset = next_offsets.get(tp, 0)
            if records[0].offset < next_offset:
                unread = [record for record in records if record.offset >= next_offset]
                self.metrics.reread.labels(tp.topic).inc(len(records) - len(unread))
                if not unread:
                    continue
                records = unread
            next_offsets[tp] = records[-1].offset + 1
            unprocessed.append(Run(tp, records))
        return unprocessed

    async def _ingest(self, runs: Sequence[Run], output: BatchOutput) -> Tick:
        """Route a batch's events to the counting partitions; return the watermark after them."""
        settings = self.settings
        now_ms = wall_clock_ms()
        by_partition: dict[int, list[Interaction]] = {}
        outgoing = output.records
        partitions = settings.internal_partitions
        consumed: dict[str, int] = {}
        newest_by_partition = self._input_newest_ms
        parse = functools.partial(
            parse_event,
            channels=self.channels,
            count_unknown_channels=settings.unknown_channel == "count",
            default_tenant=settings.default_tenant,
            reserved_tenants=frozenset({settings.all_tenants}),
            now_ms=now_ms,
            max_future_ms=settings.max_future_ms,
        )
        received = time.monotonic()
        self._ingesting = True
        if self._input_partitions and all(
            self._is_idle_input(tp, received) for tp in self._input_partitions
        ):
            # Input resumes after a quiet spell. Its partitions' records reach the
            # broker in separate batches, so give each the idle timeout to show up
            # before a partition without records is left out of the watermark.
            self._input_active_since = received

        for tp, records in runs:
            topic = tp.topic
            consumed[topic] = consumed.get(topic, 0) + len(records)
            self._input_last_record[tp] = received
            self._input_next_offset[tp] = records[-1].offset + 1
            newest_ms = newest_by_partition.get(tp, -(2**62))
            for record in records:
                result = parse(record)
                if isinstance(result, Rejection):
                    outgoing.append(self._reject(record, result))
                    continue
                by_partition.setdefault(counting_partition(result.tenant, partitions), []).append(
                    result
                )
                # An event from a fast clock must not move the watermark past
                # the wall clock, or every on-time event after it would be late.
                newest_ms = max(newest_ms, min(result.occurred_at_ms, now_ms))
            if newest_ms > -(2**62):
                newest_by_partition[tp] = newest_ms

        # Events of this batch may be older than the watermark computed after it,
        # so they travel with the previous one; the new one follows them.
        by_tenant_topic = self.by_tenant_topic.get_topic_name()
        for partition, interactions in by_partition.items():
            for chunk in split_by_size(interactions, MAX_BATCH_BYTES, internal_record_cost):
                value = encode(Batch(chunk, self._sent_watermark))
                outgoing.append(OutgoingRecord(by_tenant_topic, None, value, partition=partition))
        for topic, number in consumed.items():
            self.metrics.consumed.labels(topic).inc(number)
        return await self._current_watermark()

    def input_watermark(self) -> Tick:
        """Return this worker's input watermark over its assigned input partitions.

        An input partition is left out once it has no unread records and has
        delivered none for the idle timeout, so one quiet partition does not
        hold every window open, while one that is merely read later than the
        others does. The tick names the assignment's generation and size, so
        counting partitions can wait for the new owners after a rebalance.
        """
        now = time.monotonic()
        if self._input_total is None:
            self._input_total = self._count_input_partitions()
        watermarks: list[int] = []
        waiting = False
        for tp in self._input_partitions:
            if self._is_idle_input(tp, now):
                continue
            newest = self._input_newest_ms.get(tp)
            if newest is None:
                waiting = True
            else:
                watermarks.append(newest)
        if waiting:
            return self._tick(None, quiet=False)
        if not watermarks:
            return self._tick(None, quiet=True)
        return self._tick(min(watermarks), quiet=False)

    def _tick(self, watermark_ms: int | None, *, quiet: bool, inputs: int | None = None) -> Tick:
        """Return a tick of this worker's watermark and current assignment."""
        return Tick(
            self.sender_id,
            watermark_ms,
            quiet,
            sent_at_ms=wall_clock_ms(),
            generation=self.app.consumer_generation_id,
            inputs=len(self._input_partitions) if inputs is None else inputs,
            input_total=self._input_total,
        )

    def _reject(self, source: Source, rejection: Rejection) -> OutgoingRecord:
        """Log and count a rejected record, and return its dead-letter record."""
        self.record_log.warning(
            f"{rejection.reason.value} rejection",
            "rejected record topic=%s partition=%d offset=%d reason=%s: %s",
            source.topic,
            source.partition,
            source.offset,
            rejection.reason.value,
            rejection.detail,
        )
        self.metrics.rejected.labels(rejection.reason.value).inc()
        key, value, headers = dead_letter(
            key=source.key,
            value=source.value,
            original=source.headers,
            reason=rejection.reason,
            detail=rejection.detail,
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
        )
        return OutgoingRecord(self.settings.dead_letter_topic, key, value, headers)

    # Counting

    def _count(self, runs: Sequence[Run], batch: BatchOutput) -> None:
        grouped: dict[int, tuple[list[Interaction], list[Tick]]] = {}
        for tp, records in runs:
            interactions, ticks = grouped.setdefault(tp.partition, ([], []))
            for record in records:
                message = decode_internal(record.value or b"")
                if isinstance(message, Batch):
                    interactions.extend(message.events)
                    ticks.append(message.tick)
                else:
                    ticks.append(message)

        outputs: list[tuple[int, PartitionOutput]] = []
        for partition, (interactions, ticks) in grouped.items():
            if partition not in self.counting.states:
                self.counting.restore(partition, self._journal_records())
            # Each call writes one journal record, which must stay below Kafka's
            # record size limit. The watermarks apply after the last chunk, so
            # every event is judged against the clock as it was before them.
            chunks = list(split_by_size(interactions, MAX_JOURNAL_DELTA_BYTES, journal_cost))
            for number, chunk in enumerate(chunks or [[]]):
                last = number == max(len(chunks) - 1, 0)
                output = self.counting.process(partition, chunk, ticks if last else [])
                outputs.append((partition, output))
                self._record_counting_metrics(output)

        for partition, output in outputs:
            batch.records.extend(output.records)
            batch.changes.extend(
                TableChange(self.journal, partition, key, value) for key, value in output.journal
            )
            self.metrics.changelog_records.inc(len(output.journal))
        if any(interactions for interactions, _ in grouped.values()):
            self._last_count_batch = time.monotonic()

    def _record_counting_metrics(self, output: PartitionOutput) -> None:
        if output.counted:
            self.metrics.counted.inc(output.counted)
        for tenant, number in output.duplicates.items():
            self.metrics.duplicates.labels(self.labels.label(tenant)).inc(number)
        for late in output.late:
            self.record_log.warning(
                "late event",
                "late event topic=%s partition=%d offset=%d tenant=%s occurred_at=%s "
                "clock=%s: sent to %s",
                late.event.source_topic,
                late.event.source_partition,
                late.event.source_offset,
                late.event.tenant,
                ms_to_rfc3339(late.event.occurred_at_ms),
                ms_to_rfc3339(late.clock_ms),
                self.settings.dead_letter_topic,
            )
            self.metrics.late.labels(self.labels.label(late.event.tenant)).inc()
            self.metrics.rejected.labels("late").inc()
        if output.finals:
            self.metrics.published.labels("final").inc(output.finals)
        if output.provisionals:
            self.metrics.published.labels("provisional").inc(output.provisionals)
        if output.alerts:
            self.metrics.published.labels("alert").inc(output.alerts)

    def _journal_records(self) -> list[tuple[bytes, bytes]]:
        return [(key, value) for key, value in self.journal.data.items() if value is not None]

    async def _refresh_input_backlog(self, partitions: list[TP] | None = None) -> None:
        """Read the end offsets of input partitions and how far behind them ingest is."""
        if partitions is None:
            partitions = list(self._input_partitions)
        if not partitions:
            return
        ends = await self.offsets.end_offsets(partitions)
        starts = await self._input_start_offsets(partitions)
        for tp in partitions:
            end = ends.get(tp)
            next_offset = self._input_next_offset.get(tp, starts.get(tp))
            if end is None or next_offset is None:
                self._input_backlog.pop(tp, None)
                continue
            backlog = max(0, end - next_offset)
            self._input_backlog[tp] = backlog
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(backlog)

    async def _input_start_offsets(self, partitions: list[TP]) -> dict[TP, int]:
        """Return where ingest started reading partitions it has read nothing from yet.

        That is the group's committed offset, or the earliest offset when the
        group has none. The fetch position would not do: it runs ahead of
        records that are fetched but not yet processed.
        """
        unread = [tp for tp in partitions if tp not in self._input_next_offset]
        if not unread:
            return {}
        committed = getattr(self.app.consumer, "_committed_offset", {})
        starts = {tp: committed[tp] for tp in unread if committed.get(tp) is not None}
        without_commit = [tp for tp in unread if tp not in starts]
        if without_commit:
            starts.update(await self.offsets.first_offsets(without_commit))
        return starts

    async def _current_watermark(self) -> Tick:
        """Return the input watermark, first re-reading the end offsets of idle partitions.

        A partition counted as idle may have received records since the last
        look-up; they could be older than the other partitions' events.
        """
        idle = [tp for tp in self._input_partitions if self._is_idle_input(tp, time.monotonic())]
        if idle:
            await self._refresh_input_backlog(idle)
        return self.input_watermark()

    def _is_idle_input(self, tp: TP, now: float) -> bool:
        last_record = max(
            self._input_last_record.get(tp, self._input_assigned_at), self._input_active_since
        )
        return (
            self._input_backlog.get(tp) == 0
            and now - last_record >= self.settings.idle_timeout_ms / 1000
        )

    async def _send_ticks(self) -> None:
        """Send this worker's input watermark to every counting partition."""
        if self._leaving:
            return
        limit = self.broker_silence_limit()
        try:
            await asyncio.wait_for(self._refresh_input_backlog(), limit)
        except asyncio.TimeoutError:
            self.record_log.warning(
                "end offsets",
                "failed to read input end offsets from %s: no response within %g s",
                self.settings.bootstrap_servers,
                limit,
            )
        except Exception as exc:  # noqa: BLE001 - a failed look-up only delays idleness
            self.record_log.warning(
                "end offsets",
                "failed to read input end offsets from %s: %r",
                self.settings.bootstrap_servers,
                exc,
            )
        if not self._ingesting:
            # Between batches every event read so far has been sent, so the
            # watermark may include them; mid-batch the last one sent is kept.
            self._sent_watermark = self.input_watermark()
        tick = self._sent_watermark
        # The Kafka client retries a write until the broker responds, so the wait
        # is bounded here and the write goes on in the background.
        write = asyncio.ensure_future(self._write_tick(tick))
        write.add_done_callback(_retrieve_exception)
        try:
            await asyncio.wait_for(asyncio.shield(write), limit)
        except asyncio.TimeoutError:
            # Meanwhile /readyz turns 503 (see is_ready). The next tick tries again.
            self.record_log.warning(
                "tick write",
                "failed to write watermark ticks to %s: no acknowledgement within %g s. "
                "Check that the broker runs and is reachable",
                self.settings.bootstrap_servers,
                limit,
            )
            return
        except KafkaError as exc:
            self.record_log.warning(
                "tick write",
                "failed to write watermark ticks to %s: %r",
                self.settings.bootstrap_servers,
                exc,
            )
            return
        self._ticks_acked_at = time.monotonic()

    async def _write_tick(self, tick: Tick) -> None:
        """Write ``tick``, stamped with the wall clock, to every counting partition."""
        value = encode(msgspec.structs.replace(tick, sent_at_ms=wall_clock_ms()))
        topic = self.by_tenant_topic.get_topic_name()
        await self.writer.write(
            OutgoingRecord(topic, None, value, partition=partition)
            for partition in range(self.settings.internal_partitions)
        )

    async def _send_farewell(self) -> None:
        """Send every counting partition a last, quiet tick, as this worker stops.

        A partition ignores a quiet worker's watermark while others read
        input. Without this tick, the stopped worker's last watermark would
        hold the partition's clock back until it went stale, several idle
        timeouts later.
        """
        self._leaving = True
        try:
            # Owning no input now, it leaves the clocks waiting for the next
            # generation, whose workers read its partitions again.
            await self._write_tick(self._tick(None, quiet=True, inputs=0))
        except Exception as exc:  # noqa: BLE001 - shutting down; the ticks go stale instead
            logger.warning("failed to send the last tick: %r", exc)

    # All tenants

    def _add_all_tenants(self, records: Sequence[Record], batch: BatchOutput) -> None:
        if not self._all_tenants_restored:
            for key, value in self.all_tenants_table.data.items():
                if value is not None:
                    self.all_tenants.restore(key, value)
            self._all_tenants_restored = True
            self.owns_all_tenants = True

        # The worker writes every record of its internal topics with a value.
        published, writes = self.all_tenants.apply_batch(
            [decode_partial(record.value or b"") for record in records]
        )
        computed_at_ms = wall_clock_ms()
        tenant = self.settings.all_tenants
        outgoing = batch.records
        for window in published:
            record = window_record(
                tenant,
                window.spec,
                window.end_ms,
                window.counts,
                final=window.final,
                computed_at_ms=computed_at_ms,
            )
            outgoing.append(
                OutgoingRecord(
                    self.settings.output_topic,
                    record_key(tenant, window.spec),
                    encode_record(record),
                )
            )
            self.metrics.published.labels("final" if window.final else "provisional").inc()
            if not window.final:
                continue
            for alert in self.counting.alerts.check(
                tenant, window.spec.name, window.end_ms, window.counts, now_ms=computed_at_ms
            ):
                outgoing.append(
                    OutgoingRecord(self.settings.alerts_topic, tenant.encode(), encode_alert(alert))
                )
                self.metrics.published.labels("alert").inc()
        batch.changes.extend(
            TableChange(self.all_tenants_table, 0, key, value) for key, value in writes.items()
        )

    # Rebalancing, readiness and gauges

    def stopped_stages(self) -> list[str]:
        """Return the stages whose task has ended while the worker runs.

        A stage that fails stops the process, but one cancelled on its own
        ends quietly and leaves its records unread: ``/healthz`` reports it.
        """
        if self.app.should_stop:
            return []
        return sorted(name for name, task in self._stage_tasks.items() if task.done())

    def _on_assigned(self, assigned: set[TP]) -> None:
        by_tenant = self.by_tenant_topic.get_topic_name()
        counting = {tp.partition for tp in assigned if tp.topic == by_tenant}
        self._counting_partitions = counting
        generation = self.app.consumer_generation_id
        if self._generation is not None and generation != self._generation + 1:
            self._forget_state(self._generation, generation)
        self._generation = generation
        inputs = {tp for tp in assigned if tp.topic in self.settings.input_topics}
        self._input_total = self._count_input_partitions()
        if inputs != self._input_partitions:
            self._input_partitions = inputs
            self._input_assigned_at = time.monotonic()
            self._input_active_since = self._input_assigned_at
            for state in (
                self._input_newest_ms,
                self._input_last_record,
                self._input_next_offset,
                self._input_backlog,
            ):
                for tp in [tp for tp in state if tp not in inputs]:
                    del state[tp]
        self.counting.keep_only(counting)
        owns = any(tp.topic == self.all_tenants_topic.get_topic_name() for tp in assigned)
        if not owns and self.owns_all_tenants:
            self.all_tenants = AllTenantsState(self.settings, log=self.record_log)
            self._all_tenants_restored = False
        self.owns_all_tenants = owns
        self._assigned = True
        logger.info(
            "partitions assigned: counting %s, all-tenants %s", sorted(counting), owns
        )

    def _forget_state(self, previous: int, generation: int) -> None:
        """Drop the state of every partition, to be restored from the changelogs.

        A worker that missed a generation, as one that stalled past its
        session timeout, may have had its partitions taken by another worker
        meanwhile, which counted and journaled more. Its state in memory is
        then stale, even for partitions it gets back. Faust's recovery reads
        the changelogs again at every assignment, and each partition is
        restored from them at its next batch.
        """
        dropped = self.counting.keep_only(set())
        if self.owns_all_tenants:
            self.all_tenants = AllTenantsState(self.settings, log=self.record_log)
            self._all_tenants_restored = False
        logger.warning(
            "consumer group generation went from %d to %d: this worker missed a rebalance, "
            "so the state of counting partitions %s and the all-tenants figure is restored "
            "from the changelogs",
            previous,
            generation,
            sorted(dropped),
        )

    def _count_input_partitions(self) -> int | None:
        """Return the number of partitions of the input topics in the consumer's metadata.

        On every member of the group, the consumer's client contains the
        metadata of every topic it subscribes to. Faust's ``topic_partitions`` reads
        the assignment's snapshot instead, which only the group leader has.
        """
        try:
            client = cast(Any, self.app.consumer)._thread._ensure_consumer()
        except Exception as exc:  # noqa: BLE001 - without it, ticks carry no coverage
            logger.debug("input partition count unknown: %r", exc)
            return None
        total = 0
        for topic in self.settings.input_topics:
            partitions = client.partitions_for_topic(topic)
            if not partitions:
                return None
            total += len(partitions)
        return total

    def is_ready(self) -> bool:
        """Tell whether the worker has its partitions, has restored their state, and is consuming.

        Counting state is restored when a partition's first batch arrives, and
        watermark ticks reach every partition each tick interval, so a fresh
        assignment is restored within about one interval plus restore time.

        Ticks are also the worker's probe of the broker: when none has been
        acknowledged for :meth:`broker_silence_limit` seconds, the worker
        cannot write its output either, and is not ready.
        """
        app = self.app
        if not self._assigned or app.rebalancing:
            return False
        if time.monotonic() - self._ticks_acked_at > self.broker_silence_limit():
            return False
        if any(partition not in self.counting.states for partition in self._counting_partitions):
            return False
        return not any(
            getattr(agent, "_crash_reason", None) is not None for agent in app.agents.values()
        )

    def broker_silence_limit(self) -> float:
        """Return the seconds without an acknowledged tick after which the worker is not ready.

        That is the session timeout, after which the group would also move a
        silent worker's partitions, and at least three tick intervals.
        """
        settings = self.settings
        return max(settings.session_timeout_ms / 1000, 3 * settings.tick_interval_ms / 1000)

    def _update_gauges(self) -> None:
        self.record_log.flush()
        self.metrics.ready.set(1 if self.is_ready() else 0)
        now_ms = wall_clock_ms()
        for partition, clock_ms in self.counting.clocks().items():
            if clock_ms is not None:
                self.metrics.event_time_lag.labels(str(partition)).set(
                    max(0.0, (now_ms - clock_ms) / 1000)
                )
        self.metrics.remembered_ids.set(
            sum(state.remembered_ids for state in self.counting.states.values())
        )

    def _window_samples(self) -> list[WindowSample]:
        samples = list(self.counting.window_samples())
        if self.owns_all_tenants:
            for spec, end_ms, counts in self.all_tenants.newest_windows():
                samples.append(WindowSample(self.settings.all_tenants, spec, end_ms, counts))
        return samples
