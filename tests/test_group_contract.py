"""One check suite run over every consumer group's handler, built exactly as ``bnpl consume <group>`` builds it,
with real Redis, DuckDB, MLflow (SQLite) and a real webhook endpoint.

Every handler must: name its group and read only streams named by ``common.keys``; start, tick and close; take an
empty batch; report an undecodable entry as failed without failing the batch; leave its sink unchanged when the same
batch is handled again (redelivery); and read version 1 prediction events like current ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
import uuid_utils
from aiohttp import web

from alerting.signing import verify
from common.keys import decode_entry, encode_entry
from common.redis_server import free_port
from common.settings import Settings
from consumers.base import BatchHandler, Entry
from consumers.groups import GROUPS
from consumers.runtime import ConsumerWorker
from datagen import NewCategory, generate
from datagen.outcomes import funded_outcomes
from decision.engine import DecisionEngine
from producers.outcomes import outcome_events
from schemas import parse_request
from schemas.alerts import ALERT_VERSION, Alert
from schemas.outcomes import OUTCOME_VERSION, parse_outcome
from traffic.events import as_v1
from warehouse.duckdb_store import DuckDBWarehouse

SECRET = "contract-secret"
Probe = Callable[[], Awaitable[Any]]


class _CountingWebhook:
    """A real HTTP endpoint that verifies signatures and counts every delivery (duplicates included)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.deliveries = 0
        self.bad_signatures = 0
        self._runner: web.AppRunner | None = None

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(SECRET, body, request.headers["X-Signature"], request.headers["X-Timestamp"]):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.deliveries += 1
        return web.json_response({"status": "ok"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._post)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def webhook():
    hook = _CountingWebhook()
    await hook.start()
    yield hook
    await hook.stop()


def _alerts(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        alert = Alert(
            alert_id=str(uuid_utils.uuid7()),
            alert_key=f"contract:{i}",
            kind="contract",
            severity="info",
            statistic="x",
            value=float(i),
            threshold=0.0,
            window="-",
            first_seen="2026-01-01T00:00:00+00:00",
            message=f"contract alert {i}",
        )
        out.append((alert.alert_id, msgspec.json.encode(alert)))
    return out


async def _read_pending(redis: Any, worker: ConsumerWorker, stream: str, n: int) -> list[Entry]:
    """What the runtime hands a handler: entries delivered to the group (pending), in order."""
    reply = await redis.xreadgroup(worker.group, worker.name, {stream: ">"}, count=n)
    return [Entry(stream, i.decode(), fields) for i, fields in reply[0][1]]


async def _ack(redis: Any, worker: ConsumerWorker, entries: list[Entry], failed: dict[str, str]) -> None:
    ids = [e.id for e in entries if e.id not in failed]
    if ids:
        await redis.xack(entries[0].stream, worker.group, *ids)


def _probe(name: str, settings: Settings, redis: Any, webhook: _CountingWebhook) -> Probe:
    """What each group's sink holds, observed from outside the handler."""
    keys = settings.keys

    async def warehouse() -> Any:
        assert settings.warehouse.duckdb_path is not None
        return DuckDBWarehouse(settings.warehouse.duckdb_path).query("SELECT count(*) FROM prediction_logs")[0][0]

    async def mlflow() -> Any:
        counted = 0
        for shard in range(keys.shards):
            for key in await redis.zrange(keys.mlflow_open(shard), 0, -1):
                counted += int(await redis.hget(key, "n") or 0)
        return counted

    async def drift() -> Any:
        return await redis.xlen(keys.alerts())

    async def alert_sender() -> Any:
        return webhook.deliveries

    async def outcomes() -> Any:
        assert settings.warehouse.duckdb_path is not None
        db = DuckDBWarehouse(settings.warehouse.duckdb_path)
        return db.query(
            "SELECT count(*), sum(superseded), string_agg(outcome_id, ',' ORDER BY outcome_id) FROM outcomes"
        )

    probes = {"warehouse": warehouse, "mlflow": mlflow, "drift": drift, "alert-sender": alert_sender}
    return {**probes, "outcomes": outcomes}[name]


@pytest.mark.parametrize("name", sorted(GROUPS))
async def test_every_group_handler_keeps_the_contract(
    name, tmp_path, trained_registry, loaded_models, redis_server, key_prefix, webhook
):
    registry_settings, _ = trained_registry
    settings = registry_settings.replace(
        key_prefix=key_prefix,
        redis_url=redis_server.url,
        duckdb_path=tmp_path / "wh.duckdb",
        webhook_urls=(f"http://127.0.0.1:{webhook.port}/hook",),
        webhook_secret=SECRET,
        window=200,
        schedule_s=0,
    )
    keys = settings.keys
    redis = aioredis.from_url(redis_server.url)
    handler: BatchHandler = GROUPS[name](settings, redis)
    worker = ConsumerWorker(redis, keys, handler, settings.consumers, name="contract")
    probe = _probe(name, settings, redis, webhook)
    try:
        assert handler.group == name
        assert handler.streams
        assert set(handler.streams) <= {*keys.prediction_streams(), keys.alerts(), keys.outcomes()}
        (stream,) = handler.streams
        await worker.ensure_groups()
        await handler.start()
        assert (await handler.handle([])).failed == {}
        await handler.tick()

        v1_records: list[tuple[str, bytes]] = []
        if stream == keys.alerts():
            records = _alerts(5)
            version = ALERT_VERSION
        elif stream == keys.outcomes():  # loans, some defaulted then charged off (a superseding outcome)
            data = generate(400, seed=72)
            decisions = dict.fromkeys(data.columns["transaction_id"].tolist(), "approve")
            found = [parse_outcome(r) for r in funded_outcomes(data, decisions, 0.5, 72)]
            records = [(e.outcome_id, msgspec.json.encode(e)) for e in outcome_events(found, "api")]
            version = OUTCOME_VERSION
        else:  # half of the second half use a payment provider the models never saw: the drift group alerts
            data = generate(600, seed=71, drifts=[NewCategory(start_index=300, share=0.5)])
            engine = DecisionEngine(loaded_models)
            events = [engine.decide(parse_request(data.request(i)))[1] for i in range(len(data))]
            records = [(e.prediction_id, msgspec.json.encode(e)) for e in events[:500]]
            v1_records += [(e.prediction_id, msgspec.json.encode(as_v1(e))) for e in events[500:]]
            version = 2
        for record_id, payload in records:
            await redis.xadd(stream, encode_entry(record_id, payload, version))
        await redis.xadd(stream, encode_entry("broken", b'{"not": "an event', version))
        entries = await _read_pending(redis, worker, stream, len(records) + 1)

        result = await handler.handle(entries)
        assert list(result.failed) == [entries[-1].id]  # only the undecodable entry, with why
        assert "undecodable" in result.failed[entries[-1].id] or "unloadable" in result.failed[entries[-1].id]
        if not result.acked:
            await _ack(redis, worker, entries, result.failed)
        landed = await probe()
        assert landed  # the batch reached the sink
        again = await handler.handle(entries[:-1])  # a redelivery of the same entries
        assert again.failed == {}
        await handler.tick()
        assert await probe() == landed  # no row, count, alert or delivery twice

        if v1_records:  # events published by the previous version decode like current ones
            for record_id, payload in v1_records:
                await redis.xadd(stream, encode_entry(record_id, payload, 1))
            old = await _read_pending(redis, worker, stream, len(v1_records))
            assert [decode_entry(e.fields).version for e in old] == [1] * len(v1_records)
            assert (await handler.handle(old)).failed == {}
        await handler.close()
        assert webhook.bad_signatures == 0
    finally:
        await redis.aclose()
