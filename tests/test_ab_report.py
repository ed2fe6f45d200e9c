"""The A/B report: verdicts, SRM, multiple comparisons and the once-only alert on a sequential crossing."""

from __future__ import annotations

import numpy as np
import orjson
import redis

from analysis.ab_report import ArmData, build_report, render_text
from bnpl_cli.ab_report import _alert_crossings
from common.keys import decode_entry
from tests.conftest import make_settings


def _arm(name: str, n: int, approve: float, seed: int) -> ArmData:
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    decisions = np.where(u < approve, "approve", np.where(u < approve + 0.1, "manual_review", "deny"))
    return ArmData(name, "1", decisions.astype(np.str_), rng.beta(1, 12, n), rng.lognormal(4.5, 0.6, n))


def test_a_real_difference_is_reported_with_holm_and_sequential_evidence():
    arms = [_arm("champion", 14_000, 0.78, 1), _arm("challenger", 6_000, 0.82, 2)]
    report = build_report("exp", arms, {"champion": 0.7, "challenger": 0.3})
    (comparison,) = report.comparisons
    assert comparison.approval.difference > 0.02
    assert comparison.adjusted["approval"] < 0.05
    assert comparison.approval_crossed_at is not None
    assert not report.srm.mismatch
    assert report.verdict.startswith("challenger approves more than champion")
    assert "Newcombe CI" in render_text(report)


def test_no_difference_small_samples_and_srm_verdicts():
    same = build_report(
        "exp",
        [_arm("champion", 7_000, 0.8, 3), _arm("challenger", 3_000, 0.8, 4)],
        {"champion": 0.7, "challenger": 0.3},
    )
    assert same.verdict.startswith("NO SIGNIFICANT DIFFERENCE")
    small = build_report(
        "exp", [_arm("champion", 700, 0.8, 5), _arm("challenger", 300, 0.8, 6)], {"champion": 0.7, "challenger": 0.3}
    )
    assert small.verdict.startswith("COLLECTING")
    skewed = build_report(
        "exp",
        [_arm("champion", 8_000, 0.8, 7), _arm("challenger", 2_000, 0.8, 8)],
        {"champion": 0.7, "challenger": 0.3},
    )
    assert skewed.srm.mismatch
    assert skewed.verdict.startswith("INVALID")


def test_first_crossing_alerts_once(tmp_path, redis_server, key_prefix):
    settings = make_settings(tmp_path, redis_url=redis_server.url, key_prefix=key_prefix)
    report = build_report(
        "exp",
        [_arm("champion", 14_000, 0.78, 1), _arm("challenger", 6_000, 0.82, 2)],
        {"champion": 0.7, "challenger": 0.3},
    )
    assert _alert_crossings(settings, report) == ["ab:exp:challenger:approval"]
    assert _alert_crossings(settings, report) == []  # same cause: no second alert
    client = redis.Redis.from_url(redis_server.url)
    try:
        (entry,) = client.xrange(settings.keys.alerts())
    finally:
        client.close()
    alert = orjson.loads(decode_entry(entry[1]).payload)
    assert alert["kind"] == "ab_test_significant"
    assert alert["alert_key"] == "ab:exp:challenger:approval"
    assert alert["value"] <= 0.05
