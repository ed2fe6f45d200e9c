"""Outcomes in: the API door and the file loader publish to the outcome stream, the outcomes group lands each loan's
current outcome exactly once (real Redis, real DuckDB, worker processes killed with SIGKILL)."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis

from bnpl_cli.outcomes import load, validate_file
from common.keys import Keys, decode_entry
from consumers.outcomes import OutcomesHandler
from consumers.runtime import ConsumerWorker
from datagen import generate
from datagen.outcomes import funded, funded_outcomes, write_outcomes
from producers.outcomes import outcome_events
from schemas.outcomes import OUTCOME_RANK, Outcome, parse_outcome
from tests.conftest import api_settings, make_settings, start_api
from tests.streams import kill_workers_mid_batch, wait_group_drained, worker_env
from tests.test_consumers import FAST
from traffic.landing import decide_into, land_outcomes
from warehouse.base import CurrentOutcome, plan_outcomes
from warehouse.duckdb_store import DuckDBWarehouse


@pytest.fixture
async def redis(redis_server):
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


def _o(txn: str, outcome: str, day: str, amount: float = 0.0) -> Outcome:
    return Outcome(transaction_id=txn, customer_id="c", outcome=outcome, outcome_date=day, amount_recovered=amount)  # type: ignore[arg-type]


def _records(n: int, seed: int = 3) -> list[dict]:
    """``n`` outcome records of generated loans, every one funded (defaults later charged off included)."""
    data = generate(int(n * 1.1) + 50, seed=seed)
    decisions = dict.fromkeys(data.columns["transaction_id"].tolist(), "approve")
    return funded_outcomes(data, decisions, 0.5, seed)[:n]


def _expected(records: list[dict]) -> dict[str, str]:
    """Each loan's winning outcome: latest date, then the graver outcome."""
    best: dict[str, tuple[str, int, str]] = {}
    for r in records:
        key = (r["outcome_date"], OUTCOME_RANK[r["outcome"]], r["outcome"])
        if r["transaction_id"] not in best or key > best[r["transaction_id"]]:
            best[r["transaction_id"]] = key
    return {t: k[2] for t, k in best.items()}


def _table(path: Path) -> dict[str, str]:
    return dict(DuckDBWarehouse(path).query("SELECT transaction_id, outcome FROM outcomes"))


# --- precedence --------------------------------------------------------------------------------------------------
def test_a_later_outcome_supersedes_and_the_same_again_changes_nothing():
    first = outcome_events([_o("t1", "defaulted", "2026-02-01", 10)], "api")
    rows, result = plan_outcomes(first, {})
    assert result.inserted == 1
    assert rows[0]["outcome"] == "defaulted"
    assert rows[0]["bad"]
    held = CurrentOutcome(rows[0]["outcome_id"], rows[0]["outcome_date"], rows[0]["received_at"], "defaulted", 0)
    again = outcome_events([_o("t1", "defaulted", "2026-02-01", 10)], "loader")  # re-sent through the other door
    assert plan_outcomes(again, {"t1": held}) == ([], type(result)(unchanged=1))
    later = outcome_events([_o("t1", "charged_off", "2026-04-01", 10)], "api")
    rows, result = plan_outcomes(later, {"t1": held})
    assert result.superseded == 1
    assert rows[0]["outcome"] == "charged_off"
    assert rows[0]["superseded"] == 1
    older = outcome_events([_o("t1", "paid", "2026-01-15", 50)], "api")
    assert plan_outcomes(older, {"t1": held})[1].unchanged == 1
    same_day = outcome_events([_o("t1", "paid", "2026-02-01", 50), _o("t2", "paid", "2026-02-01")], "api")
    rows, result = plan_outcomes(same_day, {"t1": held})  # on the same date the graver outcome stays
    assert [r["transaction_id"] for r in rows] == ["t2"]
    assert result.unchanged == 1


def test_only_funded_credit_gets_outcomes_and_reviews_at_the_set_rate():
    data = generate(6_000, seed=4)
    rng = np.random.default_rng(1)
    kinds = rng.choice(["approve", "manual_review", "deny"], size=len(data), p=[0.7, 0.2, 0.1])
    decisions = dict(zip(data.columns["transaction_id"].tolist(), kinds.tolist(), strict=True))
    records = list(funded_outcomes(data, decisions, 0.3, seed=4))
    with_outcome = {r["transaction_id"] for r in records}
    by_kind = {k: {t for t, d in decisions.items() if d == k} for k in ("approve", "manual_review", "deny")}
    assert not with_outcome & by_kind["deny"]
    assert by_kind["approve"] <= with_outcome
    share = len(with_outcome & by_kind["manual_review"]) / len(by_kind["manual_review"])
    assert 0.26 < share < 0.34
    assert funded(kinds, 0.3, 4).sum() == len(with_outcome)
    assert {r["outcome"] for r in records} == {"paid", "defaulted", "charged_off", "partially_paid"}
    for r in records:
        parse_outcome(r)  # every record is a valid outcome
    cut = datetime(2025, 3, 1, tzinfo=UTC)
    assert all(r["outcome_date"] <= "2025-03-01T00:00:00Z" for r in funded_outcomes(data, decisions, 0.3, 4, cut))


# --- warehouse --------------------------------------------------------------------------------------------------
def test_duckdb_keeps_unknown_transactions_and_counts_them(tmp_path):
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    wh.ensure_tables()
    result = wh.insert_outcomes(
        outcome_events([_o("never-decided", "paid", "2026-01-01"), _o("x", "defaulted", "2026-01-02")], "api")
    )
    assert result.inserted == 2
    counts = wh.outcome_counts()
    assert counts == {"outcomes": 2, "without_decision": 2, "bad": 1}
    assert wh.insert_outcomes(outcome_events([_o("x", "defaulted", "2026-01-02")], "api")).unchanged == 1
    assert wh.outcome_counts()["outcomes"] == 2


# --- the group, killed mid-batch ---------------------------------------------------------------------------------
async def test_sigkill_outcome_workers_three_times_every_outcome_lands_once(tmp_path, redis_server, redis, key_prefix):
    records = _records(20_000)
    path = tmp_path / "outcomes.jsonl"
    write_outcomes(records, path)
    settings = make_settings(tmp_path / "data", redis_url=redis_server.url, key_prefix=key_prefix)
    assert await asyncio.to_thread(load, settings, path, None, False) == 0
    keys = Keys(key_prefix)
    stream = keys.outcomes()
    assert await redis.xlen(stream) == 20_000
    db = tmp_path / "wh.duckdb"
    env = worker_env(
        redis_server.url,
        key_prefix,
        db,
        tmp_path / "data",
        BNPL_CONSUMER_BATCH="500",
        BNPL_PERFORMANCE_SCHEDULE_S="0",
    )
    await kill_workers_mid_batch(redis, stream, "outcomes", env, kills=3, seed=7)
    expected = _expected(records)
    assert _table(db) == expected  # every loan once, with its winning outcome
    superseded = DuckDBWarehouse(db).query("SELECT sum(superseded) FROM outcomes")[0][0]
    assert 0 < superseded <= len(records) - len(expected)  # charge-offs arriving after their default

    # the same file again: 20,000 more entries in the stream, no count changes in the table
    assert await asyncio.to_thread(load, settings, path, None, False) == 0
    assert await redis.xlen(stream) == 40_000
    handler = OutcomesHandler(DuckDBWarehouse(db), settings.replace(duckdb_path=db, schedule_s=0), redis)
    worker = ConsumerWorker(redis, keys, handler, FAST, name="again")
    task = asyncio.create_task(worker.run())
    try:
        await wait_group_drained(redis, stream, "outcomes", seconds=120)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
    assert _table(db) == expected
    assert handler.totals.inserted == 0
    assert handler.totals.superseded == 0
    assert handler.totals.unchanged >= 20_000  # every entry seen (a slow batch may be claimed and seen twice)


def test_the_loader_validates_every_line_and_loads_nothing_on_errors(tmp_path, redis_server, key_prefix):
    path = tmp_path / "bad.jsonl"
    good = {"transaction_id": "t1", "customer_id": "c1", "outcome": "paid", "outcome_date": "2026-01-02"}
    path.write_bytes(orjson.dumps(good) + b"\n" + b'{"transaction_id": "t2", "outcome": "lost"}\n' + b"{not json\n")
    outcomes, errors = validate_file(path, "file:bad.jsonl")
    assert len(outcomes) == 1
    assert outcomes[0].source == "file:bad.jsonl"
    assert errors[0].startswith("line 2:")
    assert errors[1].startswith("line 3:")
    settings = make_settings(tmp_path / "d", redis_url=redis_server.url, key_prefix=key_prefix)
    assert load(settings, path, None, skip_invalid=False) == 2
    csv_path = tmp_path / "ok.csv"
    assert write_outcomes(_records(30), csv_path) == 30
    outcomes, errors = validate_file(csv_path, None)
    assert len(outcomes) == 30
    assert not errors
    assert isinstance(outcomes[0].amount_recovered, float)


# --- the API door ----------------------------------------------------------------------------------------------------
async def test_post_outcomes_stores_them_and_rejects_bad_input_clearly(
    tmp_path, redis_server, key_prefix, loaded_models
):
    from decision.engine import DecisionEngine

    settings = api_settings(tmp_path, redis_server.url, key_prefix, outcomes_batch_max=5)
    client, stop = await start_api(settings, DecisionEngine(loaded_models))
    redis = aioredis.from_url(redis_server.url)
    url = client.url("/v1/bnpl/outcomes")
    headers = {"X-API-Key": "test-key"}
    body = {
        "outcomes": [
            {"transaction_id": f"t{i}", "customer_id": "c", "outcome": "paid", "outcome_date": "2026-03-01"}
            for i in range(3)
        ]
    }
    try:
        async with client.session.post(url, json=body, headers=headers) as r:
            assert r.status == 202
            answer = await r.json()
        assert answer["accepted"] == 3
        assert len(set(answer["outcome_ids"])) == 3
        entries = await redis.xrange(Keys(key_prefix).outcomes())
        assert [decode_entry(f).record_id for _, f in entries] == answer["outcome_ids"]
        async with client.session.post(url, json=body) as r:
            assert r.status == 401
        bad = {
            "outcomes": [
                {
                    "transaction_id": "t",
                    "customer_id": "c",
                    "outcome": "lost",
                    "outcome_date": "2026-13-01",
                    "amount_recovered": -1,
                }
            ]
        }
        async with client.session.post(url, json=bad, headers=headers) as r:
            assert r.status == 422
            paths = [f["path"] for f in (await r.json())["fields"]]
        assert paths == ["$.outcomes[0].outcome", "$.outcomes[0].amount_recovered", "$.outcomes[0].outcome_date"]
        async with client.session.post(url, json={"outcomes": body["outcomes"] * 2}, headers=headers) as r:
            assert r.status == 422  # above BNPL_OUTCOMES_BATCH_MAX
        for raw in (b'{"outcomes": [', b'{"outcomes": ["\xff"]}', b"[" * 5_000):
            async with client.session.post(url, data=raw, headers={**headers, "Content-Type": "application/json"}) as r:
                assert r.status == 400
        async with client.session.post(
            url, data=io.BytesIO(b"x" * (3 * 1024 * 1024)), headers={**headers, "Content-Type": "application/json"}
        ) as r:
            assert r.status == 413
        assert await redis.xlen(Keys(key_prefix).outcomes()) == 3  # nothing of the bad calls was kept
    finally:
        await redis.aclose()
        await stop()


async def test_post_outcomes_answers_503_when_redis_cannot_take_them(
    tmp_path, dedicated_redis, key_prefix, loaded_models
):
    from decision.engine import DecisionEngine

    settings = api_settings(tmp_path, dedicated_redis.url, key_prefix)
    client, stop = await start_api(settings, DecisionEngine(loaded_models))
    body = {"outcomes": [{"transaction_id": "t", "customer_id": "c", "outcome": "paid", "outcome_date": "2026-03-01"}]}
    try:
        redis = aioredis.from_url(dedicated_redis.url)
        await redis.config_set("maxmemory", 1)
        await redis.config_set("maxmemory-policy", "noeviction")
        async with client.session.post(
            client.url("/v1/bnpl/outcomes"), json=body, headers={"X-API-Key": "test-key"}
        ) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "5"
            assert "retryable" in (await r.json())["message"]
        await redis.config_set("maxmemory", 0)
        async with client.session.post(
            client.url("/v1/bnpl/outcomes"), json=body, headers={"X-API-Key": "test-key"}
        ) as r:
            assert r.status == 202
        await redis.aclose()
    finally:
        await stop()


async def test_the_group_runs_the_due_analysis_once_per_date(
    tmp_path, redis, redis_server, key_prefix, trained_registry, loaded_models
):

    from decision.engine import DecisionEngine
    from performance.analysis import due_date, windows

    base, _ = trained_registry
    db = tmp_path / "wh.duckdb"
    settings = base.replace(
        duckdb_path=db, redis_url=redis_server.url, key_prefix=key_prefix, time_column="transaction", schedule_s=0.01
    )
    due = due_date(datetime.now(UTC), "weekly")
    cohort = windows(due, "weekly", settings.performance.maturity_days)
    data = generate(3_000, seed=31, start=cohort.cohort_start, days=7)
    wh = DuckDBWarehouse(db)
    wh.ensure_tables()
    decisions = decide_into(wh, DecisionEngine(loaded_models), data)
    land_outcomes(wh, data, decisions, 0.5, seed=31, via="api")

    handler = OutcomesHandler(wh, settings, redis)
    await handler.tick()
    marker = settings.keys.performance_done(f"weekly:{due.isoformat()}")
    rows = int(await redis.get(marker))
    stored = wh.query("SELECT count(*), max(computed_at) FROM model_metrics")[0]
    assert rows == stored[0] > 20
    handler._next_check = 0.0
    await handler.tick()  # due again, but already analysed: nothing runs
    assert wh.query("SELECT count(*), max(computed_at) FROM model_metrics")[0] == stored


def test_simulate_writes_outcomes_of_the_decided_funded_loans_only(tmp_path, loaded_models, capsys):

    from bnpl_cli.main import main
    from decision.engine import DecisionEngine

    data = generate(600, seed=4)
    db = tmp_path / "data" / "warehouse.duckdb"
    wh = DuckDBWarehouse(db)
    wh.ensure_tables()
    decision = decide_into(wh, DecisionEngine(loaded_models), data, stop=400)  # the last 200 never decided
    out = tmp_path / "o.csv"
    args = ["--data-dir", str(tmp_path / "data"), "outcomes", "simulate", "--rows", "600", "--seed", "4"]
    assert main([*args, "--out", str(out)]) == 0
    assert "decided transactions" in capsys.readouterr().out
    outcomes, errors = validate_file(out, None)
    assert not errors
    kinds = {decision.get(o.transaction_id) for o in outcomes}
    assert kinds <= {"approve", "manual_review"}
    approved = {t for t, d in decision.items() if d == "approve"}
    assert approved <= {o.transaction_id for o in outcomes}
