"""``make bench-drift``: false alarms without drift, detection delays for injected drifts, drift-group throughput.

Traffic is generated, featurized and scored with the registry's champion (compiled scorer) and fed to a
:class:`DriftMonitor` built from the champion's reference profile. The no-drift stream is shuffled over a whole
generated year, so seasonality is not counted as drift.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import numpy as np

from common.settings import DriftSettings, Settings
from datagen import CovariateShift, NewCategory, generate
from decision.scorers import Scorer
from drift.monitor import DriftMonitor, Finding
from drift.replay import Observations, observations

NO_DRIFT_EVENTS = Settings.from_env().bench.bench_drift_events
CHUNK = 5_000


def _feed(monitor: DriftMonitor, obs: Observations, start: int = 0) -> list[tuple[int, Finding]]:
    found = []
    for i in range(0, len(obs), CHUNK):
        part = obs.take(np.arange(i, min(i + CHUNK, len(obs))))
        for finding in monitor.observe_scores(part.scores.tolist()):
            found.append((start + i, finding))
        findings = monitor.observe_requests(
            part.numeric.tolist(), part.categories, part.unknown, ["champion"] * len(part), part.approved.tolist()
        )
        found += [(start + i, f) for f in findings]
    return found


def _stationary(n: int, seed: int, scorer: Scorer, review: float, **kwargs: Any) -> Observations:
    data = generate(n, seed=seed, days=365, **kwargs)
    obs = observations(data, scorer, review)
    return obs.take(np.random.default_rng(seed).permutation(len(obs)))


def _shuffled(n: int, seed: int) -> Any:
    """Generated data over a year with its rows shuffled (a stationary stream) — a data set, so a scenario can edit
    request fields before features and scores are computed."""
    from datagen import Dataset

    data = generate(n, seed=seed, days=365)
    p = np.random.default_rng(seed).permutation(n)
    return Dataset(
        {k: v[p] for k, v in data.columns.items()},
        data.will_default[p],
        data.days_to_first_missed_payment[p],
        data.outcome_known_at[p],
        data.true_probability[p],
    )


def _amount_ramp(
    n: int, seed: int, scorer: Scorer, review: float, ramp: int = 50_000, rise: float = 0.25
) -> Observations:
    data = _shuffled(n, seed)
    factor = 1 + rise * np.minimum(1.0, np.arange(n) / ramp)
    data.columns["amount"] = np.round(data.columns["amount"] * factor, 2)
    return observations(data, scorer, review)


def _all_night(n: int, seed: int, scorer: Scorer, review: float) -> Observations:
    data = _shuffled(n, seed)
    stamps = data.columns["transaction_timestamp"]
    data.columns["transaction_timestamp"] = np.array([f"{s[:11]}23{s[13:]}" for s in stamps.tolist()], dtype=object)
    return observations(data, scorer, review)


def main() -> int:
    from registry import mlflow_client, read_profile, resolve_alias
    from registry.loader import load_version

    settings = Settings.from_env()
    client = mlflow_client(settings.registry)
    version = resolve_alias(client, settings.registry.model_name, "champion")
    profile = read_profile(version)
    model = load_version(version)
    config = DriftSettings()
    print(
        f"champion v{version.version} ({version.family}); window {config.window:,}; generating "
        f"{NO_DRIFT_EVENTS:,} events without drift …",
        flush=True,
    )

    base = _stationary(max(NO_DRIFT_EVENTS, 600_000), 101, model.scorer, model.review)
    no_drift = base.take(np.arange(NO_DRIFT_EVENTS))
    findings = _feed(DriftMonitor(version.version, profile, config), no_drift)
    false_alarms = Counter(f.kind for _, f in findings)
    worst: Counter[str] = Counter()
    for _, f in findings:
        worst[f"{f.kind}({f.feature})"] += 1
    kinds = [
        "score_change",
        "score_psi",
        "feature_psi",
        "categorical_psi",
        "unknown_category_rate",
        "new_category",
        "time_pattern_psi",
        "approval_rate",
    ]

    pre = base.take(np.arange(200_000))
    sigma = float(profile["score"]["std"])
    scenarios: dict[str, tuple[Observations, set[str]]] = {}
    shifted = base.take(np.arange(200_000, 400_000))
    shifted.scores = shifted.scores + 0.5 * sigma
    scenarios["score mean +0.5σ"] = (shifted, {"score_change", "score_psi"})
    scenarios["income-mix covariate shift"] = (
        _stationary(200_000, 202, model.scorer, model.review, drifts=[CovariateShift(start_index=0, share=0.5)]),
        {"categorical_psi", "feature_psi", "score_change", "score_psi"},
    )
    scenarios["new payment provider at 10 %"] = (
        _stationary(200_000, 203, model.scorer, model.review, drifts=[NewCategory(start_index=0, share=0.1)]),
        {"unknown_category_rate"},
    )
    dropped = base.take(np.arange(400_000, 600_000))
    rng = np.random.default_rng(5)
    ref = float(profile["decision_rates"]["approve"])
    flip = dropped.approved & (rng.random(len(dropped)) < 0.05 / max(ref, 1e-9))
    dropped.approved = dropped.approved & ~flip
    scenarios["approval rate −5 points"] = (dropped, {"approval_rate"})
    scenarios["amount +25 % over a 50,000-decision ramp"] = (
        _amount_ramp(200_000, 205, model.scorer, model.review),
        {"feature_psi:amount"},
    )
    scenarios["new product category at 1 %"] = (
        _stationary(
            200_000,
            206,
            model.scorer,
            model.review,
            drifts=[NewCategory(start_index=0, field="product_category", value="toys", share=0.01)],
        ),
        {"new_category"},
    )
    scenarios["all traffic at 23:00"] = (_all_night(200_000, 207, model.scorer, model.review), {"time_pattern_psi"})

    print(f"\nfalse alarms over {NO_DRIFT_EVENTS:,} events without drift (default thresholds):")
    print("| detector | false alarms | per 1,000,000 events |\n|---|---|---|")
    for kind in kinds:
        print(f"| {kind} | {false_alarms[kind]} | {false_alarms[kind] * 1_000_000 / NO_DRIFT_EVENTS:.2f} |")

    if worst:
        print("false alarms by detector and feature:", dict(worst.most_common(8)))
    print("\ndetection delay (events after the change; change at event 200,000):")
    print("| injected drift | first detector | delay (events) | detectors that fired |\n|---|---|---|---|")
    for name, (post, expected) in scenarios.items():
        monitor = DriftMonitor(version.version, profile, config)
        before = _feed(monitor, pre)
        after = [(i, f) for i, f in _feed(monitor, post, start=len(pre))]
        hits = [(i, f) for i, f in after if f.kind in expected or f"{f.kind}:{f.feature}" in expected]
        fired = sorted({f"{f.kind}({f.feature})" if f.feature else f.kind for _, f in after})
        if hits:
            first = hits[0][1]
            delay = first.events_seen - len(pre)
            print(f"| {name} | {first.key} | {max(delay, 0):,} | {', '.join(fired[:6])} |")
        else:
            print(f"| {name} | not detected | — | {', '.join(fired[:6]) or 'none'} |")
        if before:
            print(f"|   (false alarms before the change: {len(before)}) | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
