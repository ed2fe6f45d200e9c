"""``bnpl send`` against the real API (real Redis, rule-based decisions) as a process, on a terminal and off one;
``bnpl generate``'s outcome file and drift knobs."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bnpl_cli.main import main
from decision.engine import DecisionEngine
from tests.conftest import api_settings, start_api

ROOT = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT_S = 90.0
BNPL = [str(Path(sys.executable).with_name("bnpl"))]  # the console script, as people run it


class RecordingEngine(DecisionEngine):
    """The rule-based engine, noting every transaction it decided."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def decide(self, request, started=None):
        self.seen.append(request.transaction_id)
        return super().decide(request, started)


@pytest.fixture
async def served(tmp_path, redis_server, key_prefix):
    """The API on a free port (key ``test-key``), deciding with the rule-based policy; yields (host, port, engine)."""
    engine = RecordingEngine()
    client, stop = await start_api(api_settings(tmp_path, redis_server.url, key_prefix), engine)
    yield client.server.host, client.server.port, engine
    await stop()


def _env(host: str, port: int) -> dict[str, str]:
    """The sender's environment: the API's address and key come from the settings, as on a developer machine."""
    return {**os.environ, "BNPL_HOST": host, "BNPL_PORT": str(port), "BNPL_API_KEYS": "test-key"}


async def _on_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``bnpl args`` with stdout and stderr on a pseudo-terminal (120 columns); exit code and everything shown."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        *BNPL, *args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    try:
        reading = asyncio.create_task(asyncio.to_thread(drain))
        code = await asyncio.wait_for(proc.wait(), PROCESS_TIMEOUT_S)
        await asyncio.wait_for(reading, 10)
    finally:
        os.close(master)
    return code, b"".join(chunks).decode()


async def _piped(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``bnpl args`` with stdout and stderr on pipes; exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *BNPL, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
    )
    out, err = await asyncio.wait_for(proc.communicate(), PROCESS_TIMEOUT_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_send_on_a_terminal_shows_live_percentiles_then_the_summary(served):
    host, port, engine = served
    code, shown = await _on_terminal(["send", "--rate", "200", "--seconds", "3"], _env(host, port))
    assert code == 0, shown
    redraws = re.findall(r"\r\[[#-]+\]\s+\d+%.*?p50 [\d.]+ +p95 [\d.]+ +p99 [\d.]+ ms +[\d,]+ req/s", shown)
    assert len(redraws) >= 4, shown  # a few times a second for three seconds
    sent = int(re.search(r"^sent ([\d,]+) requests to http://\S+/v1/bnpl/risk-assessment in ", shown, re.M)[1])
    assert 540 <= sent <= 660, shown
    assert f"statuses: 200 × {sent:,} (2xx {sent:,}, 4xx 0, 5xx 0, connection errors 0)" in shown
    assert re.search(r"^decisions: approve [\d,]+ \(", shown, re.M), shown
    assert re.search(
        r"^latency from the scheduled send time, ms: p50 [\d.]+ +p95 [\d.]+ +p99 [\d.]+ +max ", shown, re.M
    )
    assert "Traceback" not in shown
    assert len(engine.seen) == sent


async def test_send_off_a_terminal_prints_progress_lines_and_a_json_summary(served):
    host, port, engine = served
    code, out, err = await _piped(["send", "--rate", "100", "--seconds", "6", "--json"], _env(host, port))
    assert code == 0, err
    summary = json.loads(out)
    n = summary["requests"]
    assert 500 <= n <= 700
    assert summary["statuses"] == {"200": n}
    assert summary["status_classes"] == {"2xx": n, "3xx": 0, "4xx": 0, "5xx": 0}
    assert summary["connection_errors"] == 0
    assert sum(summary["decisions"].values()) == n
    assert summary["decisions_by_segment"].keys() == {"fallback"}  # no models: the rule-based policy decides
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert summary["target_rate"] == 100
    assert summary["duration_s"] >= 5.9
    assert "\r" not in err  # no bar off a terminal: a line every few seconds instead
    assert re.search(r"^send:\s+\d+\.\ds  sent [\d,]+  failed 0  p50 ", err, re.M), err
    assert len(engine.seen) == n


async def test_file_replay_sends_exactly_the_files_rows(served, tmp_path):
    host, port, engine = served
    requests = tmp_path / "requests.jsonl"
    assert main(["generate", "--rows", "257", "--seed", "11", "--out", str(requests)]) == 0
    ids = [orjson.loads(line)["transaction_id"] for line in requests.read_bytes().splitlines()]
    code, out, err = await _piped(["send", "--file", str(requests), "--rate", "0", "--json"], _env(host, port))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["requests"] == 257
    assert summary["statuses"] == {"200": 257}
    assert summary["target_rate"] is None
    assert sorted(engine.seen) == sorted(ids)  # each row once, nothing else

    code, out, _ = await _piped(
        ["send", "--file", str(requests), "--rate", "0", "--requests", "50", "--json"], _env(host, port)
    )
    assert code == 0
    assert json.loads(out)["requests"] == 50


async def test_server_errors_exit_1_and_are_counted(tmp_path):
    async def broken(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": "internal_error"}, status=500)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/bnpl/risk-assessment", broken)
    app.router.add_get("/healthz", healthz)
    server = TestServer(app)
    await server.start_server()
    try:
        url = f"http://{server.host}:{server.port}"
        code, out, _ = await _piped(
            ["send", "--url", url, "--api-key", "k", "--rate", "0", "--requests", "20"], dict(os.environ)
        )
    finally:
        await server.close()
    assert code == 1
    assert "statuses: 500 × 20 (2xx 0, 4xx 0, 5xx 20, connection errors 0)" in out


def test_an_unreachable_api_is_one_line_and_exit_3():
    from common.redis_server import free_port

    proc = subprocess.run(
        [*BNPL, "send", "--url", f"http://127.0.0.1:{free_port()}", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: cannot reach the API at http://127.0.0.1:"), proc.stderr
    assert "connection refused" in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == ""


def test_send_refuses_bad_options(tmp_path, capsys):
    assert main(["send", "--rate", "-1"]) == 2
    assert main(["send", "--file", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["send", "--file", str(tmp_path / "x.jsonl"), "--drift", "covariate"]) == 2
    assert main(["send", "--url", "ftp://somewhere"]) == 2
    err = capsys.readouterr().err
    assert "--rate -1: expected >= 0" in err
    assert "--drift with --file" in err
    assert "expected http://host:port" in err


# --- bnpl generate -------------------------------------------------------------------------------------------------
def _rows(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_generate_writes_outcomes_apart_in_the_loaders_format(tmp_path, capsys, suffix):
    from bnpl_cli.outcomes import validate_file

    requests, outcomes = tmp_path / "requests.jsonl", tmp_path / f"outcomes{suffix}"
    args = ["generate", "--rows", "400", "--seed", "5", "--out", str(requests), "--outcomes-out", str(outcomes)]
    assert main(args) == 0
    assert f"outcomes to {outcomes}" in capsys.readouterr().out
    rows = _rows(requests)
    assert len(rows) == 400
    assert all("outcome" not in row for row in rows)
    loaded, errors = validate_file(outcomes, source=None)
    assert errors == []
    ids = {row["transaction_id"] for row in rows}
    assert {o.transaction_id for o in loaded} == ids  # every request's outcome, keyed by its transaction id
    customers = {row["transaction_id"]: row["customer_id"] for row in rows}
    assert all(customers[o.transaction_id] == o.customer_id for o in loaded)
    assert {o.outcome for o in loaded} <= {"paid", "defaulted", "charged_off", "partially_paid"}
    assert any(o.bad for o in loaded)


def test_generate_drift_moves_the_requests_after_the_start_only(tmp_path, capsys):
    base, shifted, new = tmp_path / "base.jsonl", tmp_path / "shifted.jsonl", tmp_path / "new.jsonl"
    assert main(["generate", "--rows", "20000", "--seed", "3", "--out", str(base)]) == 0
    common = ["--rows", "20000", "--seed", "3", "--drift-start", "8000"]
    assert main(["generate", *common, "--out", str(shifted), "--drift", "covariate", "--drift-share", "0.8"]) == 0
    assert "covariate drift from row 8,000" in capsys.readouterr().out
    assert main(["generate", *common, "--out", str(new), "--drift", "new-category", "--drift-share", "0.2"]) == 0
    a, b, c = _rows(base), _rows(shifted), _rows(new)
    assert a[:8000] == b[:8000] == c[:8000]  # before the start: the same requests as without drift

    def mean_score(rows: list[dict]) -> float:
        return float(np.mean([r["risk_score"] for r in rows]))

    def low_income(rows: list[dict]) -> float:
        return float(np.mean([r["customer_income_bracket"] in ("<25k", "25k-50k") for r in rows]))

    assert mean_score(b[8000:]) > mean_score(a[8000:]) + 0.02
    assert low_income(b[8000:]) > low_income(a[8000:]) + 0.1
    zip_share = np.mean([r["payment_provider"] == "zip" for r in c[8000:]])
    assert 0.17 <= zip_share <= 0.23
    assert not any(r["payment_provider"] == "zip" for r in c[:8000])


def test_generate_concept_drift_changes_outcomes_not_requests(tmp_path):
    from bnpl_cli.outcomes import validate_file

    paths = {name: (tmp_path / f"{name}.jsonl", tmp_path / f"{name}-outcomes.jsonl") for name in ("base", "concept")}
    for name, (requests, outcomes) in paths.items():
        drift = ["--drift", "concept", "--drift-factor", "4", "--drift-start", "5000"] if name == "concept" else []
        args = ["generate", "--rows", "20000", "--seed", "6", "--out", str(requests), "--outcomes-out", str(outcomes)]
        assert main([*args, *drift]) == 0
    assert paths["base"][0].read_bytes() == paths["concept"][0].read_bytes()
    rows = _rows(paths["base"][0])
    electronics_later = {r["transaction_id"] for r in rows[5000:] if r["product_category"] == "electronics"}

    def bad_share(outcomes: Path) -> float:
        loaded, _ = validate_file(outcomes, source=None)
        bad = {o.transaction_id for o in loaded if o.bad}
        return len(bad & electronics_later) / len(electronics_later)

    assert bad_share(paths["concept"][1]) > 2 * bad_share(paths["base"][1])


def test_generate_refuses_drift_knobs_that_do_not_fit(capsys, tmp_path):
    out = str(tmp_path / "r.jsonl")
    assert main(["generate", "--rows", "100", "--out", out, "--drift-start", "10"]) == 2
    assert main(["generate", "--rows", "100", "--out", out, "--drift", "new-category", "--drift-factor", "2"]) == 2
    assert main(["generate", "--rows", "100", "--out", out, "--drift", "covariate", "--drift-start", "100"]) == 2
    err = capsys.readouterr().err
    assert "--drift-start without --drift" in err
    assert "has no factor" in err
    assert "expected a row index in 0 … 99" in err
