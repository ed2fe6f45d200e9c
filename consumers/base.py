"""What a consumer group supplies to the shared runtime: a name and "handle this batch"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry as read from Redis."""

    stream: str
    id: str
    fields: dict[bytes, bytes]

    @property
    def payload(self) -> bytes:
        return self.fields.get(b"e", b"")


@dataclass(slots=True)
class BatchResult:
    """Entries the handler could not process, with the reason; everything else counts as committed.

    Failed entries stay pending and are retried (re-delivered) until they exceed the group's delivery limit,
    then they go to the dead-letter stream with their last error.
    """

    failed: dict[str, str] = field(default_factory=dict)


class BatchHandler(Protocol):
    """A consumer group's sink. ``handle`` must commit before returning (the runtime acks right after).

    Raise to signal a transient failure of the whole batch (sink down): nothing is acked, the runtime retries
    with backoff. Return per-entry failures for entries that are themselves bad.
    """

    group: str

    async def start(self) -> None: ...

    async def handle(self, entries: list[Entry]) -> BatchResult: ...

    async def close(self) -> None: ...


def decode_entries(
    entries: list[Entry], decode: Callable[[bytes], T], what: str = "prediction event"
) -> tuple[list[tuple[Entry, T]], dict[str, str]]:
    """Decode every entry's payload; entries that do not decode are returned as failures (dead-lettered later)."""
    decoded: list[tuple[Entry, T]] = []
    failed: dict[str, str] = {}
    for entry in entries:
        try:
            decoded.append((entry, decode(entry.payload)))
        except ValueError as exc:  # msgspec.DecodeError and orjson.JSONDecodeError are ValueErrors
            failed[entry.id] = f"undecodable {what}: {exc}"
    return decoded, failed
