"""The warehouse group's side of ``BNPL_BQ_MODE=stream``: per shard, a committed write stream whose offset moves
only together with the ``XACK`` of the entries behind it (the protocol: :mod:`warehouse.bigquery_write`)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from google.api_core import exceptions as gexc

from common.keys import Keys
from common.redis_client import text
from consumers.base import BatchResult, Entry
from schemas.events import upgrade_payload
from warehouse.base import BatchUploadError
from warehouse.bigquery_store import BigQueryWarehouse
from warehouse.bigquery_write import AppendResult, OffsetGapError

log = logging.getLogger(__name__)

#: Record the intent of an append: only when none is pending and the write stream and offset are those read.
INTENT = """
if redis.call('HEXISTS', KEYS[1], 'intent') == 1 then return 0 end
if (redis.call('HGET', KEYS[1], 'next') or '0') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'name') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'intent', ARGV[3])
return 1
"""
#: Replace the pending intent ARGV[1] by ARGV[2] (rows BigQuery refused left out, same offset).
REPLACE = """
if redis.call('HGET', KEYS[1], 'intent') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'intent', ARGV[2])
return 1
"""
#: Resolve the pending intent ARGV[2]: XACK ARGV[5..] on the stream KEYS[2] for group ARGV[1], ``next`` = ARGV[3],
#: the write stream forgotten when ARGV[4] is 1 (it was finalized), the intent deleted — all or nothing.
COMMIT = """
if redis.call('HGET', KEYS[1], 'intent') ~= ARGV[2] then return 0 end
for i = 5, #ARGV, 1000 do
  redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('HSET', KEYS[1], 'next', ARGV[3])
if ARGV[4] == '1' then redis.call('HDEL', KEYS[1], 'name') end
redis.call('HDEL', KEYS[1], 'intent')
return 1
"""


#: Drop the pending intent ARGV[1] (its append wrote nothing).
DROP = """
if redis.call('HGET', KEYS[1], 'intent') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'intent')
return 1
"""
#: Errors no retry of the same append can cure.
PERMANENT = (gexc.NotFound, gexc.InvalidArgument, gexc.FailedPrecondition, gexc.PermissionDenied)


class IntentConflictError(RuntimeError):
    """Another worker changed the shard's write state meanwhile (a lease hand-over): the batch is retried."""


@dataclass
class _Intent:
    raw: str
    offset: int
    ids: list[str]

    @classmethod
    def new(cls, offset: int, ids: list[str]) -> _Intent:
        raw = orjson.dumps({"token": uuid.uuid4().hex, "offset": offset, "ids": ids}).decode()
        return cls(raw, offset, ids)

    @classmethod
    def parse(cls, raw: str) -> _Intent:
        data = orjson.loads(raw)
        return cls(raw, int(data["offset"]), [str(i) for i in data["ids"]])


class StreamAppender:
    """Lands a batch of entries with exactly-once offset appends; acks what it landed (``BatchResult.acked``)."""

    def __init__(self, warehouse: BigQueryWarehouse, keys: Keys, redis: Any, group: str) -> None:
        self.warehouse = warehouse
        self.keys = keys
        self.redis = redis
        self.group = group
        self._intent = redis.register_script(INTENT)
        self._replace = redis.register_script(REPLACE)
        self._commit = redis.register_script(COMMIT)
        self._drop = redis.register_script(DROP)

    async def handle(self, entries: list[Entry]) -> BatchResult:
        failed: dict[str, str] = {}
        by_stream: dict[str, list[Entry]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry)
        for stream, group in by_stream.items():
            failed.update(await self._land(stream, group))
        return BatchResult(failed, acked=True)

    async def _rows(self, entries: list[Entry]) -> tuple[dict[str, bytes | None], dict[str, str]]:
        """Each entry's encoded row (None: a duplicate within the batch) and the entries that cannot load."""
        failed: dict[str, str] = {}
        payloads: list[bytes] = []
        ids: list[str] = []
        for entry in entries:
            try:
                payloads.append(upgrade_payload(entry.version, entry.document))
            except ValueError as exc:
                failed[entry.id] = f"undecodable prediction event (version {entry.version}): {exc}"
                continue
            ids.append(entry.id)
        rows, rejected = await asyncio.to_thread(self.warehouse.stream_rows, payloads)
        for position, why in rejected.items():
            failed[ids[position]] = f"unloadable prediction event: {why}"
        return {i: r for i, r in zip(ids, rows, strict=True) if i not in failed}, failed

    async def _state(self, key: str) -> tuple[str, int, _Intent | None]:
        state = {text(k): text(v) for k, v in (await self.redis.hgetall(key)).items()}
        name = state.get("name")
        if name is None:
            created = await asyncio.to_thread(self.warehouse.writer.create_stream)
            if await self.redis.hsetnx(key, "name", created):
                await self.redis.hsetnx(key, "next", 0)
                log.info("warehouse: write stream %s for %s", created, key)
            return await self._state(key)
        intent = _Intent.parse(state["intent"]) if "intent" in state else None
        return name, int(state.get("next", 0)), intent

    async def _land(self, stream: str, entries: list[Entry]) -> dict[str, str]:
        key = self.keys.bq_write_state(stream)
        name, offset, intent = await self._state(key)
        rows, failed = await self._rows(entries)
        if intent is not None:
            await self._replay(stream, key, name, intent, rows)
            name, offset, _ = await self._state(key)
        rows = await self._still_pending(stream, rows)
        fresh = [i for i, r in rows.items() if r is not None]
        duplicates = [i for i, r in rows.items() if r is None]
        intent = _Intent.new(offset, fresh)
        if not await self._intent(keys=[key], args=[offset, name, intent.raw]):
            raise IntentConflictError(f"the write state of {stream} changed meanwhile")
        refused = await self._append(key, name, intent, rows, replay=False)
        failed.update(refused)
        done = [*fresh, *duplicates]
        landed = len(fresh) - len(refused)
        await self._resolve(key, stream, intent, offset + landed, [i for i in done if i not in refused])
        return failed

    async def _append(
        self, key: str, name: str, intent: _Intent, rows: dict[str, bytes | None], replay: bool
    ) -> dict[str, str]:
        """Append the intent's rows at its offset until nothing is refused; rows BigQuery refuses are left out of
        the intent (re-recorded: their request wrote nothing) and returned with why. Transient errors propagate
        (the runtime retries the batch: the intent is replayed); a gap, a write stream gone or finalized, and rows
        already at a fresh intent's offset (Redis behind the write stream) raise :class:`BatchUploadError`."""
        refused: dict[str, str] = {}
        current = intent
        while True:
            payload = [rows[i] for i in current.ids]
            batch = f"{name}@{current.offset}"
            try:
                result: AppendResult = await asyncio.to_thread(
                    self.warehouse.writer.append, name, [p for p in payload if p is not None], current.offset
                )
            except (OffsetGapError, *PERMANENT) as exc:
                raise BatchUploadError(batch, [f"{type(exc).__name__}: {exc}"]) from exc
            if result.existing and not replay:
                await self._drop(keys=[key], args=[current.raw])
                raise BatchUploadError(
                    batch,
                    [
                        f"write stream {name} already holds rows at offset {current.offset}, which Redis has not "
                        "acknowledged: Redis lost acknowledged writes; nothing appended"
                    ],
                )
            if not result.refused:
                intent.raw, intent.ids = current.raw, current.ids
                return refused
            for position, why in result.refused.items():
                refused[current.ids[position]] = why
            kept = [i for i in current.ids if i not in refused]
            replacement = _Intent.new(current.offset, kept)
            if not await self._replace(keys=[key], args=[current.raw, replacement.raw]):
                raise IntentConflictError(f"the intent of {key} changed meanwhile")
            current = replacement

    async def _replay(self, stream: str, key: str, name: str, intent: _Intent, rows: dict[str, bytes | None]) -> None:
        """Append a pending intent again at its offset (rows of its entries outside this batch read back from
        the stream), then resolve it; its entries leave ``rows``."""
        missing = [i for i in intent.ids if i not in rows]
        if missing:
            fetched = await self._fetch(stream, missing)
            found, _ = await self._rows(fetched)
            rows_all = {**rows, **found}
        else:
            rows_all = rows
        if any(rows_all.get(i) is None for i in intent.ids):
            await self._abandon(stream, key, name, intent, rows_all)
        else:
            log.info(
                "warehouse: replaying the pending append of %d rows at %d on %s", len(intent.ids), intent.offset, name
            )
            refused = await self._append(key, name, intent, rows_all, replay=True)
            landed = [i for i in intent.ids if i not in refused]
            await self._resolve(key, stream, intent, intent.offset + len(landed), landed)
        for i in intent.ids:
            rows.pop(i, None)

    async def _abandon(self, stream: str, key: str, name: str, intent: _Intent, rows: dict[str, bytes | None]) -> None:
        """The intent's rows cannot all be rebuilt (entries trimmed from the stream): finalize the write stream —
        its row count says how much of the intent landed — ack those, forget the stream (a new one is created);
        the intent's other entries of this batch are appended afresh."""
        count = await asyncio.to_thread(self.warehouse.writer.finalize, name)
        landed = intent.ids[: max(0, min(len(intent.ids), count - intent.offset))]
        log.warning(
            "warehouse: pending append on %s cannot be rebuilt; finalized at %d rows, %d of its %d rows landed",
            name,
            count,
            len(landed),
            len(intent.ids),
        )
        if not await self._commit(keys=[key, stream], args=[self.group, intent.raw, 0, 1, *landed]):
            raise IntentConflictError(f"the intent of {key} changed meanwhile")
        for i in landed:
            rows.pop(i, None)
        intent.ids = landed  # the rest stays in ``rows``: appended as new rows

    async def _resolve(self, key: str, stream: str, intent: _Intent, next_offset: int, ack: list[str]) -> None:
        if not await self._commit(keys=[key, stream], args=[self.group, intent.raw, next_offset, 0, *ack]):
            raise IntentConflictError(f"the intent of {key} changed meanwhile")

    async def _still_pending(self, stream: str, rows: dict[str, bytes | None]) -> dict[str, bytes | None]:
        """``rows`` without the entries the group no longer has pending (acked meanwhile by another worker that
        replayed this worker's intent, during a lease hand-over): never appended a second time."""
        if not rows:
            return rows
        order = sorted(rows, key=_entry_key)
        pending: set[str] = set()
        start = order[0]
        while True:
            page = await self.redis.xpending_range(stream, self.group, min=start, max=order[-1], count=10_000)
            pending.update(text(p["message_id"]) for p in page)
            if len(page) < 10_000:
                break
            start = "(" + text(page[-1]["message_id"])
        return {i: r for i, r in rows.items() if i in pending}

    async def _fetch(self, stream: str, ids: list[str]) -> list[Entry]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(stream, min=entry_id, max=entry_id, count=1)
            found = await pipe.execute()
        return [Entry(stream, text(row[0][0]), row[0][1]) for row in found if row]


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
