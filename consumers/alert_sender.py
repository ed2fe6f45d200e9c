"""The alert-sender group: reads the alerts stream and POSTs each alert to every configured webhook.

Body: the alert JSON (or a Slack-compatible ``{"text": …}`` when ``slack``), signed (``alerting.signing``). The
sender refuses to start without a secret (an empty HMAC key is forgeable) unless unsigned delivery is allowed
explicitly (``BNPL_WEBHOOK_ALLOW_UNSIGNED=true``, then no signature headers are sent at all). Redirects are never
followed: a signed body goes only to the configured URL, and a 3xx counts as a failed delivery.
A failed delivery raises, so the runtime retries the batch with exponential backoff and jitter while the entries
stay pending — detection never waits on delivery, and nothing is lost (at-least-once). Each (alert, url) pair is
remembered once delivered, so a retry does not re-send to the URLs that already have it; receivers can also dedup
by ``alert_id``.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import msgspec
import orjson

from alerting.signing import sign
from common.keys import Keys
from common.settings import AlertSettings
from consumers.base import BatchResult, Entry, decode_entries
from schemas.alerts import Alert

_ALERTS = msgspec.json.Decoder(Alert)

log = logging.getLogger(__name__)


class AlertSender:
    group = "alert-sender"

    def __init__(self, settings: AlertSettings, redis: Any, keys: Keys) -> None:
        if not settings.webhook_urls:
            raise ValueError("the alert sender needs BNPL_WEBHOOK_URLS (and BNPL_WEBHOOK_SECRET)")
        if not settings.webhook_secret and not settings.webhook_allow_unsigned:
            raise ValueError(
                "the alert sender needs BNPL_WEBHOOK_SECRET to sign webhook calls "
                "(or BNPL_WEBHOOK_ALLOW_UNSIGNED=true to send them unsigned)"
            )
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.session: aiohttp.ClientSession | None = None
        self.delivered = 0  # webhook calls answered 2xx (exported by the worker's /metrics)
        self.delivery_failures = 0  # webhook calls that failed (status >= 300, connection error, timeout)

    @property
    def streams(self) -> list[str]:
        return [self.keys.alerts()]

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def released(self, stream: str, lost: bool) -> None:
        return None

    async def tick(self) -> None:
        return None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _body(self, alert: Alert, raw: bytes) -> bytes:
        if not self.settings.webhook_slack:
            return raw
        text = f":rotating_light: *{alert.kind}* {alert.feature or ''} — {alert.message}"
        return orjson.dumps({"text": text, "alert": msgspec.to_builtins(alert)})

    async def handle(self, entries: list[Entry]) -> BatchResult:
        assert self.session is not None
        decoded, failed = decode_entries(entries, lambda _version, payload: _ALERTS.decode(payload), "alert")
        for entry, alert in decoded:
            body = self._body(alert, entry.document)
            for url in self.settings.webhook_urls:
                marker = self.keys.delivered(alert.alert_id, url)
                if await self.redis.exists(marker):
                    continue
                secret = self.settings.webhook_secret
                headers = sign(secret, body) if secret else {"Content-Type": "application/json"}
                try:
                    async with self.session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                        if response.status >= 300:  # 3xx included: a signed body never follows a redirect
                            raise RuntimeError(f"webhook {url} answered {response.status}")
                except Exception:  # counted, then the runtime retries the batch
                    self.delivery_failures += 1
                    raise
                self.delivered += 1
                await self.redis.set(marker, 1, ex=7 * 86_400)
                log.info("alert %s (%s) delivered to %s", alert.alert_id, alert.alert_key, url)
        return BatchResult(failed)
