"""Which worker of a group reads which stream: one lease per (group, stream) in Redis, balanced over live workers.

With S streams (the shards of the prediction stream, or one alert / outcome stream) and N live workers, each
worker holds ⌈S/N⌉ leases at most, so every stream has exactly one reader and a group scales up to S workers
(more are hot standbys). Every second (``ttl / 3`` if shorter) a worker:

1. renews its membership in the group's sorted set (scored by expiry in Redis's own clock, so host clocks do not
   matter) and drops members that did not renew within the TTL — the count of the rest is N;
2. renews each lease it holds (compare-and-``PEXPIRE``: only while the value is still its own name); a lease
   found held by another worker is *lost* (it stopped renewing for a TTL: a stall or a partition);
3. marks its lowest-preference leases above ⌈S/N⌉ for release — the runtime stops reading them, finishes what it
   holds of them, and only then deletes the lease (compare-and-``DEL``), so two workers never read one stream's new
   entries; and
4. below ⌈S/N⌉, takes free leases (``SET NX PX``) in its order of preference.

Preference is rendezvous hashing of (worker, stream): it spreads streams without coordination and keeps the
moves few when a worker joins or leaves. A worker that dies stops renewing: its leases lapse after the TTL and
the others take its streams over, with the entries it left pending (``XAUTOCLAIM``, see ``consumers.runtime``).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

from common.keys import Keys

#: KEYS: members. ARGV: worker, ttl ms. Renews the worker, drops expired members; returns the live count.
JOIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZCARD', KEYS[1])
"""

#: KEYS: lease. ARGV: worker, ttl ms. 1: renewed (still ours, or free and taken again); 0: another worker holds it.
RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

#: KEYS: lease. ARGV: worker. Deletes the lease only while it is the worker's own.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def preference(worker: str, stream: str) -> int:
    """Rendezvous weight of ``stream`` for ``worker`` (higher: preferred)."""
    return zlib.crc32(f"{worker}|{stream}".encode())


@dataclass(slots=True)
class LeaseChanges:
    """What one :meth:`ShardLeases.refresh` changed."""

    acquired: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    release: list[str] = field(default_factory=list)  # held above the worker's share: to be handed back
    members: int = 0


class ShardLeases:
    """The leases one worker of ``group`` holds on ``streams``."""

    def __init__(self, redis: Any, keys: Keys, group: str, streams: list[str], worker: str, ttl_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.worker = worker
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.streams = sorted(streams, key=lambda s: preference(worker, s), reverse=True)
        self.owned: set[str] = set()
        self._join = redis.register_script(JOIN)
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)

    def share(self, members: int) -> int:
        """⌈S/N⌉: the most streams one of ``members`` workers reads."""
        return math.ceil(len(self.streams) / max(1, members))

    async def refresh(self, releasing: frozenset[str] = frozenset()) -> LeaseChanges:
        """Renew membership and leases, then balance (see the module docstring). ``releasing``: leases already being
        handed back (not counted as held)."""
        changes = LeaseChanges()
        changes.members = int(await self._join(keys=[self.keys.members(self.group)], args=[self.worker, self.ttl_ms]))
        for stream in sorted(self.owned):
            if not await self._renew(keys=[self._key(stream)], args=[self.worker, self.ttl_ms]):
                self.owned.discard(stream)
                changes.lost.append(stream)
        share = self.share(changes.members)
        keeping = [s for s in self.streams if s in self.owned and s not in releasing]
        changes.release = keeping[share:]  # the lowest-preference ones above the share
        held = len(keeping) - len(changes.release)
        for stream in self.streams:
            if held >= share:
                break
            if stream in self.owned:
                continue
            if await self.redis.set(self._key(stream), self.worker, nx=True, px=self.ttl_ms):
                self.owned.add(stream)
                changes.acquired.append(stream)
                held += 1
        return changes

    async def release(self, stream: str) -> None:
        """Hand ``stream`` back (only while the lease is still this worker's)."""
        self.owned.discard(stream)
        await self._release(keys=[self._key(stream)], args=[self.worker])

    async def leave(self) -> None:
        """Hand every lease back and leave the group (a graceful stop: the others take over at once)."""
        for stream in sorted(self.owned):
            await self.release(stream)
        await self.redis.zrem(self.keys.members(self.group), self.worker)

    async def holders(self) -> dict[str, str | None]:
        """Stream → the worker holding its lease (None: free)."""
        out: dict[str, str | None] = {}
        for stream in self.streams:
            raw = await self.redis.get(self._key(stream))
            out[stream] = raw.decode() if isinstance(raw, bytes) else raw
        return out

    def _key(self, stream: str) -> str:
        return self.keys.lease(self.group, stream)
