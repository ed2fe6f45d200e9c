"""The MLflow group: decision metrics per (experiment, arm, model version) per time window, one MLflow run each.

Exactly-once without an external store: a Lua script acks every entry and counts it into its window's aggregate
only if that ``XACK`` acked it, in one atomic step — a redelivered or re-handled entry is never counted twice.
Aggregates are kept per stream shard, in the shard's hash slot (``common.keys``), so the script touches one slot.
Windows are tumbling by event time (``window_s``); a window is logged once it is older than
``window_s + lateness_s`` — measured from now, or, while the group is behind, from the oldest entry it has not
counted yet (pending, or not delivered), so a group lagging more than ``lateness_s`` does not turn its backlog into
late events: it is first marked closed in every shard (from then on the script counts its events as
late, atomically), then the shards' aggregates are summed and logged with ``log_batch`` (step = the window's index
counted from the run's first window, timestamp = the window's end, so re-logging after a crash writes identical
points; a run's start is its first window's start and it is FINISHED at its last logged window's end), then
deleted. Latency and score quantiles come from a log-bucket sketch (DDSketch's mapping: relative error
``QUANTILE_RELATIVE_ERROR``, mergeable across shards by adding counts). The group's workers
each hold some shards (``consumers.leases``); one of them at a time logs (a lock with a timeout), so each window is
logged once.
When MLflow is unreachable, logging raises *before* the batch is counted: the batch stays pending and is retried
with backoff.
**Never one run per prediction**: one run per (experiment, arm, model version), one point per window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import datetime
from typing import Any

from redis.exceptions import LockError, ResponseError

from analysis.sketch import LogBuckets
from common.keys import Keys
from common.redis_client import text
from common.settings import ConsumerSettings, RegistrySettings
from consumers.base import BatchResult, Entry, decode_entries
from decision.policy import FALLBACK_POLICY, THRESHOLD_POLICY
from registry.store import ensure_experiment, mlflow_client
from schemas.events import EventDecoder, projection

log = logging.getLogger(__name__)

#: Relative error of every logged quantile (latency and score): the value reported for quantile q lies within 1 %
#: of the window's q-th order statistic.
QUANTILE_RELATIVE_ERROR = 0.01
LIVE = "live"  # experiment key of traffic outside any experiment
#: Run tag: the window index the run's steps count from.
FIRST_WINDOW_TAG = "bnpl.first_window"


#: Count an entry only if this XACK acked it (it was pending): counting and acking are one atomic step, and a
#: redelivered or re-handled entry is never counted twice. An entry whose window is closed counts as late.
#: KEYS: stream, open-windows zset, late counter, then the batch's aggregate and closed-window keys (one slot).
#: ARGV: group, then per entry: id, aggregate key index, window end, closed key index, decision, unknown flag,
#: latency bucket, score bucket ('none': no score), score.
COUNT_ACKED = """
local late = 0
for i = 2, #ARGV, 9 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    local key = KEYS[tonumber(ARGV[i + 1])]
    if redis.call('EXISTS', KEYS[tonumber(ARGV[i + 3])]) == 1 then
      late = late + 1
      redis.call('INCR', KEYS[3])
    else
      redis.call('HINCRBY', key, 'n', 1)
      redis.call('HINCRBY', key, 'd:' .. ARGV[i + 4], 1)
      redis.call('HINCRBY', key, 'unknown', tonumber(ARGV[i + 5]))
      redis.call('HINCRBY', key, 'ql:' .. ARGV[i + 6], 1)
      if ARGV[i + 7] ~= 'none' then
        local p = tonumber(ARGV[i + 8])
        redis.call('HINCRBY', key, 'qs:' .. ARGV[i + 7], 1)
        redis.call('HINCRBY', key, 'scored', 1)
        redis.call('HINCRBYFLOAT', key, 'sum_p', p)
        redis.call('HINCRBYFLOAT', key, 'sum_p2', p * p)
      end
      redis.call('ZADD', KEYS[2], ARGV[i + 2], key)
    end
  end
end
return late
"""

#: The event fields this group reads (decoding only these is ~5x cheaper than the whole event).
_DECODER = EventDecoder(
    projection(
        "MlflowView",
        decision=[
            "assessment_timestamp",
            "experiment_id",
            "traffic_segment",
            "model_version",
            "business_decision",
            "default_probability",
            "processing_time_ms",
            "unknown_fields",
        ],
    )
)


LATENCY_BUCKETS = LogBuckets(QUANTILE_RELATIVE_ERROR, floor=1e-3)  # milliseconds: below 1 µs counts as 0
SCORE_BUCKETS = LogBuckets(QUANTILE_RELATIVE_ERROR, floor=1e-6)  # default probabilities


class _Slots:
    """The KEYS of one script call: stream, open zset, late counter, then each aggregate / closed key once."""

    def __init__(self, *fixed: str) -> None:
        self.keys = list(fixed)
        self._index = {k: i + 1 for i, k in enumerate(fixed)}

    def index(self, key: str) -> int:
        found = self._index.get(key)
        if found is None:
            self.keys.append(key)
            found = self._index[key] = len(self.keys)
        return found


class MlflowMetricsHandler:
    """Aggregates in Redis, logs closed windows to MLflow."""

    group = "mlflow"

    def __init__(self, registry: RegistrySettings, consumers: ConsumerSettings, redis: Any, keys: Keys) -> None:
        self.registry = registry
        self.redis = redis
        self.keys = keys
        self.window_s = consumers.mlflow_window_s
        self.lateness_s = consumers.mlflow_lateness_s
        self._streams = keys.prediction_streams()
        self._client: Any = None
        self._count = redis.register_script(COUNT_ACKED)
        self._runs: dict[str, tuple[str, int]] = {}  # (experiment, arm, version) → (run id, its first window)
        self.late_events = 0

    @property
    def streams(self) -> list[str]:
        return self._streams

    # --- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._client = await asyncio.to_thread(mlflow_client, self.registry)

    async def close(self) -> None:
        return None

    async def released(self, stream: str, lost: bool) -> None:
        return None

    async def tick(self) -> None:
        """Called by the runtime between batches: log windows that closed while no events came."""
        await self.flush_closed_windows()

    # --- batch ---------------------------------------------------------------------------------------------------
    async def handle(self, entries: list[Entry]) -> BatchResult:
        await self.flush_closed_windows()  # raises while MLflow is down: nothing below happens, batch stays pending
        decoded, failed = decode_entries(entries, _DECODER.decode)
        calls: dict[str, tuple[int, _Slots, list[Any]]] = {}  # per stream: its shard, the script's keys and args
        for entry, event in decoded:
            d = event.decision
            if entry.stream not in calls:
                shard = self.keys.shard_of_stream(entry.stream)
                fixed = (entry.stream, self.keys.mlflow_open(shard), self.keys.mlflow_late(shard))
                calls[entry.stream] = (shard, _Slots(*fixed), [])
            shard, slots, args = calls[entry.stream]
            window = int(datetime.fromisoformat(d.assessment_timestamp).timestamp() // self.window_s)
            key = self.keys.mlflow_agg(
                shard, d.experiment_id or LIVE, d.traffic_segment, d.model_version or "rules", window
            )
            p = d.default_probability
            args += [
                entry.id,
                slots.index(key),
                (window + 1) * self.window_s,
                slots.index(self.keys.mlflow_closed(shard, window)),
                d.business_decision,
                1 if d.unknown_fields else 0,
                LATENCY_BUCKETS.index(d.processing_time_ms),
                "none" if p is None else SCORE_BUCKETS.index(p),
                0.0 if p is None else repr(p),
            ]
        for _, slots, args in calls.values():
            late = await self._count(keys=slots.keys, args=[self.group, *args])
            self.late_events += int(late)
        return BatchResult(failed, acked=True)  # the script acked what it counted

    # --- windows -> MLflow ---------------------------------------------------------------------------------------
    async def _due(self, cutoff: float) -> dict[tuple[str, str, str, int], list[tuple[int, str]]]:
        due: dict[tuple[str, str, str, int], list[tuple[int, str]]] = {}
        for shard in range(self.keys.shards):
            for raw in await self.redis.zrangebyscore(self.keys.mlflow_open(shard), "-inf", cutoff):
                key = raw.decode() if isinstance(raw, bytes) else raw
                due.setdefault(self.keys.parse_mlflow_agg(key), []).append((shard, key))
        return due

    async def flush_closed_windows(self, now: float | None = None) -> int:
        """Log every window older than window + lateness; returns how many (experiment, arm, version, window)
        aggregates were logged."""
        cutoff = min(now or time.time(), await self._watermark()) - self.lateness_s
        if not await self._due(cutoff):
            return 0
        # One worker of the group logs at a time (the others hold other shards and would log the same windows).
        lock = self.redis.lock(self.keys.mlflow_flush_lock(), timeout=300, blocking=False)
        if not await lock.acquire():
            return 0
        try:
            return await self._flush(cutoff)
        finally:
            with contextlib.suppress(LockError):  # held longer than its timeout: another worker may log again
                await lock.release()

    async def _watermark(self) -> float:
        """Seconds: this group has counted every entry of every shard added before it — the oldest entry pending or
        not yet delivered (an entry's id is its XADD time, just after its decision); ``inf`` when nothing waits."""
        mark = math.inf
        for stream in self._streams:
            try:
                pending = await self.redis.xpending(stream, self.group)
                first = pending["min"] if pending and int(pending.get("pending") or 0) else None
                if first is None:
                    state = next(
                        (g for g in await self.redis.xinfo_groups(stream) if text(g["name"]) == self.group), None
                    )
                    head = text((await self.redis.xinfo_stream(stream))["last-generated-id"])
                    if state is not None and text(state["last-delivered-id"]) != head:
                        first = state["last-delivered-id"]  # what waits comes after it
            except ResponseError:  # no stream or no group yet: nothing of it waits for this group
                continue
            if first is not None:
                mark = min(mark, int(text(first).split("-")[0]) / 1000)
        return mark

    async def _flush(self, cutoff: float) -> int:
        windows = {window for (_, _, _, window) in await self._due(cutoff)}
        if not windows:
            return 0
        for shard in range(self.keys.shards):  # from here on, every shard counts these windows' events as late
            async with self.redis.pipeline(transaction=False) as pipe:
                for window in windows:
                    pipe.set(self.keys.mlflow_closed(shard, window), 1, ex=7 * 86_400)
                await pipe.execute()
        due = await self._due(cutoff)  # nothing can be added to these any more
        for (experiment, arm, version, window), parts in sorted(due.items(), key=lambda item: item[0][3]):
            data: dict[str, float] = {}
            for _, key in parts:
                for field, value in (await self.redis.hgetall(key)).items():
                    name = field.decode()
                    data[name] = data.get(name, 0.0) + float(value)
            await asyncio.to_thread(self._log_window, experiment, arm, version, window, data)
            for shard, key in parts:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.zrem(self.keys.mlflow_open(shard), key)
                    pipe.delete(key)
                    await pipe.execute()
        return len(due)

    def _run(self, experiment: str, arm: str, version: str, window: int) -> tuple[str, int]:
        """The run of (experiment, arm, version) and the window its steps count from (created at ``window``)."""
        cache_key = f"{experiment}|{arm}|{version}"
        if cache_key in self._runs:
            return self._runs[cache_key]
        client = self._client
        experiment_id = experiment if experiment != LIVE else ensure_experiment(client, self.registry, "bnpl-live")
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`bnpl.arm` = '{arm}' and tags.`bnpl.model_version` = '{version}' "
            "and tags.`bnpl.kind` = 'arm-metrics'",
            max_results=1,
        )
        if found:
            run_id = str(found[0].info.run_id)
            first = int(found[0].data.tags.get(FIRST_WINDOW_TAG, window))
        else:
            exp = client.get_experiment(experiment_id)
            where = "live traffic" if experiment == LIVE else f"experiment {exp.name}"
            run = client.create_run(
                experiment_id,
                start_time=int(window * self.window_s * 1000),
                run_name=f"{arm} arm · {self.registry.model_name} v{version} · {where}",
                tags={
                    "bnpl.arm": arm,
                    "bnpl.model_version": version,
                    "bnpl.kind": "arm-metrics",
                    "bnpl.model_name": self.registry.model_name,
                    FIRST_WINDOW_TAG: str(window),
                    "mlflow.note.content": (
                        f"Decisions of the {arm} arm by {self.registry.model_name} v{version}, one point per "
                        f"{self.window_s:g} s window of decision time (step = window index from the first, "
                        f"timestamp = window end). Quantiles within {QUANTILE_RELATIVE_ERROR:.0%} relative error."
                    ),
                },
            )
            run_id, first = str(run.info.run_id), window
            from mlflow.entities import Param

            params = [
                Param("arm", arm),
                Param("model_version", version),
                Param("model_name", self.registry.model_name),
                Param("window_seconds", str(self.window_s)),
                Param("quantile_relative_error", str(QUANTILE_RELATIVE_ERROR)),
                Param("decision_policy", FALLBACK_POLICY if version == "rules" else THRESHOLD_POLICY),
            ]
            for tag in ("bnpl.traffic_allocation", "bnpl.arm_models"):
                if tag in exp.tags:
                    params.append(Param(tag.removeprefix("bnpl."), exp.tags[tag]))
            client.log_batch(run_id, params=params)
        self._runs[cache_key] = (run_id, first)
        return run_id, first

    def _log_window(self, experiment: str, arm: str, version: str, window: int, data: dict[str, float]) -> None:
        from mlflow.entities import Metric

        n = data.get("n", 0.0)
        if not n:
            return
        scored = data.get("scored", 0.0)
        score_hist = {k[3:]: int(v) for k, v in data.items() if k.startswith("qs:")}
        lat_hist = {k[3:]: int(v) for k, v in data.items() if k.startswith("ql:")}
        values = {
            "requests": n,
            "approve_rate": data.get("d:approve", 0.0) / n,
            "review_rate": data.get("d:manual_review", 0.0) / n,
            "deny_rate": data.get("d:deny", 0.0) / n,
            "unknown_category_rate": data.get("unknown", 0.0) / n,
            "latency_p50_ms": LATENCY_BUCKETS.quantile(lat_hist, 0.5),
            "latency_p99_ms": LATENCY_BUCKETS.quantile(lat_hist, 0.99),
        }
        if scored:
            mean = data.get("sum_p", 0.0) / scored
            values.update(
                {
                    "score_mean": mean,
                    "score_std": math.sqrt(max(0.0, data.get("sum_p2", 0.0) / scored - mean * mean)),
                    "score_p50": SCORE_BUCKETS.quantile(score_hist, 0.5),
                    "score_p90": SCORE_BUCKETS.quantile(score_hist, 0.9),
                    "score_p99": SCORE_BUCKETS.quantile(score_hist, 0.99),
                }
            )
        end_ms = int((window + 1) * self.window_s * 1000)
        run_id, first = self._run(experiment, arm, version, window)
        if window < first:  # cannot happen (windows close in order); kept visible rather than logged at step < 0
            log.warning("window %d precedes run %s's first window %d; logged at step 0", window, run_id, first)
        metrics = [Metric(k, float(v), end_ms, max(0, window - first)) for k, v in values.items() if not math.isnan(v)]
        self._client.log_batch(run_id, metrics=metrics)
        # The run covers its windows so far: FINISHED at the last one's end (a later window moves the end on).
        self._client.set_terminated(run_id, "FINISHED", end_time=end_ms)
