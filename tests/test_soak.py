"""``make bench-soak``'s run, short: the whole system (API, warehouse, mlflow, drift and alert-sender groups, a
webhook receiver, a private redis-server) under an open-loop rate; the counts at the end, never its timings."""

from __future__ import annotations

import pytest

from bench.soak_bench import GROUPS, report, run_soak


@pytest.mark.timeout(600)
def test_a_short_soak_lands_every_answered_decision_exactly_once(trained_registry, tmp_path):
    settings, _ = trained_registry
    result = run_soak(settings, tmp_path, seconds=12, rate=100, sample_s=1.0, retention_s=30)
    assert result.result.statuses == {200: 1_200}
    assert result.published == result.warehouse_rows == result.warehouse_distinct == 1_200
    assert sum(result.mlflow_per_arm.values()) == 1_200
    assert result.mlflow_per_arm == result.answered_per_arm
    assert set(result.answered_per_arm) == {"champion", "challenger"}  # the soak's experiment splits the traffic
    assert result.reconciled
    assert result.exactly_once
    assert result.samples
    assert set(result.samples[-1].oldest_s) == set(GROUPS)
    assert all(mb > 0 for mb in result.samples[0].rss_mb.values())  # every process was sampled
    assert result.samples[-1].cpu_s["api"] > result.samples[0].cpu_s["api"]  # and its CPU time counted
    assert result.end_to_end_s["max"] >= result.end_to_end_s["p99"] >= result.end_to_end_s["p50"] > 0
    text = report(result)
    assert "exactly once: answered 1,200" in text
    assert "→ yes" in text
