"""The operations kit: ``deploy/prometheus`` (scrape config, alert rules and their unit tests) and
``deploy/grafana/bnpl-dashboard.json``.

promtool accepts the config and the rules and the rules fire on synthetic series; every metric a rule or a panel
names is exported — scraped from a real API on a real redis-server, a real alert-sender worker process and a drift
worker's collector; the scrape targets are the compose services and the workers' ports. promtool is required (Debian
package ``prometheus``; ``.ci/run`` installs it): without it these tests fail, they do not skip.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common.processes import wait_http
from common.redis_client import redis_for
from common.settings import Settings, declared
from consumers.cli import METRICS_PORTS, WorkerCollector, metrics_port, serve_metrics
from consumers.groups import GROUPS
from consumers.runtime import ConsumerWorker
from datagen import ORIGINAL_EXAMPLE
from tests.conftest import api_settings, make_settings, start_api
from tests.streams import spawn_worker, worker_env

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "alert-rules.yml"
RULE_TESTS = PROMETHEUS / "alert-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "bnpl-dashboard.json"
#: Metric names of this system in a PromQL expression (Prometheus's own ``up`` and ``ALERTS`` are not ours).
METRIC_NAME = re.compile(r"\bbnpl_[a-z0-9_]+")
#: The series names a family of each type gives PromQL (``bnpl_decisions`` the counter is ``bnpl_decisions_total``).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}
#: Grafana's interval variables, replaced for promtool.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


# --- helpers -------------------------------------------------------------------------------------------------------
def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool from the repository root; fail (not skip) when it is not installed."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: install it with `apt-get install -y prometheus` (Debian/Ubuntu; .ci/run "
            "does) — these checks of deploy/prometheus must run",
            pytrace=False,
        )
    return subprocess.run([path, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def rules_of(path: Path) -> list[dict[str, Any]]:
    """Every rule of a Prometheus rule file."""
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def rule_expressions(path: Path) -> list[str]:
    """The PromQL expression of every rule of a rule file."""
    return [str(rule["expr"]) for rule in rules_of(path)]


def _panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def dashboard_expressions(path: Path) -> list[str]:
    """The PromQL expression of every query of every panel of a Grafana dashboard."""
    dashboard = json.loads(path.read_text())
    return [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", []) if t.get("expr")]


def series_names(exposition: str) -> set[str]:
    """The series names a ``/metrics`` text gives PromQL, with the suffixes each family's type implies."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names |= {family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def unexported(expressions: Iterable[str], exported: set[str]) -> list[str]:
    """The metric names the expressions use that no scraped ``/metrics`` exports (empty when all are)."""
    return sorted({name for expr in expressions for name in METRIC_NAME.findall(expr)} - exported)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _scrape_api(tmp: Path, redis_url: str, prefix: str) -> str:
    """``/metrics`` of a real API (no model loaded: the rule-based fallback decides) after one decision."""
    client, stop = await start_api(api_settings(tmp, redis_url, prefix))
    try:
        status, _ = await client.assess(ORIGINAL_EXAMPLE)
        assert status == 200
        async with client.session.get(client.url("/metrics")) as response:
            assert response.status == 200
            return await response.text()
    finally:
        await stop()


def _scrape_worker_process(tmp: Path, redis_url: str, prefix: str) -> str:
    """``/metrics`` of a real ``bnpl consume alert-sender`` process (on a free port: the default may be taken)."""
    port = _free_port()
    env = worker_env(
        redis_url,
        prefix,
        tmp / "warehouse.duckdb",
        tmp / "data",
        BNPL_METRICS_PORT=str(port),
        BNPL_WEBHOOK_URLS="http://127.0.0.1:9/webhook",
        BNPL_WEBHOOK_SECRET="s3cret",
    )
    proc = spawn_worker("alert-sender", env)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_http(url, proc, seconds=120)
        with urllib.request.urlopen(url, timeout=10) as response:
            text: str = response.read().decode()
            return text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


async def _scrape_collector(settings: Settings, group: str, alerts_raised: Iterable[str] = ()) -> str:
    """The text of :class:`WorkerCollector` over a real worker of ``group`` (built, not started)."""
    redis = redis_for(settings.streams, role="worker")
    try:
        worker = ConsumerWorker(redis, settings.keys, GROUPS[group](settings, redis), settings.consumers)
        getattr(worker.handler, "alerts_sent", []).extend(alerts_raised)
        registry = CollectorRegistry()
        registry.register(WorkerCollector(worker))
        text: str = generate_latest(registry).decode()
        return text
    finally:
        await redis.aclose()


async def _serve_on(settings: Settings, port: int) -> Any:
    redis = redis_for(settings.streams, role="worker")
    try:
        worker = ConsumerWorker(redis, settings.keys, GROUPS["alert-sender"](settings, redis), settings.consumers)
        return serve_metrics(worker, "127.0.0.1", port)
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def scraped(redis_server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``/metrics`` texts: the API's, an alert-sender worker process's, a drift worker's (one alert raised)."""
    tmp = tmp_path_factory.mktemp("ops-kit")
    prefix = f"ops-{uuid.uuid4().hex[:8]}"
    drift = make_settings(tmp / "drift", redis_url=redis_server.url, key_prefix=prefix)
    return {
        "api": asyncio.run(_scrape_api(tmp / "api", redis_server.url, prefix)),
        "alert-sender": _scrape_worker_process(tmp / "worker", redis_server.url, prefix),
        "drift": asyncio.run(_scrape_collector(drift, "drift", ["drift:3:feature_psi:amount"])),
    }


@pytest.fixture(scope="module")
def exported(scraped: dict[str, str]) -> set[str]:
    """Every series name the API and the workers export."""
    return set().union(*(series_names(text) for text in scraped.values()))


# --- promtool ------------------------------------------------------------------------------------------------------
def test_promtool_accepts_the_scrape_config_and_the_rules_it_loads():
    config = yaml.safe_load(CONFIG.read_text())
    assert [(CONFIG.parent / name).resolve() for name in config["rule_files"]] == [RULES.resolve()]
    result = promtool("check", "config", str(CONFIG.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules():
    result = promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    for rule in rules_of(RULES):
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert "for" in rule, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_the_alerts_fire_on_synthetic_series():
    result = promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert {"BnplFallbackEngaged", "BnplConsumerLagHigh", "BnplConsumerGroupWithoutConsumers"} <= fired


def test_promtool_rejects_a_broken_rule(tmp_path):
    broken = RULES.read_text().replace("sum by (group) (bnpl_consumer_lag)", "sum by (group (bnpl_consumer_lag)")
    assert broken != RULES.read_text()
    (tmp_path / "alert-rules.yml").write_text(broken)
    assert promtool("check", "rules", str(tmp_path / "alert-rules.yml")).returncode != 0


def test_every_dashboard_query_is_valid_promql(tmp_path):
    rules = []
    for i, expr in enumerate(dashboard_expressions(DASHBOARD)):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    assert len(rules) >= 8
    (tmp_path / "dashboard-rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(tmp_path / "dashboard-rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


# --- the names the rules and panels use are exported ---------------------------------------------------------------
def test_the_scrapes_are_the_api_and_the_workers(scraped):
    assert "bnpl_decisions_total" in series_names(scraped["api"])
    assert "bnpl_spool_pending_bytes" in series_names(scraped["api"])
    worker = series_names(scraped["alert-sender"])
    assert {"bnpl_consumer_up", "bnpl_consumer_lag", "bnpl_alert_delivery_failures_total"} <= worker
    assert {"bnpl_consumer_processed_total", "bnpl_consumer_batch_seconds"} <= worker  # the names from before
    assert "process_resident_memory_bytes" in worker  # and the process's own


def test_every_metric_the_alert_rules_name_is_exported(exported):
    assert unexported(rule_expressions(RULES), exported) == []


def test_every_metric_the_dashboard_panels_name_is_exported(exported):
    assert unexported(dashboard_expressions(DASHBOARD), exported) == []


def test_a_name_nobody_exports_is_reported(exported, tmp_path):
    rules = yaml.safe_load(RULES.read_text())
    rules["groups"][0]["rules"].append(
        {
            "alert": "BnplBroken",
            "expr": "bnpl_no_such_metric > 0",
            "for": "1m",
            "labels": {"severity": "warning"},
            "annotations": {"summary": "broken", "description": "broken"},
        }
    )
    broken_rules = tmp_path / "alert-rules.yml"
    broken_rules.write_text(yaml.safe_dump(rules))
    assert promtool("check", "rules", str(broken_rules)).returncode == 0  # valid PromQL: only the export check sees it
    assert unexported(rule_expressions(broken_rules), exported) == ["bnpl_no_such_metric"]

    dashboard = json.loads(DASHBOARD.read_text())
    target = next(p for p in dashboard["panels"] if p["title"] == "Decisions per second")["targets"][0]
    target["expr"] = "sum(rate(bnpl_decisions[5m]))"  # the family's name, not the counter's series name
    broken_dashboard = tmp_path / "dashboard.json"
    broken_dashboard.write_text(json.dumps(dashboard))
    assert unexported(dashboard_expressions(broken_dashboard), exported) == ["bnpl_decisions"]


def test_drift_alerts_are_counted_by_kind_and_model_version(scraped):
    (family,) = [f for f in text_string_to_metric_families(scraped["drift"]) if f.name == "bnpl_drift_alerts_raised"]
    ((labels, value),) = [(s.labels, s.value) for s in family.samples if s.name.endswith("_total")]
    assert (labels["group"], labels["kind"], labels["model_version"], value) == ("drift", "feature_psi", "3", 1.0)


# --- workers' ports ------------------------------------------------------------------------------------------------
def test_workers_serve_metrics_by_default_on_their_groups_ports():
    assert set(METRICS_PORTS) == set(GROUPS)
    bases = sorted(METRICS_PORTS.values())
    assert all(b - a >= 10 for a, b in itertools.pairwise(bases))  # ten workers per group and host
    default = Settings.from_env({}).consumers
    assert (default.metrics_port, default.metrics_host) == (None, "127.0.0.1")
    assert {g: metrics_port(default, g) for g in GROUPS} == METRICS_PORTS
    second = Settings.from_env({"BNPL_WORKER_INDEX": "1"}).consumers
    assert metrics_port(second, "drift") == METRICS_PORTS["drift"] + 1
    explicit = Settings.from_env({"BNPL_METRICS_PORT": "9200", "BNPL_WORKER_INDEX": "2"}).consumers
    assert metrics_port(explicit, "drift") == 9202
    assert metrics_port(Settings.from_env({"BNPL_METRICS_PORT": "0"}).consumers, "drift") == 0
    assert Settings.from_env({"BNPL_METRICS_HOST": "0.0.0.0"}).consumers.metrics_host == "0.0.0.0"


def test_a_port_in_use_is_logged_and_the_worker_runs_on(tmp_path, redis_server, caplog):
    settings = make_settings(
        tmp_path, redis_url=redis_server.url, webhook_urls=("http://127.0.0.1:9/webhook",), webhook_secret="s"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with caplog.at_level(logging.WARNING, logger="consumers.cli"):
            assert asyncio.run(_serve_on(settings, taken.getsockname()[1])) is None
    assert "metrics not served" in caplog.text


def test_scrape_targets_are_the_compose_services_and_their_workers_ports():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert [t for c in jobs["bnpl-api"] for t in c["targets"]] == [f"api:{compose['api']['command'][-1]}"]
    expected: dict[str, set[str]] = {}
    for name, service in compose.items():
        command = service.get("command") or []
        if command[:1] != ["consume"]:
            continue
        group = command[1]
        workers = int(command[command.index("--workers") + 1]) if "--workers" in command else 1
        assert service["environment"]["BNPL_METRICS_HOST"] == "0.0.0.0", name
        ports = [METRICS_PORTS[group] + i for i in range(workers)]
        assert sorted(int(p) for p in service.get("expose", [])) == ports, name
        expected.setdefault(group, set()).update(f"{name}:{port}" for port in ports)
    found = {c["labels"]["group"]: set(c["targets"]) for c in jobs["bnpl-consumers"]}
    assert found == expected
    assert set(found) == set(GROUPS)


def test_the_readme_documents_the_alerts_ports_and_files():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Monitoring") :]
    section = section[: section.index("\n## ", 1)]
    for rule in rules_of(RULES):
        assert f"`{rule['alert']}`" in section
    for group, port in METRICS_PORTS.items():
        assert f"| {group} | {port} |" in section
    for path in (CONFIG, RULES, RULE_TESTS, DASHBOARD):
        assert str(path.relative_to(ROOT)) in section


def test_the_kit_names_only_declared_variables():
    known = {info.env for info in declared()}
    for path in (CONFIG, RULES, DASHBOARD):
        named = set(re.findall(r"\bBNPL_[A-Z_]+\b", path.read_text()))
        assert named <= known, f"{path.name} names undeclared variables {sorted(named - known)}"
