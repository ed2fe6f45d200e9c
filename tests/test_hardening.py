"""No secrets out, no weak defaults: /readyz, webhook signing and redirects, spool permissions, deployment secrets."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis
import uuid_utils
from aiohttp import web

from app.keys import WATCHER
from common.keys import Keys, encode_entry
from common.redis_server import free_port
from common.settings import AlertSettings
from consumers.alert_sender import AlertSender
from consumers.base import Entry
from decision.engine import DecisionEngine
from producers.spool import Spool, SpoolLockedError
from schemas.alerts import ALERT_VERSION, Alert
from tests.conftest import api_settings, start_api

ROOT = Path(__file__).resolve().parent.parent


async def test_readyz_shows_states_without_a_key_and_redacted_details_with_one(tmp_path, redis_server, key_prefix):
    registry = "postgress://bnpl:hunter2secret@127.0.0.1:9/mlflow"  # a typo: MLflow quotes the URI in its error
    settings = api_settings(tmp_path, redis_server.url, key_prefix, tracking_uri=registry)
    client, stop = await start_api(settings, engine=DecisionEngine(None))
    try:
        await client.app[WATCHER].refresh()
        async with client.session.get(client.url("/readyz")) as r:
            text = await r.text()
            body = await r.json()
        assert "hunter2secret" not in text
        assert "postgress" not in text  # no raw exception text at all without a key
        assert body["registry"] == "error"
        assert body["status"] == "degraded"
        assert "detail" not in body
        async with client.session.get(client.url("/readyz"), headers={"X-API-Key": "test-key"}) as r:
            text = await r.text()
            detail = (await r.json())["detail"]
        assert "hunter2secret" not in text
        assert "bnpl:***@127.0.0.1" in detail["registry_error"]
    finally:
        await stop()


def _alert() -> tuple[str, bytes]:
    alert = Alert(
        alert_id=str(uuid_utils.uuid7()),
        alert_key="test:redirect",
        kind="test",
        severity="info",
        statistic="x",
        value=1.0,
        threshold=0.0,
        window="-",
        first_seen="2026-01-01T00:00:00+00:00",
        message="redirect test",
    )
    return alert.alert_id, msgspec.json.encode(alert)


def test_the_alert_sender_refuses_to_run_without_a_secret(redis_server):
    keys = Keys("unsigned")
    with pytest.raises(ValueError, match="BNPL_WEBHOOK_SECRET"):
        AlertSender(AlertSettings(webhook_urls=("http://127.0.0.1:9/hook",)), None, keys)
    allowed = AlertSettings(webhook_urls=("http://127.0.0.1:9/hook",), webhook_allow_unsigned=True)
    assert AlertSender(allowed, None, keys).streams == [keys.alerts()]


async def test_the_alert_sender_never_follows_a_redirect(redis_server, key_prefix):
    seen: dict[str, int] = {"redirector": 0, "elsewhere": 0}
    port = free_port()

    async def redirector(request: web.Request) -> web.Response:
        seen["redirector"] += 1
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{port}/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        seen["elsewhere"] += 1
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/hook", redirector)
    app.router.add_post("/elsewhere", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    redis = aioredis.from_url(redis_server.url)
    keys = Keys(key_prefix)
    sender = AlertSender(
        AlertSettings(webhook_urls=(f"http://127.0.0.1:{port}/hook",), webhook_secret="s"), redis, keys
    )
    await sender.start()
    try:
        alert_id, payload = _alert()
        await redis.xadd(keys.alerts(), encode_entry(alert_id, payload, ALERT_VERSION))
        ((entry_id, fields),) = await redis.xrange(keys.alerts())
        entry = Entry(keys.alerts(), entry_id.decode(), fields)
        with pytest.raises(RuntimeError, match="answered 307"):
            await sender.handle([entry])  # a failed delivery: the runtime keeps it pending and retries
        assert seen == {"redirector": 1, "elsewhere": 0}  # the signed body went nowhere else
        assert not await redis.exists(keys.delivered(alert_id, f"http://127.0.0.1:{port}/hook"))
    finally:
        await sender.close()
        await redis.aclose()
        await runner.cleanup()


def test_the_spool_is_private_whatever_the_umask(tmp_path):
    previous = os.umask(0)
    try:
        spool = Spool(tmp_path / "spool" / "api-1.spool")
        spool.append(1, "s", [b"{}"], 2, flush=True)
        spool.confirm(0)
    finally:
        os.umask(previous)
    spool.close()
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    for path in (tmp_path / "spool").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    # An existing, too open directory is tightened; a shared one (/tmp-like) is refused.
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    Spool(open_dir / "a.spool").close()
    assert stat.S_IMODE(open_dir.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(SpoolLockedError, match="shared"):
        Spool(shared / "a.spool")


def test_the_deployment_keeps_the_mlflow_password_out_of_files():
    ini = (ROOT / "deploy" / "basic_auth.ini").read_text()
    assert not re.search(r"^\s*admin_password", ini, re.M)
    compose = (ROOT / "compose.yaml").read_text()
    assert "MLFLOW_AUTH_ADMIN_PASSWORD_FILE: /run/secrets/mlflow_password" in compose
    assert "MLFLOW_TRACKING_PASSWORD_FILE: /run/secrets/mlflow_password" in compose
    assert "change-me" not in compose + ini


def test_the_image_entrypoint_turns_secret_files_into_variables(tmp_path):
    import subprocess

    secret = tmp_path / "pw"
    secret.write_text("s3cret")
    out = subprocess.run(
        [
            str(ROOT / "deploy" / "entrypoint.sh"),
            "sh",
            "-c",
            'printf "%s|%s" "$MLFLOW_TRACKING_PASSWORD" "${X_FILE-unset}"',
        ],
        env={"PATH": os.environ["PATH"], "MLFLOW_TRACKING_PASSWORD_FILE": str(secret)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "s3cret|unset"
