"""API keys: what a request presents, and whether it is one of the configured keys (constant time)."""

from __future__ import annotations

import hmac

from aiohttp import web


def presented_key(request: web.Request) -> str:
    """The key in ``X-API-Key``, else the token of ``Authorization: Bearer …`` (empty when neither)."""
    key = request.headers.get("X-API-Key", "")
    if not key:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    return key


def key_matches(presented: str, keys: tuple[bytes, ...]) -> bool:
    """True when ``presented`` is one of ``keys``. Compares against every key, always, in constant time per key:
    no early exit that leaks which one matched."""
    if not presented:
        return False
    # Header bytes that are not UTF-8 arrive as surrogates: compare the bytes as sent (they match no key).
    given = presented.encode("utf-8", "surrogateescape")
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key)
    return ok
