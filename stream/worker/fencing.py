"""Transactional offset commits that name the consumer group generation.

aiokafka 0.14 commits a transaction's offsets with version 0 of Kafka's
TxnOffsetCommit request, which names the group only. A worker that stalls
past its session timeout loses its partitions to another worker, yet on
waking it can still commit a batch that the new owner processes too.
Version 3 of the request (Kafka 2.5 and later) also names the committer's
generation and member id, and the group coordinator rejects a commit from a
generation that is no longer current. The stalled worker's transaction then
fails and is aborted, so its records are never read by read-committed
consumers.

:func:`install` replaces the handler that aiokafka's producer sender uses
for the request; :func:`send_offsets` sets the generation for a producer's
next commit. A producer without one commits as before.

NOTE: the handler is private to aiokafka; only 0.14.0 was read and tested,
while pyproject.toml allows 0.11 to 0.14.
"""

from types import SimpleNamespace
from typing import Any

import aiokafka.producer.sender as aiokafka_sender
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.producer.transaction_manager import TransactionState
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import TxnOffsetCommitRequest_v0
from aiokafka.protocol.types import (
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import TopicPartition

# The generation and member id of a producer's next offset commit, on its transaction manager.
_GROUP_METADATA = "_adoption_group_metadata"

# Errors of a commit from a member or generation the group no longer has.
STALE_MEMBER_ERRORS = (
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
)


class TxnOffsetCommitResponse_v3(Response):  # type: ignore[misc]  # noqa: N801
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitRequest_v3(RequestStruct):  # type: ignore[misc]  # noqa: N801
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("committed_metadata", CompactString("utf-8")),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class GroupTxnOffsetCommitRequest(
    Request[TxnOffsetCommitRequest_v0 | TxnOffsetCommitRequest_v3]  # type: ignore[misc]
):
    """A TxnOffsetCommit request with the committer's generation, where the broker takes it."""

    API_KEY = 28

    def __init__(
        self,
        transactional_id: str,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        generation_id: int,
        member_id: str,
        topics: list[tuple[str, list[tuple[int, int, str]]]],
    ) -> None:
        self._transactional_id = transactional_id
        self._group_id = group_id
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._generation_id = generation_id
        self._member_id = member_id
        self._topics = topics

    def build(
        self, request_struct_class: type[TxnOffsetCommitRequest_v0 | TxnOffsetCommitRequest_v3]
    ) -> TxnOffsetCommitRequest_v0 | TxnOffsetCommitRequest_v3:
        if request_struct_class.API_VERSION < 3:
            # A broker before Kafka 2.5 cannot check the generation.
            return TxnOffsetCommitRequest_v0(
                self._transactional_id,
                self._group_id,
                self._producer_id,
                self._producer_epoch,
                self._topics,
            )
        return TxnOffsetCommitRequest_v3(
            self._transactional_id,
            self._group_id,
            self._producer_id,
            self._producer_epoch,
            self._generation_id,
            self._member_id,
            None,
            [
                (
                    topic,
                    [
                        (partition, offset, -1, metadata, {})
                        for partition, offset, metadata in partitions
                    ],
                    {},
                )
                for topic, partitions in self._topics
            ],
            {},
        )


class GroupTxnOffsetCommitHandler(aiokafka_sender.TxnOffsetCommitHandler):  # type: ignore[misc]
    """aiokafka's handler of transactional offset commits, with the generation of the commit."""

    def create_request(self) -> Any:
        txn_manager = self._sender._txn_manager
        metadata = getattr(txn_manager, _GROUP_METADATA, None)
        if metadata is None:
            return super().create_request()
        generation_id, member_id = metadata
        by_topic: dict[str, list[tuple[int, int, str]]] = {}
        for tp, offset in sorted(self._offsets.items()):
            by_topic.setdefault(tp.topic, []).append((tp.partition, offset.offset, offset.metadata))
        return GroupTxnOffsetCommitRequest(
            transactional_id=txn_manager.transactional_id,
            group_id=self._group_id,
            producer_id=txn_manager.producer_id,
            producer_epoch=txn_manager.producer_epoch,
            generation_id=generation_id,
            member_id=member_id,
            topics=list(by_topic.items()),
        )

    def handle_response(self, resp: Any) -> Any:
        if resp.API_VERSION < 3:
            return super().handle_response(resp)
        errors = [
            (topic, [(partition, error_code) for partition, error_code, _ in partitions])
            for topic, partitions, _ in resp.topics
        ]
        for _, partitions in errors:
            for _, error_code in partitions:
                error_type = kafka_errors.for_code(error_code)
                if error_type in STALE_MEMBER_ERRORS:
                    _fail_offset_commit(self._sender._txn_manager, error_type(self._group_id))
                    return None
        return super().handle_response(SimpleNamespace(errors=errors))


def _fail_offset_commit(txn_manager: Any, exc: Exception) -> None:
    """Fail the pending offset commit with ``exc`` and leave the transaction to abort.

    aiokafka's ``error_transaction`` also clears the partitions and group
    added to the transaction. Its abort then looks empty and sends nothing,
    so the broker's transaction stays open and the producer's next commit
    makes the aborted records visible. Here they stay, and the abort ends
    the transaction on the broker.
    """
    txn_manager._transition_to(TransactionState.ABORTABLE_ERROR)
    for _, _, future in txn_manager._pending_txn_offsets:
        future.set_exception(exc)
    txn_manager._pending_txn_offsets.clear()
    waiter = txn_manager._transaction_waiter
    if not waiter.done():
        waiter.set_exception(exc)
        # A commit attempt raises it again; the abort that must follow replaces the waiter.
        waiter.exception()


def install() -> None:
    """Make the transactional producers of this process commit offsets with their generation.

    Calling it again changes nothing.
    """
    aiokafka_sender.TxnOffsetCommitHandler = GroupTxnOffsetCommitHandler


async def send_offsets(
    producer: AIOKafkaProducer,
    offsets: dict[TopicPartition, int],
    group_id: str,
    generation_id: int,
    member_id: str,
) -> None:
    """Add ``offsets`` to the producer's transaction, committed as the given group member.

    Raises :class:`aiokafka.errors.IllegalGenerationError` or
    :class:`aiokafka.errors.UnknownMemberIdError` when the group has moved on
    to a newer generation or no longer has the member; the transaction must
    then be aborted. A generation of -1 skips the check.
    """
    setattr(producer._txn_manager, _GROUP_METADATA, (generation_id, member_id))
    await producer.send_offsets_to_transaction(offsets, group_id)
