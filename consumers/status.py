"""``bnpl status``: every stream (each shard of the predictions, alerts, outcomes) and group at a glance — per
(group, shard): lag, pending, read rate, which worker holds the shard's lease; per shard: the Redis node serving it.
Non-zero exit when a group is stuck. ``--json`` gives the same as one document (what a scaler or a probe reads).

A group is **stuck** when work is waiting (lag or pending entries) and no consumer of it is alive (no fresh health
key), or when work is waiting and the group made no progress over the last minute. A group with nothing waiting and
no live consumer is **unattended**: fine this second, but the next event will wait. Either makes the exit code 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from common.keys import Keys
from common.redis_client import text
from common.settings import ConsumerSettings
from consumers.trim import oldest_pending, parse_id

RATE_SAMPLES = 40  # at one sample per 5 s per worker: a few minutes of history


@dataclass(slots=True)
class GroupStatus:
    name: str
    consumers: list[dict[str, Any]]
    live_consumers: int
    pending: int
    lag: int | None
    last_delivered_id: str
    events_per_s: float | None
    stuck: bool
    reason: str = ""
    #: the worker holding this group's lease on the stream (None: free, e.g. while shards move)
    holder: str | None = None
    #: nothing waiting, but no live consumer: the next event will wait
    unattended: bool = False
    #: False: the group reads this stream but was never created on it (no worker of it ever started)
    created: bool = True
    #: age (s) of the oldest entry the group has not acked (pending, else first undelivered): its end-to-end lag
    oldest_age_s: float | None = None


@dataclass(slots=True)
class StreamStatus:
    stream: str
    length: int
    memory_bytes: int | None
    dead_letters: int
    events_per_s: float | None
    groups: list[GroupStatus] = field(default_factory=list)
    #: How long acked entries stay (trimming never removes what a group still needs).
    retention_s: float = 0.0
    #: the Redis node serving the stream (``host:port``; on a cluster, the master of its slot)
    node: str = ""
    #: where entries that failed too often go (its length is ``dead_letters``)
    dead_letter_stream: str = ""

    @property
    def bytes_per_event(self) -> float | None:
        """Redis memory per entry of this stream (``MEMORY USAGE`` / length)."""
        return self.memory_bytes / self.length if self.memory_bytes is not None and self.length else None

    def projected_bytes(self, events_per_s: float | None = None) -> float | None:
        """Memory the stream settles at: entries arriving for one retention period, at ``events_per_s`` (default:
        the last minute's rate), times the bytes per entry."""
        rate = self.events_per_s if events_per_s is None else events_per_s
        per_event = self.bytes_per_event
        if rate is None or per_event is None:
            return None
        return rate * self.retention_s * per_event


async def oldest_unacked_ms(redis: Any, stream: str, group: dict[str, Any]) -> int | None:
    """Publish time (ms, from the entry id) of the oldest entry of ``stream`` the group described by ``group`` (its
    ``XINFO GROUPS`` row) has not acked: its oldest pending entry, else its first undelivered one; None when it has
    all of them."""
    pending = await oldest_pending(redis, stream, group)
    if pending is not None:
        return parse_id(pending)[0]
    after = await redis.xrange(stream, min="(" + text(group["last-delivered-id"]), max="+", count=1)
    return parse_id(after[0][0])[0] if after else None


async def oldest_of_group(redis: Any, stream: str, group: str) -> int | None:
    """:func:`oldest_unacked_ms` of the group named ``group`` (None also when it does not exist on ``stream``)."""
    for info in await redis.xinfo_groups(stream):
        if text(info["name"]) == group:
            return await oldest_unacked_ms(redis, stream, info)
    return None


def age_s(published_ms: int | None, now: float | None = None) -> float | None:
    """Seconds since ``published_ms`` (never negative: clocks of client and server may differ slightly)."""
    if published_ms is None:
        return None
    return max(0.0, (time.time() if now is None else now) - published_ms / 1000)


async def record_rate_sample(redis: Any, keys: Keys, stream: str, group: str) -> None:
    """Called by workers every few seconds: (time, entries added to the stream, entries read by the group)."""
    info = await redis.xinfo_stream(stream)
    groups = {text(g["name"]): g for g in await redis.xinfo_groups(stream)}
    if group not in groups:
        return
    sample = {
        "t": time.time(),
        "added": int(info.get("entries-added", 0)),
        "read": int(groups[group].get("entries-read") or 0),
    }
    key = keys.rates(stream, group)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.rpush(key, orjson.dumps(sample))
        pipe.ltrim(key, -RATE_SAMPLES, -1)
        pipe.expire(key, 3600)
        await pipe.execute()


def _rate(samples: list[dict[str, float]], field_name: str, window_s: float = 60.0) -> float | None:
    if len(samples) < 2:
        return None
    last = samples[-1]
    older = [s for s in samples if last["t"] - s["t"] >= min(window_s, last["t"] - samples[0]["t"])]
    first = older[-1] if older else samples[0]
    span = last["t"] - first["t"]
    return (last[field_name] - first[field_name]) / span if span > 0 else None


async def collect(
    redis: Any,
    keys: Keys,
    settings: ConsumerSettings | None = None,
    expected: dict[str, list[str]] | None = None,
) -> list[StreamStatus]:
    """Status of every stream (predictions, alerts, outcomes, with their dead letters) and its groups.

    ``expected``: group → the streams it reads (default: every group this system runs); a group missing from a
    stream it reads is listed as not created, and flagged unattended when entries wait for it."""
    settings = settings or ConsumerSettings()
    if expected is None:
        from consumers.groups import group_streams

        expected = group_streams(keys)
    out = []
    audit = (keys.alerts(), keys.outcomes())
    for stream in [*keys.prediction_streams(), *audit]:
        out.append(await _stream_status(redis, keys, settings, stream, stream in audit))
        found = {g.name for g in out[-1].groups}
        for name in sorted(g for g, streams in expected.items() if stream in streams and g not in found):
            out[-1].groups.append(_not_created(name, out[-1].length))
    return out


def _not_created(name: str, length: int) -> GroupStatus:
    """A group that reads a stream but was never created on it: everything in the stream waits for it."""
    return GroupStatus(
        name,
        [],
        0,
        0,
        length,
        "",
        None,
        stuck=False,
        reason=f"not created: no worker of this group has started (`bnpl consume {name}`)",
        unattended=length > 0,
        created=False,
    )


async def _stream_status(redis: Any, keys: Keys, settings: ConsumerSettings, stream: str, audit: bool) -> StreamStatus:
    retention = (settings.alert_retention_ms if audit else settings.retention_ms) / 1000
    dead_stream = keys.dead_letter(stream)
    if not await redis.exists(stream):
        dead = int(await redis.xlen(dead_stream))
        return StreamStatus(
            stream,
            0,
            None,
            dead,
            None,
            retention_s=retention,
            node=node_of(redis, stream),
            dead_letter_stream=dead_stream,
        )
    try:
        memory = await redis.memory_usage(stream)
    except Exception:  # MEMORY USAGE may be disabled on managed Redis
        memory = None
    status = StreamStatus(
        stream,
        int(await redis.xlen(stream)),
        memory,
        int(await redis.xlen(dead_stream)),
        None,
        retention_s=retention,
        node=node_of(redis, stream),
        dead_letter_stream=dead_stream,
    )
    for group in await redis.xinfo_groups(stream):
        name = text(group["name"])
        consumers = [
            {"name": text(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
            for c in await redis.xinfo_consumers(stream, name)
        ]
        live = await count_live(redis, keys, name)
        raw = await redis.lrange(keys.rates(stream, name), 0, -1)
        samples = [orjson.loads(s) for s in raw]
        lag = group.get("lag")
        pending = int(group["pending"])
        oldest = age_s(await oldest_unacked_ms(redis, stream, group))
        rate = _rate(samples, "read")
        if status.events_per_s is None:
            status.events_per_s = _rate(samples, "added")
        waiting = pending > 0 or (lag is not None and int(lag) > 0) or lag is None
        stuck, reason = False, ""
        unattended = not waiting and live == 0
        if unattended:
            reason = "no live consumer: the next event will wait"
        if waiting and live == 0:
            stuck, reason = True, "work is waiting and no consumer is alive"
        elif (
            waiting
            and rate is not None
            and rate == 0
            and len(samples) >= 2
            and (samples[-1]["t"] - samples[0]["t"] >= 60)
        ):
            stuck, reason = True, "work is waiting and nothing was read in the last minute"
        status.groups.append(
            GroupStatus(
                name,
                consumers,
                live,
                pending,
                None if lag is None else int(lag),
                text(group["last-delivered-id"]),
                rate,
                stuck,
                reason,
                text(holder) if (holder := await redis.get(keys.lease(name, stream))) is not None else None,
                unattended,
                oldest_age_s=None if oldest is None else round(oldest, 3),
            )
        )
    return status


def node_of(redis: Any, key: str) -> str:
    """``host:port`` of the node serving ``key`` (on a cluster: the master of its slot)."""
    if hasattr(redis, "get_node_from_key"):
        node = redis.get_node_from_key(key)
        return f"{node.host}:{node.port}"
    kwargs = redis.connection_pool.connection_kwargs
    return f"{kwargs.get('host', kwargs.get('path', ''))}:{kwargs.get('port', '')}".rstrip(":")


_NUMBER_OR_NULL = {"type": ["number", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}

#: JSON Schema (draft 2020-12) of ``bnpl status --json`` (printed by ``bnpl status --schema``).
STATUS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "bnpl status",
    "type": "object",
    "required": ["healthy", "streams"],
    "additionalProperties": False,
    "properties": {
        "healthy": {"type": "boolean", "description": "no group stuck or unattended (exit code 0)"},
        "streams": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "stream",
                    "length",
                    "memory_bytes",
                    "dead_letters",
                    "dead_letter_stream",
                    "events_per_s",
                    "groups",
                    "retention_s",
                    "node",
                    "bytes_per_event",
                ],
                "properties": {
                    "stream": {"type": "string", "description": "Redis key of the stream"},
                    "length": {"type": "integer", "minimum": 0},
                    "memory_bytes": {**_INT_OR_NULL, "description": "MEMORY USAGE (null where disabled)"},
                    "dead_letters": {"type": "integer", "minimum": 0},
                    "dead_letter_stream": {"type": "string"},
                    "events_per_s": {**_NUMBER_OR_NULL, "description": "entries added per second, last minute"},
                    "retention_s": {"type": "number", "minimum": 0},
                    "node": {"type": "string", "description": "host:port serving the stream"},
                    "bytes_per_event": _NUMBER_OR_NULL,
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": [
                                "name",
                                "consumers",
                                "live_consumers",
                                "pending",
                                "lag",
                                "last_delivered_id",
                                "events_per_s",
                                "stuck",
                                "reason",
                                "holder",
                                "unattended",
                                "created",
                                "oldest_age_s",
                            ],
                            "properties": {
                                "name": {"type": "string"},
                                "consumers": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["name", "pending", "idle_ms"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "pending": {"type": "integer", "minimum": 0},
                                            "idle_ms": {"type": "integer", "minimum": 0},
                                        },
                                    },
                                },
                                "live_consumers": {"type": "integer", "minimum": 0},
                                "pending": {"type": "integer", "minimum": 0},
                                "lag": {**_INT_OR_NULL, "description": "entries not yet delivered (null: unknown)"},
                                "last_delivered_id": {"type": "string"},
                                "events_per_s": {**_NUMBER_OR_NULL, "description": "entries read per second"},
                                "stuck": {"type": "boolean"},
                                "reason": {"type": "string"},
                                "holder": {"type": ["string", "null"], "description": "worker holding the lease"},
                                "unattended": {"type": "boolean"},
                                "created": {"type": "boolean", "description": "false: no worker ever started"},
                                "oldest_age_s": {
                                    **_NUMBER_OR_NULL,
                                    "description": "age (s) of the oldest entry not yet acked by the group, from "
                                    "its id: the group's end-to-end lag (null: it has every entry)",
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def to_json(streams: list[StreamStatus]) -> bytes:
    """The status as one JSON document: per stream (node, length, memory, rate) and per (group, stream) lag,
    pending, rate, live consumers and lease holder; ``healthy`` on top."""
    return orjson.dumps(
        {
            "healthy": healthy(streams),
            "streams": [{**dataclasses.asdict(s), "bytes_per_event": s.bytes_per_event} for s in streams],
        },
        option=orjson.OPT_INDENT_2,
    )


async def count_live(redis: Any, keys: Keys, group: str) -> int:
    """Workers of ``group`` whose health key is fresh."""
    return len([k async for k in redis.scan_iter(match=keys.health_pattern(group))])


async def wait_drained(redis: Any, stream: str, group: str, seconds: float = 120.0) -> None:
    """Wait until ``group`` has read everything on ``stream`` and nothing is pending (demo, benchmarks, tests).

    Redis reports no lag (nil) when it cannot count it (after a restart, deletions); then the group's last
    delivered id is compared with the stream's last id instead."""
    deadline = time.monotonic() + seconds
    state = None
    while time.monotonic() < deadline:
        groups = {text(g["name"]): g for g in await redis.xinfo_groups(stream)}
        state = groups.get(group)
        if state is not None and int(state["pending"]) == 0:
            lag = state.get("lag")
            if lag is not None and int(lag) == 0:
                return
            if lag is None:
                last = text((await redis.xinfo_stream(stream))["last-generated-id"])
                if text(state["last-delivered-id"]) == last:
                    return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"group {group} did not drain {stream} within {seconds:.0f}s: {state}")


def _rate_text(per_s: float) -> str:
    return f"{per_s:,.0f}/s" if per_s >= 10 else f"{per_s:.2g}/s"


def render(streams: list[StreamStatus]) -> str:
    """Readable report."""
    lines = []
    for s in streams:
        mem = f"{s.memory_bytes / 1e6:.1f} MB" if s.memory_bytes is not None else "n/a"
        per_event = f" ({s.bytes_per_event:,.0f} B/event)" if s.bytes_per_event is not None else ""
        rate = _rate_text(s.events_per_s) if s.events_per_s is not None else "n/a"
        lines.append(
            f"stream {s.stream}{f' on {s.node}' if s.node else ''}: {s.length:,} entries, {mem}{per_event}, "
            f"in {rate} (last minute), dead letters {s.dead_letters:,} in {s.dead_letter_stream}"
        )
        projected = s.projected_bytes()
        retention = f"{s.retention_s / 3600:g} h" if s.retention_s < 72 * 3600 else f"{s.retention_s / 86400:g} days"
        if projected is not None and s.events_per_s is not None:
            lines.append(
                f"  retention {retention}: if the last minute's rate went on, it would settle near "
                f"{projected / 1e6:,.1f} MB ({_rate_text(s.events_per_s)} × {retention} × {s.bytes_per_event:,.0f} B)"
            )
        else:
            lines.append(f"  retention {retention}")
        for g in s.groups:
            if not g.created:
                lines.append(f"  group {g.name}: {'UNATTENDED' if g.unattended else 'not started'} ({g.reason})")
                continue
            flag = f"STUCK ({g.reason})" if g.stuck else f"UNATTENDED ({g.reason})" if g.unattended else "ok"
            grate = f"{g.events_per_s:,.0f}/s" if g.events_per_s is not None else "n/a"
            oldest = f"{g.oldest_age_s:,.1f} s" if g.oldest_age_s is not None else "none"
            lines.append(
                f"  group {g.name}: {flag}; live consumers {g.live_consumers}, pending {g.pending:,}, "
                f"lag {g.lag if g.lag is not None else 'unknown'} (oldest unacked {oldest}), "
                f"last delivered {g.last_delivered_id}, "
                f"read {grate}, read by {g.holder or 'no worker (lease free)'}"
            )
            for c in g.consumers:
                lines.append(f"    consumer {c['name']}: pending {c['pending']:,}, idle {c['idle_ms'] / 1000:.1f}s")
        if not s.groups:
            lines.append("  no consumer groups")
    return "\n".join(lines)


def healthy(streams: list[StreamStatus]) -> bool:
    """No group stuck or unattended."""
    return not any(g.stuck or g.unattended for s in streams for g in s.groups)
