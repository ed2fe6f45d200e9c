"""The contract between the consumer-group runtime and a group: :class:`BatchHandler`, and what flows across it.

A group is "the runtime + one handler module". The runtime (``consumers.runtime``) reads, batches, retries, claims,
dead-letters, acks, beats and trims; the handler only turns a batch of entries into committed work. Everything the
runtime calls is declared here, and ``tests/test_group_contract.py`` runs one check suite over every handler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from common.keys import EntryData, decode_entry, entry_codec, entry_payload, entry_version
from schemas.codec import decompress

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry as read from Redis (layout: ``common.keys``)."""

    stream: str
    id: str
    fields: dict[bytes, bytes]

    @property
    def data(self) -> EntryData:
        """The entry's schema version, record id and payload."""
        return decode_entry(self.fields)

    @property
    def version(self) -> int:
        return entry_version(self.fields)

    @property
    def payload(self) -> bytes:
        """The payload as stored (possibly compressed)."""
        return entry_payload(self.fields)

    @property
    def document(self) -> bytes:
        """The payload's JSON document (decompressed when the entry names a codec); ``ValueError`` if corrupt."""
        return decompress(entry_codec(self.fields), entry_payload(self.fields))


@dataclass(slots=True)
class BatchResult:
    """Entries the handler could not process, with the reason; everything else counts as committed.

    Failed entries stay pending and are retried (re-delivered) until they exceed the group's delivery limit,
    then they go to the dead-letter stream with their last error. ``acked`` is True when the handler already
    acknowledged the committed entries itself, atomically with its sink (the runtime then does not ``XACK`` them).
    """

    failed: dict[str, str] = field(default_factory=dict)
    acked: bool = False


class BatchHandler(Protocol):
    """A consumer group's sink. ``handle`` must commit before returning (the runtime acks right after).

    Raise to signal a transient failure of the whole batch (sink down): nothing is acked, the runtime retries
    with backoff. Return per-entry failures for entries that are themselves bad.

    Optional: a handler with a ``batching`` attribute ``(entries, seconds)`` (not None) gets batches of that size,
    flushed only when full or that old (``BNPL_CONSUMER_BATCH``/``BNPL_CONSUMER_WAIT_S`` and the flush once caught up
    do not apply): for sinks with a per-day job quota.
    """

    #: Consumer-group name (one Redis consumer group per name, on every stream in :attr:`streams`).
    group: str

    @property
    def streams(self) -> list[str]:
        """The streams this group reads (key names from ``common.keys``)."""
        ...

    async def start(self) -> None:
        """Open the sink (create tables, load state); called once before the first batch."""
        ...

    async def handle(self, entries: list[Entry]) -> BatchResult:
        """Commit one batch; see the class docstring."""
        ...

    async def tick(self) -> None:
        """Time-driven work between batches (also while no events arrive); errors are logged and retried."""
        ...

    async def released(self, stream: str, lost: bool) -> None:
        """This worker stops reading ``stream``: handed back to another worker (``lost`` False: save per-stream
        state now, the next holder loads it) or taken by another after a missed renewal (``lost``: drop it)."""
        ...

    async def close(self) -> None:
        """Flush and release the sink; called once, after the last batch."""
        ...


def decode_entries(
    entries: list[Entry], decode: Callable[[int, bytes], T], what: str = "prediction event"
) -> tuple[list[tuple[Entry, T]], dict[str, str]]:
    """Decode every entry's JSON document with ``decode(version, document)``; entries that do not decode are
    returned as failures (dead-lettered later)."""
    decoded: list[tuple[Entry, T]] = []
    failed: dict[str, str] = {}
    for entry in entries:
        fields = entry.fields
        try:
            document = decompress(entry_codec(fields), entry_payload(fields))
            decoded.append((entry, decode(entry_version(fields), document)))
        except ValueError as exc:  # msgspec.DecodeError and orjson.JSONDecodeError are ValueErrors
            failed[entry.id] = f"undecodable {what}: {exc}"
    return decoded, failed
