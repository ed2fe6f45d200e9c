"""``bnpl send``: generated or recorded requests to a running API, at a fixed rate (open loop) or as fast as it
answers; live latency percentiles while it runs, then statuses, decisions, latency and throughput.

The sending itself is :func:`traffic.http.send`; this module picks the requests, draws the progress line (stderr)
and prints the summary (stdout, ``--json`` for machines).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import orjson

from common.settings import Settings
from traffic.http import DECISION_PATH, SendProgress, SimulationResult

#: Generated traffic longer than this many requests repeats them from the first (generation takes ~5 s per 1M).
GENERATED_POOL = 200_000
#: Generated traffic without ``--seconds`` or ``--requests`` lasts this long.
DEFAULT_SECONDS = 10.0
#: Progress: redraw period on a terminal, line period otherwise (s).
TTY_EVERY_S = 0.25
LOG_EVERY_S = 5.0
#: The summary says the sender fell behind its schedule when it did by this much (ms).
LAG_NOTE_MS = 50.0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``send`` subcommand and its options."""
    from bnpl_cli.generate import add_drift_arguments
    from datagen.drift import REQUEST_DRIFT_KINDS

    send = sub.add_parser(
        "send",
        help="send generated or recorded requests to a running API at a fixed rate; live latency percentiles, "
        "then statuses, decisions, latency and throughput (exit 1 on any 5xx or connection error)",
    )
    send.add_argument(
        "--file", help="replay this JSON lines file of requests (as `bnpl generate` writes it) instead of generating"
    )
    send.add_argument("--seed", type=int, default=0, help="seed of the generated requests (as `bnpl generate --seed`)")
    add_drift_arguments(send, REQUEST_DRIFT_KINDS)
    send.add_argument(
        "--url",
        help="the API's decision endpoint, or just its http://host:port (not given: "
        f"http://BNPL_HOST:BNPL_PORT{DECISION_PATH})",
    )
    send.add_argument("--api-key", metavar="KEY", help="key sent as X-API-Key (not given: the first of BNPL_API_KEYS)")
    send.add_argument(
        "--rate",
        type=float,
        metavar="R",
        default=100.0,
        help="requests per second, each due at a fixed time whatever the answers do (open loop: latency counts "
        "from when a request was due); 0: as fast as the connections allow",
    )
    send.add_argument(
        "--connections", type=int, default=8, metavar="N", help="concurrent connections: the most requests in flight"
    )
    send.add_argument(
        "--seconds",
        type=float,
        metavar="S",
        help=f"stop sending after this long (neither this nor --requests: the whole file, or {DEFAULT_SECONDS:g} s "
        "of generated requests)",
    )
    send.add_argument(
        "--requests", type=int, metavar="N", help="stop after this many requests (whichever of the two comes first)"
    )
    send.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds before an unanswered request counts as a connection error",
    )
    send.add_argument("--json", action="store_true", help="print the summary as JSON (progress stays on stderr)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Send, show progress, print the summary; exit 1 when any answer was a 5xx or any request got no answer."""
    from bnpl_cli.main import CliError
    from traffic.http import ApiUnreachableError, check_reachable

    _check(args)
    url = decision_url(settings, args.url)
    seconds, requests = args.seconds, args.requests
    file_bodies = _file_bodies(Path(args.file), requests) if args.file else None
    interrupted = asyncio.Event()
    try:
        asyncio.run(check_reachable(url, args.timeout))  # before generating anything: unreachable is one line
        api_key = args.api_key if args.api_key is not None else next(iter(settings.api.api_keys), None)
        if not api_key:
            print(
                "warning: no API key (--api-key or BNPL_API_KEYS): the API answers 401 unless auth is off",
                file=sys.stderr,
            )
        if file_bodies is None and seconds is None and requests is None:
            seconds = DEFAULT_SECONDS
        bodies, planned = file_bodies or _generated_bodies(args, seconds, requests)
        progress = _Progress(sys.stderr, seconds, planned)
        result = asyncio.run(_send(url, bodies, api_key, args, seconds, requests, progress, interrupted))
    except ApiUnreachableError as exc:
        raise CliError(f"{exc}; is `bnpl serve` running, is --url right?", code=3) from None
    summary = summarize(result, url=url, rate=args.rate, connections=args.connections)
    summary["interrupted"] = interrupted.is_set()
    print(json.dumps(summary, indent=2) if args.json else summary_text(summary), flush=True)
    return 1 if summary["status_classes"]["5xx"] or summary["connection_errors"] else 0


def _check(args: argparse.Namespace) -> None:
    from bnpl_cli.main import CliError

    problems = [
        f"--rate {args.rate:g}: expected >= 0" if not args.rate >= 0 else "",
        f"--connections {args.connections}: expected >= 1" if args.connections < 1 else "",
        f"--seconds {args.seconds:g}: expected > 0" if args.seconds is not None and not args.seconds > 0 else "",
        f"--requests {args.requests}: expected >= 1" if args.requests is not None and args.requests < 1 else "",
        f"--timeout {args.timeout:g}: expected > 0" if not args.timeout > 0 else "",
    ]
    if args.file:
        knobs = ("drift", "drift_start", "drift_share", "drift_strength")
        drift = ["--" + k.replace("_", "-") for k in knobs if getattr(args, k) is not None]
        problems.append(f"{', '.join(drift)} with --file: drift applies to generated requests" if drift else "")
    problems = [p for p in problems if p]
    if problems:
        raise CliError("; ".join(problems), code=2)


def decision_url(settings: Settings, given: str | None) -> str:
    """``given`` (a bare ``http://host:port`` gets the decision path), or the configured API's decision endpoint.

    >>> s = Settings.build(host="0.0.0.0", port=9000)
    >>> decision_url(s, None), decision_url(s, "http://api:8080")
    ('http://127.0.0.1:9000/v1/bnpl/risk-assessment', 'http://api:8080/v1/bnpl/risk-assessment')
    >>> decision_url(s, "https://api.example/v2/assess")
    'https://api.example/v2/assess'
    """
    from bnpl_cli.main import CliError

    if given is None:
        host = settings.api.host if settings.api.host not in ("", "0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
        return f"http://{f'[{host}]' if ':' in host else host}:{settings.api.port}{DECISION_PATH}"
    try:
        url = urlsplit(given)
        url.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise CliError(f"--url {given!r}: {exc}", code=2) from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise CliError(f"--url {given!r}: expected http://host:port[/path]", code=2)
    return urlunsplit(url._replace(path=DECISION_PATH)) if url.path in ("", "/") else given


def _file_bodies(path: Path, requests: int | None) -> tuple[Iterator[bytes], int | None]:
    """The file's non-blank lines as request bodies (an inline ``outcome`` left by older versions of
    ``bnpl generate`` is dropped), and how many will be sent."""
    from bnpl_cli.main import CliError

    if not path.is_file():
        raise CliError(f"no such file: {path}", code=2)
    with path.open("rb") as fh:
        rows = sum(1 for line in fh if line.strip())
    if not rows:
        raise CliError(f"{path} holds no requests", code=2)

    def lines() -> Iterator[bytes]:
        with path.open("rb") as fh:
            for line in fh:
                body = line.strip()
                if not body:
                    continue
                if b'"outcome"' in body:
                    try:
                        decoded = orjson.loads(body)
                    except orjson.JSONDecodeError:
                        decoded = None
                    if isinstance(decoded, dict) and decoded.pop("outcome", None) is not None:
                        body = orjson.dumps(decoded)
                yield body

    return lines(), rows if requests is None else min(rows, requests)


def _generated_bodies(
    args: argparse.Namespace, seconds: float | None, requests: int | None
) -> tuple[Iterator[bytes], int | None]:
    """Generated request bodies (repeating after :data:`GENERATED_POOL`), and how many will be sent if known."""
    from bnpl_cli.generate import describe, drifts_from_args
    from datagen import generate

    due = math.ceil(args.rate * seconds) if args.rate > 0 and seconds is not None else None
    planned = min(n for n in (requests, due) if n is not None) if requests or due else None
    rows = min(planned or GENERATED_POOL, GENERATED_POOL)
    drifts = drifts_from_args(args, rows)
    print(f"generating {rows:,} requests (seed {args.seed}){describe(drifts)} …", file=sys.stderr, flush=True)
    data = generate(rows, seed=args.seed, drifts=drifts)
    bodies = (orjson.dumps(data.request(i % rows)) for i in itertools.count())
    return bodies, planned


async def _send(
    url: str,
    bodies: Iterator[bytes],
    api_key: str | None,
    args: argparse.Namespace,
    seconds: float | None,
    requests: int | None,
    progress: _Progress,
    interrupted: asyncio.Event,
) -> SimulationResult:
    """:func:`traffic.http.send`; the first Ctrl-C stops sending and still prints the summary, a second one quits."""
    from traffic.http import send

    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        interrupted.set()
        loop.remove_signal_handler(signal.SIGINT)

    no_signals = (NotImplementedError, RuntimeError, ValueError)  # not the main thread, or no signals here
    with contextlib.suppress(*no_signals):
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        return await send(
            url,
            bodies,
            api_key=api_key,
            rate=args.rate,
            connections=args.connections,
            seconds=seconds,
            requests=requests,
            timeout_s=args.timeout,
            on_progress=progress,
            progress_every_s=progress.every_s,
            stop=interrupted,
        )
    finally:
        if not interrupted.is_set():
            with contextlib.suppress(*no_signals):
                loop.remove_signal_handler(signal.SIGINT)


def _ms(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.1f}" if value >= 100 else f"{value:.2f}"


class _Progress:
    """The live line on stderr: on a terminal a bar redrawn a few times a second, otherwise a line every few
    seconds."""

    def __init__(self, stream: TextIO, seconds: float | None, planned: int | None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every_s = TTY_EVERY_S if self.tty else 1.0
        self.seconds = seconds
        self.planned = planned
        self._next_log = LOG_EVERY_S

    def _fraction(self, p: SendProgress) -> float:
        parts = [p.elapsed_s / self.seconds if self.seconds else 0.0, p.done / self.planned if self.planned else 0.0]
        return 1.0 if p.final else min(1.0, max(parts))

    def _stats(self, p: SendProgress) -> str:
        h = p.histogram
        failed = p.result.errors + sum(n for status, n in p.result.statuses.items() if status >= 500)
        return (
            f"{p.elapsed_s:5.1f}s  sent {p.started:,}  failed {failed:,}  p50 {_ms(h.percentile(50))}  "
            f"p95 {_ms(h.percentile(95))}  p99 {_ms(h.percentile(99))} ms  {p.rate:,.0f} req/s"
        )

    def __call__(self, p: SendProgress) -> None:
        if self.tty:
            width = shutil.get_terminal_size((100, 24)).columns - 1
            stats = self._stats(p)
            room = width - len(stats) - 9
            fraction = self._fraction(p)
            bar = ""
            if room >= 10:
                filled = round(min(room, 40) * fraction)
                bar = f"[{'#' * filled}{'-' * (min(room, 40) - filled)}] {fraction:4.0%}  "
            self.stream.write(f"\r{bar}{stats}"[: width + 1] + "\x1b[K" + ("\n" if p.final else ""))
            self.stream.flush()
        elif not p.final and p.elapsed_s >= self._next_log:
            self._next_log = p.elapsed_s + LOG_EVERY_S
            print(f"send: {self._stats(p)}", file=self.stream, flush=True)


def summarize(result: SimulationResult, *, url: str, rate: float, connections: int) -> dict[str, Any]:
    """The summary as plain data (what ``--json`` prints)."""
    classes = Counter(f"{status // 100}xx" for status in result.statuses.elements())
    decisions: Counter[str] = Counter()
    by_segment: dict[str, dict[str, int]] = {}
    for (segment, decision), n in sorted(result.decisions.items()):
        decisions[decision] += n
        by_segment.setdefault(segment, {})[decision] = n

    def number(value: float) -> float | None:
        return round(value, 3) if math.isfinite(value) else None

    return {
        "url": url,
        "requests": result.sent,
        "duration_s": round(result.elapsed_s, 3),
        "throughput_rps": round(result.rate, 1),
        "target_rate": rate or None,
        "connections": connections,
        "statuses": {str(status): n for status, n in sorted(result.statuses.items())},
        "status_classes": {k: classes.get(k, 0) for k in ("2xx", "3xx", "4xx", "5xx")},
        "connection_errors": result.errors,
        "error_kinds": dict(result.error_kinds),
        "first_error": result.first_error or None,
        "decisions": dict(decisions.most_common()),
        "decisions_by_segment": by_segment,
        "latency_ms": {
            "p50": number(result.percentile(50)),
            "p95": number(result.percentile(95)),
            "p99": number(result.percentile(99)),
            "max": number(max(result.latencies_ms, default=math.nan)),
        },
        "latency_from": "scheduled send time" if rate else "send time",
        "max_schedule_lag_ms": round(result.max_lag_ms, 1) if rate else None,
    }


def summary_text(s: dict[str, Any]) -> str:
    """The summary for people.

    >>> print(summary_text(summarize(SimulationResult(), url="http://h/p", rate=5, connections=2)))
    sent 0 requests to http://h/p in 0.00 s: 0.0 requests/s (target 5/s, 2 connections)
    statuses: none (2xx 0, 4xx 0, 5xx 0, connection errors 0)
    decisions: none
    latency from the scheduled send time, ms: p50 -  p95 -  p99 -  max -
    """
    target = f"target {s['target_rate']:g}/s" if s["target_rate"] else "as fast as answered"
    lines = [
        f"sent {s['requests']:,} requests to {s['url']} in {s['duration_s']:.2f} s: {s['throughput_rps']:,.1f} "
        f"requests/s ({target}, {s['connections']} connections)"
    ]
    codes = ", ".join(f"{status} × {n:,}" for status, n in s["statuses"].items()) or "none"
    c = s["status_classes"]
    lines.append(
        f"statuses: {codes} (2xx {c['2xx']:,}, 4xx {c['4xx']:,}, 5xx {c['5xx']:,}, "
        f"connection errors {s['connection_errors']:,})"
    )
    if s["connection_errors"]:
        kinds = ", ".join(f"{kind} × {n:,}" for kind, n in s["error_kinds"].items())
        lines.append(f"  connection errors: {kinds}; first: {s['first_error']}")
    if "401" in s["statuses"]:
        lines.append("  401: the API refused the key; give --api-key or set BNPL_API_KEYS")
    answered = sum(s["decisions"].values())
    mix = ", ".join(f"{d} {n:,} ({n / answered:.1%})" for d, n in s["decisions"].items()) or "none"
    lines.append(f"decisions: {mix}")
    if len(s["decisions_by_segment"]) > 1:
        for segment, counts in s["decisions_by_segment"].items():
            lines.append(f"  {segment}: " + ", ".join(f"{d} {n:,}" for d, n in counts.items()))
    lat = s["latency_ms"]
    shown = "  ".join(f"{k} {_ms(v if v is not None else math.nan)}" for k, v in lat.items())
    lines.append(f"latency from the {s['latency_from']}, ms: {shown}")
    lag = s["max_schedule_lag_ms"]
    if lag is not None and lag >= LAG_NOTE_MS:
        lines.append(
            f"  the sender fell up to {lag:,.0f} ms behind its schedule (every connection busy, or the client "
            "short of CPU); those waits are in the latencies"
        )
    if s.get("interrupted"):
        lines.append("stopped early (Ctrl-C)")
    return "\n".join(lines)
