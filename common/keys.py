"""Every Redis key name and stream-entry layout of the system, in one place.

**Slots.** Keys that a Lua script or a MULTI/EXEC touches together must live in one Redis Cluster hash slot. Each
shard of the prediction stream has a hash tag (``{0}``, ``{1}`` …) and every key that works with that shard carries
the same tag: the stream, its publish-state hash, its dead letters and the MLflow group's aggregates of that shard.
Streams that are not sharded (alerts) carry their own name as tag, so their dead letters share their slot too::

    bnpl:predictions:{0}            prediction events of shard 0 (customer_id → shard by crc32)
    bnpl:predictions:{0}:pub        last block sequence written per API instance (idempotent publishing)
    bnpl:predictions:{0}:ledger:<day>   events the API published that UTC day, per instance|experiment|arm
    bnpl:predictions:{0}:dead       entries a group failed too often, with the error
    bnpl:predictions:{0}:bqwrite    BigQuery write stream of shard 0, its next offset, the append in flight
    bnpl:mlflow:{0}:agg:<exp>|<arm>|<version>|<window>    per-window counts of shard 0 (MLflow group)
    bnpl:mlflow:{0}:open / :late / :closed:<window>       windows waiting to be logged, late events, logged windows
    bnpl:{alerts}, bnpl:{alerts}:dead                     the alert stream and its dead letters
    bnpl:{outcomes}, bnpl:{outcomes}:dead                 loan outcomes (ground truth) and their dead letters

Keys used alone (no slot constraint): ``bnpl:health:<group>:<consumer>`` (worker liveness, with a TTL),
``bnpl:supervisor:<group>:<host>-<pid>`` (what a ``--workers N`` supervisor runs),
``bnpl:rates:<group>:<stream>`` (progress samples for ``bnpl status``), ``bnpl:drift:state:<stream>`` (detector
checkpoints per shard), ``bnpl:lease:<group>:<stream>`` (which worker reads a stream), ``bnpl:members:<group>``
(the group's live workers), ``bnpl:mlflow:flush-lock`` (the MLflow worker logging windows),
``bnpl:alerted:<cause>`` (alert dedup with a cooldown), ``bnpl:delivered:<alert id>:<url hash>`` (webhook delivery
markers), ``bnpl:performance:done:<analysis date>`` (analyses the outcomes group's schedule ran).

**Entries.** Every stream entry has the fields ``v`` (schema version of the payload), ``id`` (the record's own
id: prediction id, alert id), ``e`` (the payload) and, when the payload is encoded, ``c`` (its codec, e.g.
``zd1``: zstd with the events' dictionary, see ``schemas.codec``). :func:`encode_entry` / :func:`decode_entry` are
the only code that writes or reads that layout; Lua scripts that append entries embed :func:`lua_xadd_entry`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import zlib
from dataclasses import dataclass
from typing import Final

#: Entry field names (bytes: what Redis returns).
VERSION_FIELD: Final = b"v"
ID_FIELD: Final = b"id"
PAYLOAD_FIELD: Final = b"e"
CODEC_FIELD: Final = b"c"


@dataclass(frozen=True, slots=True)
class EntryData:
    """The three fields of a stream entry, decoded."""

    version: int
    record_id: str
    payload: bytes
    codec: str = ""


def encode_entry(record_id: str, payload: bytes, version: int, codec: str = "") -> dict[str, str | bytes | int]:
    """The fields of one stream entry (for ``XADD``).

    >>> encode_entry("p1", b"{}", 2)
    {'v': 2, 'id': 'p1', 'e': b'{}'}
    >>> decode_entry({b"v": b"2", b"id": b"p1", b"e": b"...", b"c": b"zd1"})  # as Redis returns them
    EntryData(version=2, record_id='p1', payload=b'...', codec='zd1')
    """
    fields: dict[str, str | bytes | int] = {
        VERSION_FIELD.decode(): version,
        ID_FIELD.decode(): record_id,
        PAYLOAD_FIELD.decode(): payload,
    }
    if codec:
        fields[CODEC_FIELD.decode()] = codec
    return fields


def decode_entry(fields: dict[bytes, bytes]) -> EntryData:
    """Read an entry written by :func:`encode_entry` or :func:`lua_xadd_entry`; missing fields read as empty
    (version 0), so a foreign entry fails later, in the payload decoder, as one bad entry."""
    return EntryData(
        entry_version(fields),
        fields.get(ID_FIELD, b"").decode(errors="replace"),
        entry_payload(fields),
        entry_codec(fields),
    )


def entry_version(fields: dict[bytes, bytes]) -> int:
    """Schema version of an entry's payload (0 when missing or not a number): the consumers' hot path."""
    try:
        return int(fields.get(VERSION_FIELD) or 0)
    except ValueError:
        return 0


def entry_payload(fields: dict[bytes, bytes]) -> bytes:
    """An entry's payload (empty when missing): the consumers' hot path."""
    return fields.get(PAYLOAD_FIELD, b"")


def entry_codec(fields: dict[bytes, bytes]) -> str:
    """The codec of an entry's payload (``""``: plain JSON)."""
    return fields.get(CODEC_FIELD, b"").decode()


def lua_xadd_entry(stream: str, version: str, record_id: str, payload: str, codec: str | None = None) -> str:
    """A Lua ``XADD`` of one entry; the arguments are Lua expressions (``KEYS[1]``, ``ARGV[3]`` …)."""
    v, i, e, c = (f.decode() for f in (VERSION_FIELD, ID_FIELD, PAYLOAD_FIELD, CODEC_FIELD))
    encoded = f", '{c}', {codec}" if codec else ""
    return f"redis.call('XADD', {stream}, '*', '{v}', {version}, '{i}', {record_id}, '{e}', {payload}{encoded})"


def dead_letter_fields(
    entry_fields: dict[bytes, bytes], source_id: str, group: str, error: str, deliveries: int, at_ms: int
) -> dict[str, str | bytes]:
    """A dead-letter entry: the original fields plus where it came from and why it failed."""
    return {
        **{k.decode(): v for k, v in entry_fields.items()},
        "source_id": source_id,
        "group": group,
        "error": error[:2_000],
        "deliveries": str(deliveries),
        "dead_lettered_at": str(at_ms),
    }


#: Ledger field "experiment" of traffic outside any experiment (the MLflow group's ``live``).
LEDGER_LIVE: Final = "live"

#: Cluster key slots (Redis Cluster hashes the hash tag with CRC16 into this many).
SLOTS: Final = 16_384


def slot_of(key: str) -> int:
    """The cluster slot of ``key`` (CRC16 of its hash tag, as Redis computes it)."""
    from redis.crc import key_slot

    slot: int = key_slot(key.encode())
    return slot


@functools.cache
def spread_tag(shard: int, shards: int) -> str:
    """``{s<shard>-<k>}`` with the smallest ``k`` whose slot is within a quarter share of the middle of the shard's
    share of the slots (deterministic: every process derives the same names).

    >>> sorted(slot_of(spread_tag(s, 6)) * 6 // SLOTS for s in range(6))
    [0, 1, 2, 3, 4, 5]
    """
    share = SLOTS / shards
    middle = (shard + 0.5) * share
    for k in itertools.count():
        tag = f"{{s{shard}-{k}}}"
        if abs(slot_of(tag) - middle) <= share / 4:
            return tag
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one deployment (``prefix`` separates deployments sharing a Redis)."""

    prefix: str = "bnpl"
    shards: int = 1

    # --- slots -------------------------------------------------------------------------------------------------
    def tag(self, shard: int) -> str:
        """The hash tag every key of ``shard`` carries: ``{0}`` with one shard; with more, one whose slot lies in the
        middle of the shard's equal share of the 16,384 cluster slots, so a cluster whose masters split the slots
        evenly (what ``redis-cli --cluster create`` does) gets the same number of shards on every master.

        >>> Keys("bnpl", 1).tag(0), [slot_of(Keys("bnpl", 3).tag(s)) * 3 // 16_384 for s in range(3)]
        ('{0}', [0, 1, 2])
        """
        return "{0}" if self.shards == 1 else spread_tag(shard, self.shards)

    def shard_of(self, customer_id: str) -> int:
        """Stable shard of a customer (crc32, identical in every process)."""
        return 0 if self.shards == 1 else zlib.crc32(customer_id.encode()) % self.shards

    def shard_of_stream(self, stream: str) -> int:
        """The shard of a prediction stream name.

        >>> keys = Keys("bnpl", 4)
        >>> keys.shard_of_stream(keys.predictions(3))
        3
        """
        return self.prediction_streams().index(stream)

    # --- streams -----------------------------------------------------------------------------------------------
    def predictions(self, shard: int = 0) -> str:
        """The prediction-event stream of ``shard``."""
        return f"{self.prefix}:predictions:{self.tag(shard)}"

    def prediction_streams(self) -> list[str]:
        """Every prediction-event stream (one per shard)."""
        return [self.predictions(s) for s in range(self.shards)]

    def current_stream(self, stream: str) -> str:
        """``stream``, or the current name of a stream of the layout before hash tags (``<prefix>:predictions``,
        ``<prefix>:alerts``), e.g. in a spool file written by an older version.

        >>> Keys("bnpl").current_stream("bnpl:predictions"), Keys("bnpl").current_stream("bnpl:predictions:{0}")
        ('bnpl:predictions:{0}', 'bnpl:predictions:{0}')
        """
        legacy = {f"{self.prefix}:predictions": self.predictions(0), f"{self.prefix}:alerts": self.alerts()}
        return legacy.get(stream, stream)

    def alerts(self) -> str:
        """The alert stream: every alert, for audit and for the alert sender."""
        return f"{self.prefix}:{{alerts}}"

    def outcomes(self) -> str:
        """The outcome stream: loan outcomes (paid, defaulted …) from the API and the loader."""
        return f"{self.prefix}:{{outcomes}}"

    def performance_done(self, analysis_date: str) -> str:
        """Marker: the scheduled performance analysis of ``analysis_date`` ran."""
        return f"{self.prefix}:performance:done:{analysis_date}"

    @staticmethod
    def publish_state(stream: str) -> str:
        """Hash of the last block sequence each API instance wrote to ``stream`` (same slot as the stream)."""
        return f"{stream}:pub"

    @staticmethod
    def ledger(stream: str, day: str) -> str:
        """Published ledger of ``stream`` for UTC ``day`` (``YYYY-MM-DD``): a hash of event counts per
        ``<instance>|<experiment or live>|<arm>``, added to by the publish script for the blocks it writes (same slot
        as the stream); read by ``bnpl reconcile``.

        >>> Keys.ledger("bnpl:predictions:{0}", "2026-11-27")
        'bnpl:predictions:{0}:ledger:2026-11-27'
        """
        return f"{stream}:ledger:{day}"

    @staticmethod
    def ledger_field(instance: str, experiment: str, arm: str) -> str:
        """A ledger field: ``<instance>|<experiment id, or live>|<arm>``."""
        return f"{instance}|{experiment}|{arm}"

    @staticmethod
    def parse_ledger_field(field: str) -> tuple[str, str, str]:
        """(instance, experiment, arm) of a ledger field (the instance may itself hold ``|``).

        >>> Keys.parse_ledger_field("api-1|live|champion")
        ('api-1', 'live', 'champion')
        """
        instance, experiment, arm = field.rsplit("|", 2)
        return instance, experiment, arm

    @staticmethod
    def bq_write_state(stream: str) -> str:
        """Hash of the warehouse group's BigQuery write stream for ``stream`` (``BNPL_BQ_MODE=stream``): ``name``,
        ``next`` offset, pending ``intent`` (same slot as the stream: acked with it in one script).

        >>> Keys.bq_write_state("bnpl:predictions:{0}")
        'bnpl:predictions:{0}:bqwrite'
        """
        return f"{stream}:bqwrite"

    @staticmethod
    def dead_letter(stream: str) -> str:
        """Dead-letter stream for entries of ``stream`` that failed too often (same slot as the stream)."""
        return f"{stream}:dead"

    # --- consumer groups -----------------------------------------------------------------------------------------
    def health(self, group: str, consumer: str) -> str:
        """Liveness key of one worker (refreshed with a TTL)."""
        return f"{self.prefix}:health:{group}:{consumer}"

    def health_pattern(self, group: str) -> str:
        """SCAN pattern matching every live worker of ``group``."""
        return self.health(group, "*")

    def supervisor(self, group: str, host: str, pid: int) -> str:
        """What a ``--workers N`` supervisor reports: its children, their pids, restarts (refreshed with a TTL)."""
        return f"{self.prefix}:supervisor:{group}:{host}-{pid}"

    def supervisor_pattern(self, group: str, host: str) -> str:
        """SCAN pattern of the supervisors of ``group`` on ``host``."""
        return f"{self.prefix}:supervisor:{group}:{host}-*"

    def rates(self, stream: str, group: str) -> str:
        """Progress samples (time, entries added, entries read) of ``group`` on ``stream``."""
        return f"{self.prefix}:rates:{group}:{stream}"

    def lease(self, group: str, stream: str) -> str:
        """Which worker of ``group`` reads ``stream`` (its consumer name; ``SET NX PX``, renewed while it lives).
        Carries the stream's hash tag, so it lives on the stream's node.

        >>> Keys("bnpl").lease("warehouse", "bnpl:predictions:{0}")
        'bnpl:lease:warehouse:predictions:{0}'
        """
        return f"{self.prefix}:lease:{group}:{stream.removeprefix(self.prefix + ':')}"

    def members(self, group: str) -> str:
        """Sorted set of the live workers of ``group``, scored by when their membership expires (Redis time, ms)."""
        return f"{self.prefix}:members:{group}"

    def drift_state(self, stream: str) -> str:
        """Checkpointed detector state of the drift group for the events of ``stream`` (it follows the stream's
        lease from worker to worker)."""
        return f"{self.prefix}:drift:state:{stream.removeprefix(self.prefix + ':')}"

    def mlflow_agg(self, shard: int, experiment: str, arm: str, version: str, window: int) -> str:
        """Counts of one (experiment, arm, model version, window) from ``shard``'s stream."""
        return f"{self.prefix}:mlflow:{self.tag(shard)}:agg:{experiment}|{arm}|{version}|{window}"

    @staticmethod
    def parse_mlflow_agg(key: str) -> tuple[str, str, str, int]:
        """(experiment, arm, version, window) of an aggregate key.

        >>> Keys().parse_mlflow_agg(Keys().mlflow_agg(0, "7", "champion", "3", 99))
        ('7', 'champion', '3', 99)
        """
        experiment, arm, version, window = key.rsplit(":agg:", 1)[1].split("|")
        return experiment, arm, version, int(window)

    def mlflow_open(self, shard: int) -> str:
        """Sorted set of ``shard``'s aggregates by window end: what is still to be logged."""
        return f"{self.prefix}:mlflow:{self.tag(shard)}:open"

    def mlflow_late(self, shard: int) -> str:
        """Counter of events that arrived after their window was logged."""
        return f"{self.prefix}:mlflow:{self.tag(shard)}:late"

    def mlflow_flush_lock(self) -> str:
        """Lock held by the MLflow group's worker that is logging closed windows."""
        return f"{self.prefix}:mlflow:flush-lock"

    def mlflow_closed(self, shard: int, window: int) -> str:
        """Marker: ``window`` was logged (events for it now count as late)."""
        return f"{self.prefix}:mlflow:{self.tag(shard)}:closed:{window}"

    # --- governance ----------------------------------------------------------------------------------------------
    def fallback(self) -> str:
        """Hash of the emergency fallback switch (``reason``, ``actor``, ``at``): present = every API replica decides
        with the rule-based policy."""
        return f"{self.prefix}:control:fallback"

    # --- alerts --------------------------------------------------------------------------------------------------
    def alerted(self, cause: str) -> str:
        """Dedup marker of an alert cause (``SET NX`` with the cooldown as TTL)."""
        return f"{self.prefix}:alerted:{cause}"

    def delivered(self, alert_id: str, url: str) -> str:
        """Marker: ``alert_id`` was delivered to ``url`` (the URL hashed: it may be long or hold braces)."""
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        return f"{self.prefix}:delivered:{alert_id}:{digest}"
