"""Webhook signatures: ``X-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` and ``X-Timestamp``.

Signing the timestamp with the body lets a receiver reject replays older than its tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers for ``body``.

    >>> h = sign("s3cret", b"{}", timestamp=1700000000)
    >>> verify("s3cret", b"{}", h["X-Signature"], h["X-Timestamp"], now=1700000001)
    True
    """
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Signature": f"sha256={digest}", "X-Timestamp": ts, "Content-Type": "application/json"}


def verify(
    secret: str, body: bytes, signature: str, timestamp: str, tolerance_s: int = 300, now: float | None = None
) -> bool:
    """True when the signature matches and the timestamp is within ``tolerance_s`` of now."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = sign(secret, body, ts)["X-Signature"]
    return hmac.compare_digest(expected, signature)
