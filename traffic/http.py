"""Sends requests to the API over HTTP: :func:`simulate` replays them over N connections as fast as they answer
(demo, tests); :func:`send` schedules them at a fixed rate (open loop, ``bnpl send``), measuring each latency from
the time its request was due, so a slow server cannot hide its queueing (coordinated omission)."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import orjson

from analysis.sketch import LogBuckets
from common.aio import cancel_and_wait

#: The decision endpoint of the API (``app.routes``).
DECISION_PATH: Final = "/v1/bnpl/risk-assessment"


@dataclass(slots=True)
class SimulationResult:
    """What the simulator saw: statuses, client-side latencies, decisions per arm, prediction ids."""

    statuses: Counter[int] = field(default_factory=Counter)
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (arm, decision)
    #: Deciding model version of each 200 response, in completion order.
    versions: list[str | None] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    prediction_ids: list[str] = field(default_factory=list)
    #: Requests that got no HTTP answer (connection refused or reset, timeout).
    errors: int = 0
    elapsed_s: float = 0.0
    #: Those errors by exception class, and the first one's message.
    error_kinds: Counter[str] = field(default_factory=Counter)
    first_error: str = ""
    #: Open loop: how far behind its schedule the sender fell at worst (ms; latencies include that wait).
    max_lag_ms: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.errors

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def record(self, status: int, payload: bytes, latency_ms: float, keep_ids: bool = True) -> None:
        """One HTTP answer: its status, latency and (200) decision; ``keep_ids``: also its prediction id and model
        version (memory grows with every request)."""
        self.latencies_ms.append(latency_ms)
        self.statuses[status] += 1
        if status != 200:
            return
        try:
            decided = orjson.loads(payload)
            self.decisions[(decided["traffic_segment"], decided["business_decision"])] += 1
        except (orjson.JSONDecodeError, KeyError, TypeError):  # not the decision API answering
            return
        if keep_ids:
            self.prediction_ids.append(decided["prediction_id"])
            self.versions.append(decided["model_version"])

    def record_error(self, exc: BaseException) -> None:
        """A request that got no HTTP answer."""
        self.errors += 1
        self.error_kinds[type(exc).__name__] += 1
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}".strip().rstrip(":")


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}


async def simulate(
    base_url: str,
    requests: Iterable[dict[str, Any]],
    *,
    api_key: str | None = None,
    connections: int = 8,
    timeout_s: float = 10.0,
) -> SimulationResult:
    """POST every request to :data:`DECISION_PATH` using ``connections`` concurrent connections."""
    result = SimulationResult()
    source: Iterator[dict[str, Any]] = iter(requests)
    headers = _headers(api_key)
    url = base_url.rstrip("/") + DECISION_PATH

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in source:
            start = time.perf_counter()
            try:
                async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
                    payload = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.record_error(exc)
                continue
            result.record(resp.status, payload, (time.perf_counter() - start) * 1000.0)

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def post_batches(
    base_url: str,
    path: str,
    key: str,
    items: list[dict[str, Any]],
    *,
    api_key: str | None = None,
    batch: int = 500,
    connections: int = 4,
    timeout_s: float = 60.0,
) -> list[tuple[int, Any]]:
    """POST ``items`` in bodies of ``{key: [... up to batch items]}`` to ``path`` over ``connections`` connections;
    returns (status, decoded body) per call, in item order."""
    url = base_url.rstrip("/") + path
    headers = _headers(api_key)
    chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
    answers: list[tuple[int, Any]] = [(0, None)] * len(chunks)
    queue = iter(range(len(chunks)))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in queue:
            async with session.post(url, data=orjson.dumps({key: chunks[i]}), headers=headers) as resp:
                answers[i] = (resp.status, orjson.loads(await resp.read()))

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    return answers


class LatencyHistogram:
    """Latencies counted in a log-bucket sketch (:class:`analysis.sketch.LogBuckets`, 1 % relative error): live
    percentiles of any number of samples in constant memory and time (the exact ones come from
    :attr:`SimulationResult.latencies_ms` at the end).

    >>> h = LatencyHistogram()
    >>> for ms in range(1, 101):
    ...     h.add(float(ms))
    >>> round(h.percentile(50)), round(h.percentile(99)), h.count
    (50, 99, 100)
    """

    BUCKETS: Final = LogBuckets(0.01, floor=0.01)  # milliseconds: below 10 µs counts as 0

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self.count = 0

    def add(self, ms: float) -> None:
        """Count one latency."""
        self._counts[self.BUCKETS.index(ms)] += 1
        self.count += 1

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0–100), within 1 %; NaN before the first sample."""
        return self.BUCKETS.quantile(self._counts, q / 100.0)

    def copy(self) -> LatencyHistogram:
        """The counts so far (what :meth:`since` subtracts later)."""
        out = LatencyHistogram()
        out._counts = self._counts.copy()
        out.count = self.count
        return out

    def since(self, earlier: LatencyHistogram) -> LatencyHistogram:
        """The latencies counted after ``earlier`` (a :meth:`copy` of this histogram) was taken."""
        out = LatencyHistogram()
        out._counts = self._counts - earlier._counts
        out.count = self.count - earlier.count
        return out


@dataclass(frozen=True, slots=True)
class SendProgress:
    """What :func:`send` has done so far, handed to its ``on_progress`` callback a few times a second."""

    elapsed_s: float
    #: Requests started, and those answered or failed.
    started: int
    done: int
    #: Answers per second over about the last second.
    rate: float
    histogram: LatencyHistogram
    result: SimulationResult
    #: The last call, after every request finished.
    final: bool = False


class ApiUnreachableError(ConnectionError):
    """The API's address does not accept connections (checked before the first request is due)."""


async def _reachable(session: aiohttp.ClientSession, url: str) -> None:
    """Any HTTP answer from the API's ``/healthz`` will do; a refused or timed-out connection raises
    :class:`ApiUnreachableError`."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    try:
        async with session.get(origin + "/healthz") as resp:
            await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ApiUnreachableError(f"cannot reach the API at {origin} ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    """A short reason a connection failed: ``connection refused``, ``timed out``, the resolver's message …"""
    if isinstance(exc, TimeoutError):
        return "timed out"
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else None
    if os_error is not None and not isinstance(os_error, socket.gaierror) and os_error.errno:
        return os.strerror(os_error.errno).lower()
    return str(os_error or exc) or type(exc).__name__


async def check_reachable(url: str, timeout_s: float = 10.0) -> None:
    """Raise :class:`ApiUnreachableError` unless the server of ``url`` answers HTTP (before preparing traffic)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        await _reachable(session, url)


async def send(
    url: str,
    bodies: Iterable[bytes],
    *,
    api_key: str | None = None,
    rate: float = 0.0,
    connections: int = 8,
    seconds: float | None = None,
    requests: int | None = None,
    timeout_s: float = 10.0,
    on_progress: Callable[[SendProgress], None] | None = None,
    progress_every_s: float = 0.25,
    stop: asyncio.Event | None = None,
) -> SimulationResult:
    """POST ``bodies`` (encoded JSON) to ``url`` at ``rate`` requests/s, at most ``connections`` in flight, until
    ``seconds`` have passed, ``requests`` were sent, the bodies run out or ``stop`` is set.

    Open loop: request ``i`` is due at ``start + i / rate`` whatever happened to the ones before; when every
    connection is busy it waits for one, and its latency counts from when it was due (the wait included).
    ``rate`` 0: as fast as the connections allow, latency from the send. Raises :class:`ApiUnreachableError`
    when the API does not accept connections before the first request.
    """
    result = SimulationResult()
    histogram = LatencyHistogram()
    headers = _headers(api_key)
    slots = asyncio.Semaphore(connections)
    in_flight: set[asyncio.Task[None]] = set()
    counts = {"started": 0, "done": 0}
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def one(session: aiohttp.ClientSession, body: bytes, due: float) -> None:
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                payload = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.record_error(exc)
        else:
            latency_ms = (time.perf_counter() - due) * 1000.0
            result.record(resp.status, payload, latency_ms, keep_ids=False)
            histogram.add(latency_ms)
        finally:
            counts["done"] += 1
            slots.release()

    def snapshot(start: float, recent: deque[tuple[float, int]], final: bool = False) -> SendProgress:
        now = time.perf_counter()
        recent.append((now, counts["done"]))
        while len(recent) > 2 and now - recent[1][0] >= 1.0:
            recent.popleft()
        (then, done_then), last = recent[0], recent[-1]
        current = (last[1] - done_then) / (now - then) if now > then else 0.0
        return SendProgress(now - start, counts["started"], counts["done"], current, histogram, result, final)

    async def report(start: float) -> None:
        assert on_progress is not None
        recent: deque[tuple[float, int]] = deque([(start, 0)])
        while True:
            await asyncio.sleep(progress_every_s)
            on_progress(snapshot(start, recent))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await _reachable(session, url)
        start = time.perf_counter()
        deadline = start + seconds if seconds is not None else math.inf
        reporter = asyncio.create_task(report(start)) if on_progress else None
        try:
            for i, body in enumerate(bodies):
                if (requests is not None and i >= requests) or (stop is not None and stop.is_set()):
                    break
                if rate > 0:
                    due = start + i / rate
                    if due >= deadline:
                        break
                    wait = due - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                        if stop is not None and stop.is_set():
                            break
                await slots.acquire()
                now = time.perf_counter()
                if rate <= 0:
                    if now >= deadline:
                        slots.release()
                        break
                    due = now
                else:
                    result.max_lag_ms = max(result.max_lag_ms, (now - due) * 1000.0)
                counts["started"] += 1
                task = asyncio.create_task(one(session, body, due))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            await asyncio.gather(*in_flight)
        finally:
            if reporter is not None:
                await cancel_and_wait([reporter])
        result.elapsed_s = time.perf_counter() - start
    if on_progress is not None:
        on_progress(snapshot(start, deque([(start, 0)]), final=True))
    return result
