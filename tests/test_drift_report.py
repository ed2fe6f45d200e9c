"""Drift you can see: the drift group's windows in MLflow (one run per version and day) and ``bnpl drift-report``
(terminal and HTML), on real Redis, a real MLflow SQLite registry (a private copy) and a real DuckDB warehouse."""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from common.settings import ConsumerSettings, Settings
from consumers.drift_group import DriftHandler
from consumers.drift_runs import DriftRuns, drift_experiment, run_name
from consumers.runtime import ConsumerWorker
from consumers.warehouse import WarehouseHandler
from datagen import CovariateShift, NewCategory, generate
from decision.engine import DecisionEngine
from drift.monitor import event_time, utc_day
from registry import mlflow_client, resolve_alias
from schemas import parse_request
from tests.conftest import make_settings
from tests.streams import add_events, wait_group_drained
from warehouse.duckdb_store import DuckDBWarehouse

FAST = ConsumerSettings(
    batch_size=500, max_wait_s=0.2, block_ms=100, claim_idle_ms=1_000, claim_every_s=0.5, max_backoff_s=1.0
)
WINDOW = 500
REQUESTS = 6_000
DRIFT_START = REQUESTS // 2
START = datetime(2026, 3, 2, tzinfo=UTC)
#: Moved by the covariate shift (a newer, riskier population) / left alone by it.
DRIFTED = ("customer_tenure_days", "payment_credit_limit")
UNDRIFTED = ("amount", "installment_count", "device_is_trusted")


def _registry_copy(trained_registry: Any, directory: Path) -> Settings:
    """Settings on a private copy of the session registry (this module writes drift runs into it)."""
    settings, _ = trained_registry
    (directory / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(settings.registry.tracking_uri.removeprefix("sqlite:///"), directory / "data" / "mlflow.db")
    return make_settings(directory / "data")


async def _run_groups(settings: Settings, handlers: list[Any], redis: Any) -> None:
    """Run one worker per handler until each has drained the prediction stream, then stop them."""
    keys = settings.keys
    workers = [ConsumerWorker(redis, keys, h, FAST, name=f"{h.group}-1") for h in handlers]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        for handler in handlers:
            await wait_group_drained(redis, keys.predictions(), handler.group, seconds=120)
            if isinstance(handler, DriftHandler) and handler.runs is not None:
                assert await asyncio.to_thread(handler.runs.flush, 60)
    finally:
        for w in workers:
            w.request_stop()
        await asyncio.gather(*tasks)


@pytest.fixture(scope="module")
def landed(tmp_path_factory, trained_registry, loaded_models, redis_server):
    """Three days of traffic (from 2 March 2026), the second half drifted (a riskier population, and 20 % with a
    payment provider the models never saw), decided by the registry's models, through the warehouse and drift
    groups (windows of 500 requests)."""
    directory = tmp_path_factory.mktemp("drift-report")
    prefix = f"dr-{uuid.uuid4().hex[:8]}"
    settings = _registry_copy(trained_registry, directory).replace(
        redis_url=redis_server.url, key_prefix=prefix, window=WINDOW
    )
    data = generate(
        REQUESTS,
        seed=11,
        start=START,
        days=3,
        drifts=[
            CovariateShift(start_index=DRIFT_START, share=1.0),
            NewCategory(start_index=DRIFT_START, share=0.2),
        ],
    )
    engine = DecisionEngine(loaded_models)
    events = [engine.decide(parse_request(data.request(i)))[1] for i in range(REQUESTS)]

    async def land() -> DriftHandler:
        redis = aioredis.from_url(redis_server.url)
        try:
            await add_events(redis, settings.keys.predictions(), events)
            warehouse = WarehouseHandler(DuckDBWarehouse(settings.warehouse.duckdb_path), settings.keys)
            drift = DriftHandler(settings.drift, settings.alerts, settings.registry, redis, settings.keys)
            await _run_groups(settings, [warehouse, drift], redis)
        finally:
            await redis.aclose()
        return drift

    handler = asyncio.run(land())
    return settings, data, events, handler


def _windows(events: list[Any], version: str) -> list[tuple[int, int]]:
    """(first, last) request time in ms of each closed window of ``version``: its decisions in stream order, in
    chunks of WINDOW."""
    times = [event_time(e.request.transaction_timestamp) for e in events if e.decision.model_version == version]
    chunks = [times[i : i + WINDOW] for i in range(0, len(times) - WINDOW + 1, WINDOW)]
    return [(round(min(c) * 1000), round(max(c) * 1000)) for c in chunks]  # type: ignore[type-var]


def test_drift_windows_land_in_one_mlflow_run_per_version_and_day(landed):
    settings, _, events, handler = landed
    client = mlflow_client(settings.registry)
    experiment = client.get_experiment_by_name(drift_experiment(settings.registry.model_name))
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`bnpl.kind` = 'drift'")
    assert handler.runs is not None
    assert handler.runs.dropped == 0
    assert handler.runs.logged > 0
    versions = {e.decision.model_version for e in events}
    assert len(versions) >= 1
    checked = 0
    for version in versions:
        expected = _windows(events, version)
        days = sorted({utc_day(end / 1000) for _, end in expected})
        mine = {r.data.tags["bnpl.day"]: r for r in runs if r.data.tags["bnpl.model_version"] == version}
        assert sorted(mine) == days  # one run per day the version closed a window on
        for day in days:
            run = mine[day]
            assert run.info.run_name == run_name(version, day)
            assert run.data.tags["bnpl.model_name"] == settings.registry.model_name
            history = client.get_metric_history(run.info.run_id, "feature_psi/amount")
            in_day = [w for w in expected if utc_day(w[1] / 1000) == day]
            assert [m.step for m in history] == list(range(len(in_day)))  # steps 0..N within the day
            for metric, (first, last) in zip(sorted(history, key=lambda m: m.step), in_day, strict=True):
                assert first <= metric.timestamp <= last  # inside the window (its end: the latest request)
                assert metric.timestamp == last
            requests = client.get_metric_history(run.info.run_id, "requests")
            assert {m.value for m in requests} == {WINDOW}
            metrics = client.get_run(run.info.run_id).data.metrics
            assert {"score_psi", "score_ks", "unknown_rate/payment_provider", "category_psi/payment_provider"} <= set(
                metrics
            )
            # Every day but the last has closed (requests of the next day arrived, past the lateness): FINISHED.
            assert run.info.status == ("RUNNING" if day == days[-1] else "FINISHED"), (day, run.info.status)
            checked += 1
    assert checked >= 3  # at least three days of one version
    # The new payment provider shows in the drifted windows' unknown rate, not in the clean ones.
    champion = max(versions, key=lambda v: sum(e.decision.model_version == v for e in events))
    last_day = max(r.data.tags["bnpl.day"] for r in runs if r.data.tags["bnpl.model_version"] == champion)
    first_day = min(r.data.tags["bnpl.day"] for r in runs if r.data.tags["bnpl.model_version"] == champion)
    by_day = {r.data.tags["bnpl.day"]: r for r in runs if r.data.tags["bnpl.model_version"] == champion}
    late = client.get_metric_history(by_day[last_day].info.run_id, "unknown_rate/payment_provider")
    early = client.get_metric_history(by_day[first_day].info.run_id, "unknown_rate/payment_provider")
    assert min(m.value for m in late) > 0.1 > max(m.value for m in early)


class _Figures(HTMLParser):
    """Counts ``<figure>`` elements holding an image (``<img>`` with a data URL, or ``<svg>``) and a caption."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "figure":
            self._open = {"image": False, "caption": ""}
        elif self._open is not None and tag == "img":
            src = dict(attrs).get("src") or ""
            self._open["image"] = src.startswith("data:image/png;base64,") and len(src) > 1_000
        elif self._open is not None and tag == "svg":
            self._open["image"] = True
        elif self._open is not None and tag == "figcaption":
            self._in_caption = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "figcaption":
            self._in_caption = False
        elif tag == "figure" and self._open is not None:
            self.figures.append(self._open)
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._in_caption and self._open is not None:
            self._open["caption"] += data


def _figures(page: str) -> list[dict[str, Any]]:
    parser = _Figures()
    parser.feed(page)
    return [f for f in parser.figures if f["image"] and f["caption"].strip()]


def _table_rows(text: str, header: str) -> dict[str, list[str]]:
    """The rows of the terminal table whose header line starts with ``header``, by first column."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


def test_drift_report_shows_drifted_fields_alerts_and_an_html_page_with_figures(landed, tmp_path, monkeypatch, capsys):
    from bnpl_cli.main import main

    settings, _, events, _ = landed
    monkeypatch.setenv("BNPL_REDIS_URL", settings.streams.redis_url)
    monkeypatch.setenv("BNPL_KEY_PREFIX", settings.streams.key_prefix)
    page = tmp_path / "drift.html"
    assert main(["--data-dir", str(settings.data_dir), "drift-report", "--days", "30", "--html", str(page)]) == 0
    text = capsys.readouterr().out
    champion = resolve_alias(mlflow_client(settings.registry), settings.registry.model_name, "champion")
    decided = sum(e.decision.model_version == champion.version for e in events)
    assert f"drift report — {settings.registry.model_name} v{champion.version} (champion" in text
    assert f"traffic: {decided:,} requests decided by v{champion.version}" in text
    assert "2026-03-02" in text
    assert "2026-03-04" in text

    # Whole period: the fields the covariate shift moved drift more than the ones it left alone.
    numeric = _table_rows(text, "field  ")
    psi_all = {name: float(cells[0]) for name, cells in numeric.items()}
    assert min(psi_all[f] for f in DRIFTED) > max(psi_all[f] for f in UNDRIFTED), psi_all
    # The latest window (drifted) against the first (clean), from the report's own windows.
    from bnpl_cli.drift_report import load_traffic
    from drift.report import build_report
    from registry import get_version, read_profile

    profile = read_profile(
        get_version(mlflow_client(settings.registry), settings.registry.model_name, champion.version)
    )
    report = build_report(
        settings.registry.model_name,
        champion.version,
        ("champion",),
        profile,
        load_traffic(settings, champion.version, 30),
        [],
        30,
    )
    assert len(report.windows) >= 6  # three days, windows of at most 12 h
    for name in DRIFTED:
        series = report.series(f"feature_psi/{name}")
        assert np.nanmean(series[-3:]) > 3 * np.nanmean(series[:3]), (name, series)
    for name in UNDRIFTED:
        assert report.overall[f"feature_psi/{name}"] < min(report.overall[f"feature_psi/{d}"] for d in DRIFTED)
    unknown = report.series("unknown_rate/payment_provider")
    assert unknown[0] == 0.0
    assert unknown[-1] > 0.1
    assert report.score is not None
    assert math.isclose(sum(report.score.now), 1.0)

    # The alerts the drift group raised for the champion: the new provider among them.
    assert "drift alerts of v" in text
    alerts = _table_rows(text, "raised (UTC)")
    assert alerts
    assert "unknown_category_rate" in text.split("drift alerts of v")[1]
    assert "payment_provider" in text.split("drift alerts of v")[1]

    # The HTML page: at least four captioned figures, inline (no network), in the file and as a browser renders it.
    html = page.read_text()
    found = _figures(html)
    assert len(found) >= 4, found
    assert "http://" not in html
    assert "https://" not in html
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: the page was checked by parsing only")
    dumped = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rendered = _figures(dumped)
    assert len(rendered) == len(found)
    assert [f["caption"] for f in rendered] == [f["caption"] for f in found]


async def test_mlflow_down_leaves_detection_alone_and_windows_wait_for_it(
    trained_registry, loaded_models, redis_server, key_prefix, tmp_path, caplog
):
    from common.redis_server import free_port

    settings = _registry_copy(trained_registry, tmp_path).replace(
        redis_url=redis_server.url, key_prefix=key_prefix, window=WINDOW
    )
    down = settings.replace(tracking_uri=f"http://127.0.0.1:{free_port()}").registry
    data = generate(2_000, seed=12, start=START, days=1, drifts=[NewCategory(start_index=0, share=0.3)])
    engine = DecisionEngine(loaded_models)
    events = [engine.decide(parse_request(data.request(i)))[1] for i in range(len(data))]
    redis = aioredis.from_url(redis_server.url)
    keys = settings.keys
    handler = DriftHandler(settings.drift, settings.alerts, settings.registry, redis, keys)
    # Detectors first (their reference profiles come from the registry), then MLflow goes away for the drift runs.
    for version in {v for e in events for v in e.decision.model_versions.values()}:
        await handler._monitor(keys.predictions(), settings.registry.model_name, version)
    handler.runs = DriftRuns(down, settings.drift)
    caplog.set_level(logging.WARNING, logger="consumers.drift_runs")
    worker = ConsumerWorker(redis, keys, handler, FAST, name="drift-1")
    task = asyncio.create_task(worker.run())
    try:
        await add_events(redis, keys.predictions(), events)
        await wait_group_drained(redis, keys.predictions(), "drift", seconds=60)
        assert await redis.xlen(keys.alerts()) > 0  # detection and alerting went on
        assert worker.stats.retries == 0  # the batches never failed on MLflow's account
        for _ in range(100):
            if handler.runs.failures:
                break
            await asyncio.sleep(0.1)
        assert handler.runs.failures >= 1
        assert handler.runs.pending >= 1
        assert any("MLflow logging failed" in r.getMessage() for r in caplog.records)
        # MLflow is back (here: the registry the detectors read): the windows that waited are logged.
        handler.runs.registry = settings.registry
        assert await asyncio.to_thread(handler.runs.flush, 90)
    finally:
        worker.request_stop()
        await task
        await redis.aclose()
        mlflow_client(settings.registry)  # the process-wide MLflow URIs back on a registry that exists
    client = mlflow_client(settings.registry)
    experiment = client.get_experiment_by_name(drift_experiment(settings.registry.model_name))
    runs = client.search_runs([experiment.experiment_id])
    windows = sum(len(client.get_metric_history(r.info.run_id, "requests")) for r in runs)
    assert windows == handler.runs.logged >= len(data) // WINDOW
