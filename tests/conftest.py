"""Shared fixtures: real MLflow (SQLite store in a temp dir), trained once per session where read-only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from common.settings import Settings


@pytest.fixture(autouse=True)
def _isolated_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; never let one test's registry leak into the next."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


#: Rows for test training: enough for stable AUCs, small enough to keep the suite fast.
TEST_TRAIN_ROWS = 40_000


def make_settings(data_dir: Path, **changes: object) -> Settings:
    """Settings whose every store lives under ``data_dir`` (SQLite MLflow, artifacts)."""
    return Settings.build(data_dir=data_dir, **{"train_rows": TEST_TRAIN_ROWS, **changes})


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, object]:
    """A real MLflow SQLite registry with the three families trained and champion/challenger set.

    Session-scoped because training takes seconds; tests using it must not change the registry.
    """
    from training.train import train_and_register

    settings = make_settings(tmp_path_factory.mktemp("registry"))
    return settings, train_and_register(settings, promote=True)


@pytest.fixture
def registry_copy(trained_registry, tmp_path: Path) -> Settings:
    """Settings on a private copy of the session registry (its SQLite store; artifacts are shared, read-only), for
    tests that move aliases or create experiments."""
    import shutil

    settings, _ = trained_registry
    source = Path(settings.registry.tracking_uri.removeprefix("sqlite:///"))
    (tmp_path / "data").mkdir(exist_ok=True)
    shutil.copy(source, tmp_path / "data" / "mlflow.db")
    return make_settings(tmp_path / "data")


# --- Redis ---------------------------------------------------------------------------------------------------------
import itertools  # noqa: E402
import uuid  # noqa: E402
from collections.abc import AsyncIterator, Iterator  # noqa: E402

from common.redis_server import RedisServer  # noqa: E402

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests isolate themselves with a fresh key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendfsync="always").start()
    yield server
    server.stop()


@pytest.fixture
def dedicated_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (for tests that kill and restart it). AOF fsync always: no acked loss."""
    server = RedisServer(tmp_path / "redis", appendfsync="always").start()
    yield server
    server.stop()


@pytest.fixture
def key_prefix() -> str:
    """A fresh key prefix, so every test has its own streams and groups."""
    return f"t{next(_prefixes)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def loaded_models(trained_registry):
    """The champion/challenger model set loaded from the session registry, as the API loads it."""
    from registry import mlflow_client
    from registry.loader import build_model_set, registry_pointers

    settings, _ = trained_registry
    return build_model_set(*registry_pointers(mlflow_client(settings.registry), settings.registry))


def api_settings(tmp_path: Path, redis_url: str, prefix: str, **changes: object) -> Settings:
    """Settings for an API under test: its own spool dir, key prefix and a known API key."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "key_prefix": prefix,
        "api_keys": ("test-key",),
        "spool_dir": tmp_path / "spool",
        "publish_interval_ms": 2.0,
    }
    values.update(changes)
    return make_settings(tmp_path / "data", **values)


class ApiClient:
    """A running app on a real port plus an HTTP session with the test key."""

    def __init__(self, server, session) -> None:
        self.server = server
        self.session = session
        self.app = server.app

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def assess(self, body, key: str | None = "test-key"):
        import orjson

        headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.session.post(self.url("/v1/bnpl/risk-assessment"), data=data, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)


async def start_api(settings: Settings, engine=None, watch_registry: bool = False):
    """Start ``create_app(settings)`` on a free port; returns (ApiClient, stop coroutine function)."""
    import aiohttp
    from aiohttp.test_utils import TestServer

    from app.factory import create_app

    server = TestServer(create_app(settings, engine=engine, watch_registry=watch_registry))
    await server.start_server()
    session = aiohttp.ClientSession()

    async def stop() -> None:
        await session.close()
        await server.close()

    return ApiClient(server, session), stop


@pytest.fixture
async def api(tmp_path, redis_server, key_prefix, loaded_models) -> AsyncIterator[ApiClient]:
    """The API with the registry's champion + challenger, a real Redis, a fresh key prefix."""
    from decision.engine import DecisionEngine

    settings = api_settings(tmp_path, redis_server.url, key_prefix)
    client, stop = await start_api(settings, DecisionEngine(loaded_models))
    yield client
    await stop()
