"""``bnpl webhook-receiver``: a small local receiver that verifies signatures, dedups by alert id and prints alerts.

``GET /alerts`` lists what was received (used by the demo and tests).
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from alerting.signing import verify

log = logging.getLogger(__name__)
RECEIVED = web.AppKey("received", list)
SECRET = web.AppKey("secret", str)


async def _receive(request: web.Request) -> web.Response:
    body = await request.read()
    if not verify(
        request.app[SECRET], body, request.headers.get("X-Signature", ""), request.headers.get("X-Timestamp", "")
    ):
        log.warning("rejected a webhook call with a bad signature or timestamp")
        return web.json_response({"error": "bad signature"}, status=401)
    alert = orjson.loads(body)
    received = request.app[RECEIVED]
    if any(a.get("alert_id") == alert.get("alert_id") for a in received):
        return web.json_response({"status": "duplicate"})
    received.append(alert)
    print(
        f"ALERT [{alert.get('severity')}] {alert.get('kind')} {alert.get('feature') or ''}: "
        f"{alert.get('message')} (key {alert.get('alert_key')}, id {alert.get('alert_id')})",
        flush=True,
    )
    return web.json_response({"status": "ok"})


async def _list(request: web.Request) -> web.Response:
    return web.json_response(request.app[RECEIVED])


def create_receiver(secret: str) -> web.Application:
    app = web.Application()
    app[SECRET] = secret
    app[RECEIVED] = []
    app.router.add_post("/", _receive)
    app.router.add_post("/webhook", _receive)
    app.router.add_get("/alerts", _list)
    return app
