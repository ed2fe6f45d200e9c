"""Safe stream trimming: never below what every group has acknowledged.

On Redis 7.x the safe point is computed from ``XINFO GROUPS`` and ``XPENDING``: for each group, the oldest entry it
still needs is its oldest pending entry, or the entry right after its last-delivered id when nothing is pending.
The stream is trimmed (``XTRIM MINID``) to the oldest of those — and no further than the retention allows (6 hours
for prediction events by default: the warehouse is the system of record, the stream a buffer; 30 days for alerts).
If a group still needs entries older than the retention, they are kept and the lag is reported instead of dropping
them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from common.redis_client import text

log = logging.getLogger(__name__)


def parse_id(entry_id: str | bytes) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def oldest_pending(redis: Any, stream: str, group: dict[str, Any]) -> str | bytes | None:
    """Id of the oldest entry pending for the group whose ``XINFO GROUPS`` row is ``group`` (None: none pending).

    ``XPENDING`` comes after that row was read: what was pending may have been acked meanwhile (no ``min`` then).
    A caller falling back to the row's last-delivered id stays safe: it is at or before the group's position now."""
    if int(group["pending"]) == 0:
        return None
    oldest: str | bytes | None = (await redis.xpending(stream, text(group["name"])))["min"]
    return oldest


def format_id(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"


@dataclass(frozen=True, slots=True)
class TrimResult:
    stream: str
    safe_min_id: str | None
    trimmed_to: str | None
    removed: int
    #: Groups that still need entries older than the retention (kept; reported, never dropped).
    overdue_groups: tuple[str, ...] = ()


async def needed_from(redis: Any, stream: str) -> dict[str, tuple[int, int]]:
    """Per group, the oldest entry id it still needs."""
    return {name: oldest for name, (oldest, _) in (await _needs(redis, stream)).items()}


async def _needs(redis: Any, stream: str) -> dict[str, tuple[tuple[int, int], bool]]:
    """Per group, the oldest entry id it still needs, and whether it has work waiting (pending entries, or entries
    not yet delivered; an unknown lag counts as waiting)."""
    needed: dict[str, tuple[tuple[int, int], bool]] = {}
    for group in await redis.xinfo_groups(stream):
        name = text(group["name"])
        lag = group.get("lag")
        waiting = int(group["pending"]) > 0 or lag is None or int(lag) > 0
        oldest = await oldest_pending(redis, stream, group)
        if oldest is not None:
            needed[name] = (parse_id(oldest), waiting)
        else:
            ms, seq = parse_id(group["last-delivered-id"])
            needed[name] = ((ms, seq + 1), waiting)
    return needed


async def trim_stream(redis: Any, stream: str, retention_ms: int, approximate: bool = True) -> TrimResult:
    """Trim ``stream`` below the oldest entry any group needs, and only entries older than the retention."""
    if not await redis.exists(stream):
        return TrimResult(stream, None, None, 0)
    needs = await _needs(redis, stream)
    if not needs:
        return TrimResult(stream, None, None, 0)  # no group yet: nothing is known to be consumed
    safe = min(oldest for oldest, _ in needs.values())
    retention_floor = (int(time.time() * 1000) - retention_ms, 0)
    target = min(safe, retention_floor)
    # A group that has read and acked everything needs nothing old, however long ago its last entry came (an idle
    # stream): only a group with work waiting behind the retention is overdue.
    overdue = tuple(sorted(g for g, (oldest, waiting) in needs.items() if waiting and oldest < retention_floor))
    if overdue:
        log.error("stream %s: groups %s still need entries older than the retention; keeping them", stream, overdue)
    removed = int(await redis.xtrim(stream, minid=format_id(target), approximate=approximate))
    return TrimResult(stream, format_id(safe), format_id(target), removed, overdue)
