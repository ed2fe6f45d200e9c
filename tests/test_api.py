"""The decision API over real HTTP, with real Redis and models from a real MLflow registry."""

from __future__ import annotations

import asyncio
import io

import orjson
import pytest
import redis.asyncio as aioredis

from app.keys import PUBLISHER, SETTINGS
from common.keys import decode_entry
from datagen import ORIGINAL_EXAMPLE, generate
from schemas import PredictionEvent
from schemas.codec import decompress
from schemas.events import decode_event
from tests.conftest import api_settings, start_api

WRONG_TYPES = {
    "transaction_id": 12,
    "customer_id": None,
    "amount": "450",
    "transaction_timestamp": 1727451000,
    "customer_credit_score_range": 3,
    "customer_age_bracket": ["25-34"],
    "customer_income_bracket": {"v": 1},
    "customer_verification_level": True,
    "customer_tenure_days": "180",
    "device_type": 1.5,
    "device_is_trusted": "true",
    "product_category": False,
    "product_risk_category": 0,
    "risk_score": "0.65",
    "risk_level": [],
    "risk_scenario": 7,
    "payment_provider": None,
    "installment_count": 4.5,
    "payment_credit_limit": "1500",
    "price_comparison_time": [60],
    "purchase_context": {},
}


async def _stream_events(url: str, stream: str) -> list[PredictionEvent]:
    client = aioredis.from_url(url)
    try:
        entries = await client.xrange(stream)
    finally:
        await client.aclose()
    return [decode_event(e.version, decompress(e.codec, e.payload)) for e in (decode_entry(f) for _, f in entries)]


async def _drained(api) -> None:
    publisher = api.app[PUBLISHER]
    for _ in range(500):
        if publisher.queue_depth == 0 and not publisher.spool.pending:
            await asyncio.sleep(0.02)
            return
        await asyncio.sleep(0.01)
    raise AssertionError("publisher did not drain")


async def test_original_example_request_is_decided(api):
    status, body = await api.assess(ORIGINAL_EXAMPLE)
    assert status == 200
    assert body["transaction_id"] == "txn_api_test_001"
    assert body["business_decision"] in ("approve", "manual_review", "deny")
    assert body["risk_level"] in ("LOW", "MEDIUM", "HIGH")
    assert set(body["all_predictions"]) == {"champion", "challenger"}
    assert all(isinstance(v, float) for v in body["all_predictions"].values())
    assert body["model_version"] == body["model_versions"]["champion"]
    assert body["deployment_mode"] == "champion"
    assert body["decision_policy"] == "threshold-v1"
    assert body["default_probability"] == body["all_predictions"]["champion"]
    assert body["unknown_fields"] == []
    assert body["risk_thresholds"]["review"] < body["risk_thresholds"]["deny"]


async def test_unknown_provider_is_scored_and_listed(api):
    status, body = await api.assess({**ORIGINAL_EXAMPLE, "payment_provider": "zip"})
    assert status == 200
    assert body["unknown_fields"] == ["payment_provider"]
    await _drained(api)
    settings = api.app[SETTINGS]
    events = await _stream_events(settings.streams.redis_url, settings.keys.predictions())
    assert [e.decision.unknown_fields for e in events] == [["payment_provider"]]
    assert events[0].prediction_id == body["prediction_id"]


async def test_denials_and_reviews_carry_reason_codes(api):
    data = generate(400, seed=5)
    seen = set()
    for i in range(len(data)):
        status, body = await api.assess(data.request(i))
        assert status == 200
        seen.add(body["business_decision"])
        if body["business_decision"] == "approve":
            assert body["reason_codes"] == []
        else:
            assert 1 <= len(body["reason_codes"]) <= 4
            assert all(r["statement"] for r in body["reason_codes"])
            contributions = [r["contribution"] for r in body["reason_codes"] if r["contribution"] is not None]
            assert contributions == sorted(contributions, reverse=True)
            assert all(c > 0 for c in contributions)
    assert seen == {"approve", "manual_review", "deny"}


async def test_amount_over_limit_is_denied_by_policy(api):
    status, body = await api.assess({**ORIGINAL_EXAMPLE, "amount": 1600.0, "payment_credit_limit": 1500.0})
    assert status == 200
    assert body["business_decision"] == "deny"
    assert body["reason_codes"][0]["code"] == "AMOUNT_EXCEEDS_CREDIT_LIMIT"


@pytest.mark.parametrize("body", [b"{bad", b"", b"[1, 2", b'{"amount": 1,}', b"\xff\xfe"])
async def test_malformed_json_is_400(api, body):
    status, payload = await api.assess(body)
    assert status == 400
    assert payload["error"] == "malformed_json"


async def test_missing_or_wrong_key_is_401_and_bearer_works(api):
    assert (await api.assess(ORIGINAL_EXAMPLE, key=None))[0] == 401
    assert (await api.assess(ORIGINAL_EXAMPLE, key="wrong"))[0] == 401
    headers = {"Authorization": "Bearer test-key"}
    async with api.session.post(api.url("/v1/bnpl/risk-assessment"), json=ORIGINAL_EXAMPLE, headers=headers) as r:
        assert r.status == 200
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        async with api.session.get(api.url(path)) as r:
            assert r.status == 200, path


async def test_open_paths_are_configurable(tmp_path, redis_server, key_prefix, loaded_models):
    from decision.engine import DecisionEngine

    settings = api_settings(tmp_path, redis_server.url, key_prefix, open_paths=("/healthz",))
    client, stop = await start_api(settings, DecisionEngine(loaded_models))
    try:
        async with client.session.get(client.url("/metrics")) as r:
            assert r.status == 401
        async with client.session.get(client.url("/healthz")) as r:
            assert r.status == 200
    finally:
        await stop()


async def test_oversize_body_is_413(tmp_path, redis_server, key_prefix, loaded_models):
    from decision.engine import DecisionEngine

    settings = api_settings(tmp_path, redis_server.url, key_prefix, max_body_bytes=2_000)
    client, stop = await start_api(settings, DecisionEngine(loaded_models))
    try:
        status, payload = await client.assess({**ORIGINAL_EXAMPLE, "customer_id": "c" * 3_000})
        assert status == 413
        assert payload["error"] == "body_too_large"
        assert (await client.assess(ORIGINAL_EXAMPLE))[0] == 200
    finally:
        await stop()


@pytest.mark.parametrize("field", sorted(WRONG_TYPES))
async def test_every_field_with_a_wrong_type_is_422_with_its_path(api, field):
    status, payload = await api.assess({**ORIGINAL_EXAMPLE, field: WRONG_TYPES[field]})
    assert status == 422
    assert payload["error"] == "validation_error"
    assert [f["path"] for f in payload["fields"]] == [f"$.{field}"]


async def test_422_lists_every_bad_field(api):
    body = {**ORIGINAL_EXAMPLE, "amount": -5, "risk_score": 1.2, "installment_count": 0, "device_is_trusted": "x"}
    del body["customer_id"]
    status, payload = await api.assess(body)
    assert status == 422
    paths = {f["path"] for f in payload["fields"]}
    assert paths == {"$.amount", "$.risk_score", "$.installment_count", "$.device_is_trusted", "$.customer_id"}
    status, payload = await api.assess([ORIGINAL_EXAMPLE])
    assert status == 422
    assert payload["fields"][0]["path"] == "$"


async def test_batch_endpoint_decides_in_order_and_validates_items(api):
    data = generate(5, seed=9)
    bodies = [data.request(i) for i in range(5)]
    url = api.url("/v1/bnpl/risk-assessment/batch")
    headers = {"X-API-Key": "test-key", "Content-Type": "application/json"}
    async with api.session.post(url, data=orjson.dumps({"requests": bodies}), headers=headers) as r:
        assert r.status == 200
        results = (await r.json())["results"]
    assert [x["transaction_id"] for x in results] == [b["transaction_id"] for b in bodies]
    bad = [*bodies[:2], {**bodies[2], "amount": "no"}]
    async with api.session.post(url, data=orjson.dumps({"requests": bad}), headers=headers) as r:
        assert r.status == 422
        assert [f["path"] for f in (await r.json())["fields"]] == ["$.requests[2].amount"]
    too_many = {"requests": [bodies[0]] * 1001}
    async with api.session.post(url, data=orjson.dumps(too_many), headers=headers) as r:
        assert r.status == 422
        assert (await r.json())["fields"][0]["path"] == "$.requests"


async def test_batch_cap_comes_from_settings(tmp_path, redis_server, key_prefix, loaded_models):
    from decision.engine import DecisionEngine

    settings = api_settings(tmp_path, redis_server.url, key_prefix, batch_max=2000)
    client, stop = await start_api(settings, DecisionEngine(loaded_models))
    data = generate(1_500, seed=21)
    url = client.url("/v1/bnpl/risk-assessment/batch")
    headers = {"X-API-Key": "test-key", "Content-Type": "application/json"}
    try:
        body = io.BytesIO(orjson.dumps({"requests": [data.request(i) for i in range(1_500)]}))
        async with client.session.post(url, data=body, headers=headers) as r:
            assert r.status == 200
            assert len((await r.json())["results"]) == 1_500
        over = io.BytesIO(orjson.dumps({"requests": [data.request(0)] * 2_001}))
        async with client.session.post(url, data=over, headers=headers) as r:
            assert r.status == 422
            assert (await r.json())["fields"][0]["message"] == "Expected 1 to 2000 requests, got 2001"
        async with client.session.get(client.url("/openapi.json")) as r:
            doc = await r.json()
        assert doc["components"]["schemas"]["BatchRequest"]["properties"]["requests"]["maxItems"] == 2000
    finally:
        await stop()


def test_batch_cap_is_read_from_the_environment():
    from common.settings import Settings

    assert Settings.from_env({"BNPL_BATCH_MAX": "2000"}).api.batch_max == 2000


async def test_events_reach_the_stream_exactly_once(api):
    data = generate(300, seed=13)
    ids = []
    for i in range(len(data)):
        status, body = await api.assess(data.request(i))
        assert status == 200
        ids.append(body["prediction_id"])
    await _drained(api)
    settings = api.app[SETTINGS]
    events = await _stream_events(settings.streams.redis_url, settings.keys.predictions())
    assert [e.prediction_id for e in events] == ids  # in order, once each
    assert ids == sorted(ids)  # UUIDv7 ids are time-ordered
    first = events[0]
    assert first.schema_version == 2
    assert len(first.features) == 36
    assert set(first.decision.all_predictions) == {"champion", "challenger"}
    assert first.request.transaction_id == data.request(0)["transaction_id"]


async def test_openapi_is_generated_from_the_schemas(api):
    async with api.session.get(api.url("/openapi.json")) as r:
        doc = await r.json()
    assert "/v1/bnpl/risk-assessment" in doc["paths"]
    request_schema = doc["components"]["schemas"]["RiskAssessmentRequest"]
    assert set(request_schema["required"]) == set(ORIGINAL_EXAMPLE)
    assert request_schema["properties"]["risk_score"]["maximum"] == 1


async def test_metrics_count_requests_decisions_and_events(api):
    await api.assess(ORIGINAL_EXAMPLE)
    await api.assess(b"{bad")
    await _drained(api)
    async with api.session.get(api.url("/metrics")) as r:
        text = await r.text()
    assert 'bnpl_http_requests_total{route="/v1/bnpl/risk-assessment",status="200"} 1.0' in text
    assert 'bnpl_http_requests_total{route="/v1/bnpl/risk-assessment",status="400"} 1.0' in text
    assert "bnpl_events_published_total 1.0" in text
    assert 'bnpl_model_info{alias="champion"' in text
    assert "bnpl_request_latency_seconds_bucket" in text


async def test_without_models_the_fallback_policy_decides_and_readyz_is_degraded(tmp_path, redis_server, key_prefix):
    settings = api_settings(tmp_path, redis_server.url, key_prefix)
    client, stop = await start_api(settings, engine=None)
    try:
        status, body = await client.assess({**ORIGINAL_EXAMPLE, "risk_level": "very_high"})
        assert status == 200
        assert body["decision_policy"] == "rules-fallback-v1"
        assert body["deployment_mode"] == "fallback"
        assert body["business_decision"] == "deny"
        assert body["default_probability"] is None
        status, body = await client.assess({**ORIGINAL_EXAMPLE, "risk_score": 0.1, "risk_level": "low"})
        assert body["business_decision"] == "approve"
        async with client.session.get(client.url("/readyz")) as r:
            assert r.status == 200
            assert (await r.json())["status"] == "degraded"
        async with client.session.get(client.url("/readyz?strict=1")) as r:
            assert r.status == 503
    finally:
        await stop()
