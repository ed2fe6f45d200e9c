"""A real `mlflow server` on PostgreSQL with the basic-auth app (what compose.yaml runs): training, the promotion
gate, alias resolution, the API's registry watcher and the mlflow group work through it; a read-only user reads
and is refused every write.

Needs PostgreSQL on 127.0.0.1:5432 with trust auth (this machine and CI run one); the test makes a database of its
own and drops it afterwards."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from mlflow.exceptions import MlflowException

from app.keys import ENGINE as ENGINE_KEY
from common.redis_server import free_port
from common.settings import ConsumerSettings
from consumers.mlflow_group import MlflowMetricsHandler
from consumers.runtime import ConsumerWorker
from decision.engine import DecisionEngine
from decision.models import ModelSet
from registry import mlflow_client, resolve_alias
from registry.experiments import start_experiment
from tests.conftest import api_settings, make_settings, start_api
from tests.streams import add_events, make_events, wait_group_drained

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


def _postgres(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(**PG)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`mlflow server` on a fresh PostgreSQL database with basic auth; yields (URL, admin password)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    database = f"bnpl_test_{uuid.uuid4().hex[:10]}"
    _postgres(f'CREATE DATABASE "{database}"')
    password = secrets.token_urlsafe(12)
    config = root / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--app-name",
            "basic-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        yield url, password
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        _postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _as(monkeypatch: pytest.MonkeyPatch, user: str, password: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def _create_user(url: str, admin_password: str, user: str, password: str) -> None:
    import base64
    import json

    token = base64.b64encode(f"admin:{admin_password}".encode()).decode()
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/users/create",
        data=json.dumps({"username": user, "password": password}).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


@pytest.mark.timeout(600)
async def test_training_registry_watcher_and_mlflow_group_through_mlflow_server_on_postgres(
    mlflow_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server, key_prefix
):
    from governance.aliases import promote
    from training.train import train_and_register

    url, admin_password = mlflow_server
    _as(monkeypatch, "admin", admin_password)
    settings = make_settings(
        tmp_path / "data",
        tracking_uri=url,
        train_rows=20_000,
        gate_calibration_error=0.5,  # 20,000 rows: wide seasonal calibration noise
        redis_url=redis_server.url,
        key_prefix=key_prefix,
    )
    report = train_and_register(settings, families=("logreg", "hgb"), promote=True)
    client = mlflow_client(settings.registry)
    name = settings.registry.model_name
    moved = {p.alias: p.candidate for p in report.proposals if p.moved}
    assert moved
    for alias, version in moved.items():
        assert resolve_alias(client, name, alias).version == version

    # The API's watcher loads what the aliases point at, through the server (artifacts proxied by it).
    api_config = api_settings(tmp_path, redis_server.url, key_prefix, tracking_uri=url)
    api, stop = await start_api(api_config, watch_registry=True)
    try:
        async with api.session.get(api.url("/readyz")) as resp:
            ready = await resp.json()
    finally:
        await stop()
    assert {a: m["version"] for a, m in ready["models"].items()} == moved

    # The mlflow group logs arm metrics into the server.
    if len(moved) == 2:
        experiment = start_experiment(client, settings.registry, f"ab-{key_prefix}", "champion:0.7,challenger:0.3")
    else:
        experiment = start_experiment(client, settings.registry, f"ab-{key_prefix}", "champion:1.0")
    loaded = api.app[ENGINE_KEY].models
    assert loaded is not None
    engine = DecisionEngine(ModelSet(loaded.models, experiment))
    events = make_events(2_000, seed=5, engine=engine)
    expected = Counter(e.decision.traffic_segment for e in events)
    redis = aioredis.from_url(redis_server.url)
    handler = MlflowMetricsHandler(
        settings.registry, ConsumerSettings(mlflow_window_s=3_600, mlflow_lateness_s=0), redis, settings.keys
    )
    try:
        await add_events(redis, settings.keys.predictions(), events)
        config = ConsumerSettings(batch_size=1_000, max_wait_s=0.2, block_ms=100)
        worker = ConsumerWorker(redis, settings.keys, handler, config, name="m1")
        task = asyncio.create_task(worker.run())
        await wait_group_drained(redis, settings.keys.predictions(), "mlflow")
        worker.request_stop()
        await task
        assert await handler.flush_closed_windows(now=time.time() + 10 * 3_600) >= 1
    finally:
        await redis.aclose()
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`bnpl.kind` = 'arm-metrics'")
    totals = {
        r.data.tags["bnpl.arm"]: sum(m.value for m in client.get_metric_history(r.info.run_id, "requests"))
        for r in runs
    }
    assert totals == {arm: float(n) for arm, n in expected.items()}

    # A read-only user reads the registry and is refused every write.
    reader_password = secrets.token_urlsafe(12)
    _create_user(url, admin_password, "reader", reader_password)
    _as(monkeypatch, "reader", reader_password)
    reader = mlflow_client(settings.registry)
    champion = resolve_alias(reader, name, "champion")
    assert champion.version == moved["champion"]
    with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|Permission denied|403"):
        reader.set_registered_model_alias(name, "challenger", champion.version)
    with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|Permission denied|403"):
        promote(reader, settings.replace(actor="reader"), "challenger", champion.version, force=True, reason="x")
    with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|Permission denied|403"):  # register a version
        reader.create_model_version(name, champion.source, champion.run_id)
    assert resolve_alias(reader, name, "champion").version == moved["champion"]  # nothing moved
