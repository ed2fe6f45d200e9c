"""The HTTP edge under malformed bytes, headers and stalled bodies, over raw sockets against the real app.

Every answer must be a 4xx (or 2xx for what is valid), never a 5xx, and nothing may hang: a body that does not
arrive within the read timeout is answered 408 and the connection closed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datagen import ORIGINAL_EXAMPLE
from decision.engine import DecisionEngine
from tests.conftest import api_settings

KEY = b"test-key"
READ_TIMEOUT_S = 1.0
EXAMPLE = orjson.dumps(ORIGINAL_EXAMPLE)


class ThreadedApi:
    """The real app served by its own event loop in a thread, so blocking raw-socket clients can drive it."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, redis_server, loaded_models) -> Iterator[ThreadedApi]:
    from app.factory import create_app

    settings = api_settings(tmp_path_factory.mktemp("edge"), redis_server.url, "edge", read_timeout_s=READ_TIMEOUT_S)
    api = ThreadedApi(create_app(settings, DecisionEngine(loaded_models), watch_registry=False))
    yield api
    api.stop()


def request(
    port: int,
    method: bytes,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    declared_length: int | None = None,
    raw_body: bool = False,
    wait_s: float = 10.0,
    check_closed: bool = False,
) -> tuple[int, dict[bytes, bytes], float, bool]:
    """Send one HTTP/1.1 request as raw bytes; returns status, headers, seconds to the answer, and (with
    ``check_closed``) whether the server closed the connection within 2 s of answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        lines = [method + b" " + path + b" HTTP/1.1", b"Host: test"]
        lines += [name + b": " + value for name, value in headers]
        if not raw_body:
            lines.append(b"Content-Length: " + str(len(body) if declared_length is None else declared_length).encode())
        started = time.monotonic()
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        elapsed = time.monotonic() - started
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        status = int(status_line.split()[1])
        answer = {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in header_lines)}
        remaining = int(answer.get(b"content-length", b"0")) - len(rest)
        while remaining > 0:
            chunk = sock.recv(65536)
            if not chunk:
                break
            remaining -= len(chunk)
        closed = False
        if check_closed:
            sock.settimeout(2.0)
            try:
                closed = sock.recv(1) == b""
            except TimeoutError:
                closed = False
        return status, answer, elapsed, closed


# --- strategies -----------------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 7))
    if kind == 0:  # arbitrary bytes
        return draw(st.binary(max_size=600))
    if kind == 1:  # a field replaced by any JSON value
        field = draw(st.sampled_from(sorted(ORIGINAL_EXAMPLE)))
        return json.dumps({**ORIGINAL_EXAMPLE, field: draw(json_values)}).encode()
    if kind == 2:  # nested deeper than any limit, alone or inside a field
        depth = draw(st.integers(33, 5_000))
        nest = b"[" * depth + b"]" * depth
        return nest if draw(st.booleans()) else EXAMPLE.replace(b'"txn_api_test_001"', nest)
    if kind == 3:  # invalid UTF-8 inside a string
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\x80"]))
        return EXAMPLE.replace(b"txn_api_test_001", b"txn" + bad)
    if kind == 4:  # truncated
        return EXAMPLE[: draw(st.integers(0, len(EXAMPLE) - 1))]
    if kind == 5:  # bytes flipped somewhere
        position = draw(st.integers(0, len(EXAMPLE) - 1))
        return EXAMPLE[:position] + bytes([draw(st.integers(0, 255))]) + EXAMPLE[position + 1 :]
    if kind == 6:  # not an object
        return json.dumps(draw(json_values)).encode()
    return EXAMPLE  # valid


header_value = st.binary(min_size=1, max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)
content_types = (
    st.sampled_from(
        [
            None,
            b"application/json",
            b"application/json; charset=utf-8",
            b"application/merge-patch+json",
            b"text/plain",
            b"application/x-www-form-urlencoded",
            b"application/json; charset=latin-1",
            b"application/octet-stream",
        ]
    )
    | header_value
)
keys = st.sampled_from([KEY, None]) | header_value
targets = st.sampled_from(
    [
        (b"POST", b"/v1/bnpl/risk-assessment"),
        (b"POST", b"/v1/bnpl/risk-assessment/batch"),
        (b"PUT", b"/v1/bnpl/risk-assessment"),
        (b"GET", b"/v1/bnpl/risk-assessment"),
        (b"GET", b"/readyz?strict=%ff%fe"),
        (b"GET", b"/readyz?strict=\xff"),
        (b"POST", b"/nowhere"),
    ]
)


@settings(
    max_examples=1_200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(target=targets, body=bodies(), key=keys, content_type=content_types)
def test_malformed_bytes_and_headers_never_get_a_5xx(server, target, body, key, content_type):
    method, path = target
    headers = []
    if key is not None:
        headers.append((b"X-API-Key", key))
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    status, answer, elapsed, _ = request(server.port, method, path, headers, body)
    assert status < 500, (target, body[:80], key, content_type)
    assert elapsed < READ_TIMEOUT_S + 2
    if status == 405:
        assert answer[b"allow"]
    if key == KEY and method == b"POST" and path.startswith(b"/v1/") and content_type in (b"text/plain", None):
        assert status == (415 if content_type else status)


def _post(port: int, body: bytes, content_type: bytes = b"application/json", key: bytes = KEY) -> int:
    headers = [(b"X-API-Key", key), (b"Content-Type", content_type)]
    return request(port, b"POST", b"/v1/bnpl/risk-assessment", headers, body)[0]


def test_each_malformed_input_gets_its_own_status(server):
    port = server.port
    assert _post(port, EXAMPLE) == 200
    assert _post(port, EXAMPLE, b"application/json; charset=UTF-8") == 200
    assert _post(port, EXAMPLE.replace(b"txn_api_test_001", b"txn\xff")) == 400  # invalid UTF-8
    assert _post(port, b"[" * 1_000 + b"]" * 1_000) == 400  # too deep (was a RecursionError)
    assert _post(port, EXAMPLE[:-1] + b', "x": ' + b"[" * 40 + b"]" * 40 + b"}") == 400  # deeper than 32
    assert _post(port, EXAMPLE, b"text/plain") == 415
    assert _post(port, EXAMPLE, key=b"\xff\xfe-not-text") == 401  # (was a 500 before authentication)
    assert _post(port, b"{bad") == 400
    assert _post(port, orjson.dumps({**ORIGINAL_EXAMPLE, "amount": "x"})) == 422
    status, answer, _, _ = request(port, b"PUT", b"/v1/bnpl/risk-assessment", [(b"X-API-Key", KEY)])
    assert status == 405
    assert answer[b"allow"] == b"POST"


def test_stalled_and_truncated_bodies_are_closed_within_the_read_timeout(server):
    headers = [(b"X-API-Key", KEY), (b"Content-Type", b"application/json")]
    status, _, elapsed, closed = request(
        server.port,
        b"POST",
        b"/v1/bnpl/risk-assessment",
        headers,
        EXAMPLE[:100],
        declared_length=len(EXAMPLE),
        check_closed=True,
    )
    assert (status, closed) == (408, True)
    assert READ_TIMEOUT_S <= elapsed < READ_TIMEOUT_S + 1.5
    chunked = [*headers, (b"Transfer-Encoding", b"chunked")]
    truncated = f"{len(EXAMPLE):x}\r\n".encode() + EXAMPLE[:50]  # a chunk that never ends
    status, _, elapsed, closed = request(
        server.port, b"POST", b"/v1/bnpl/risk-assessment", chunked, truncated, raw_body=True, check_closed=True
    )
    assert (status, closed) == (408, True)
    assert elapsed < READ_TIMEOUT_S + 1.5


def test_many_stalled_connections_are_all_closed(server):
    from concurrent.futures import ThreadPoolExecutor

    headers = [(b"X-API-Key", KEY), (b"Content-Type", b"application/json")]

    def stall(_: int) -> tuple[int, bool]:
        status, _, _, closed = request(
            server.port, b"POST", b"/v1/bnpl/risk-assessment", headers, b"{", declared_length=500, check_closed=True
        )
        return status, closed

    started = time.monotonic()
    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(stall, range(100)))
    assert results == [(408, True)] * 100
    assert time.monotonic() - started < READ_TIMEOUT_S + 5
