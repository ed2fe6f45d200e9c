"""The drift monitor of one model version: plain Python + river state, picklable for checkpoints.

Per version, against the training reference profile stored with it:

* **score**: river ADWIN on every score (change in mean) and PSI of the score over tumbling windows;
* **numeric features** (the request's own numbers; calendar features drift by design and are not watched): PSI per
  feature per window, with the KS distance reported alongside;
* **categorical fields**: PSI of category shares per window, and the **unknown-category rate** (alert above 5 %);
* **decision mix**: per arm, the window's approval rate against the reference approval rate (z-test).

Default thresholds were chosen from the false-alarm rates measured by ``make bench-drift`` (≤ 1 per 1,000,000
events without drift).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river import drift as river_drift

from common.settings import DriftSettings
from drift.stats import categorical_psi, ks_from_quantiles, numeric_psi
from features.spec import CATEGORICAL_FIELDS, NUMERIC_FIELDS


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector fired."""

    kind: str
    feature: str | None
    statistic: str
    value: float
    threshold: float
    window: str
    events_seen: int
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.feature or '-'}"


@dataclass(slots=True)
class _Window:
    scores: list[float] = field(default_factory=list)
    features: list[list[float]] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)
    n: int = 0


class DriftMonitor:
    """Detectors of one model version. ``observe_*`` return the findings of that call."""

    def __init__(self, version: str, profile: dict[str, Any], config: DriftSettings | None = None) -> None:
        self.version = version
        self.profile = profile
        self.config = config or DriftSettings()
        self.adwin = river_drift.ADWIN(delta=self.config.adwin_delta)
        self.scores_seen = 0
        self.requests_seen = 0
        self._score_window: list[float] = []
        self._window = _Window()
        self._approvals: dict[str, list[int]] = {}  # arm -> [approved, n]
        self.reference_approval = float(profile.get("decision_rates", {}).get("approve", math.nan))

    # --- scores (every version scores every request) --------------------------------------------------------------
    def observe_scores(self, scores: list[float]) -> list[Finding]:
        found: list[Finding] = []
        for score in scores:
            self.scores_seen += 1
            self.adwin.update(score)
            if self.adwin.drift_detected and self.scores_seen >= self.config.adwin_min_samples:
                found.append(
                    Finding(
                        "score_change",
                        None,
                        "adwin_mean",
                        float(self.adwin.estimation),
                        float(self.profile["score"]["mean"]),
                        f"after {self.scores_seen} scores",
                        self.scores_seen,
                        f"ADWIN width {self.adwin.width}",
                    )
                )
        self._score_window.extend(scores)
        while len(self._score_window) >= self.config.window:
            window = np.asarray(self._score_window[: self.config.window])
            del self._score_window[: self.config.window]
            value = numeric_psi(window, self.profile["score"])
            if value > self.config.psi:
                found.append(
                    Finding(
                        "score_psi",
                        None,
                        "psi",
                        value,
                        self.config.psi,
                        f"{self.config.window} scores up to {self.scores_seen}",
                        self.scores_seen,
                        f"KS {ks_from_quantiles(window, self.profile['score']):.3f}",
                    )
                )
        return found

    # --- requests decided by this version ---------------------------------------------------------------------------
    def observe_requests(  # numeric: the request's ``NUMERIC_FIELDS`` values, in that order
        self,
        numeric: list[list[float]],
        categories: list[dict[str, str]],
        unknown: list[list[str]],
        arms: list[str],
        approved: list[bool],
    ) -> list[Finding]:
        found: list[Finding] = []
        w = self._window
        for row, cats, unk, arm, ok in zip(numeric, categories, unknown, arms, approved, strict=True):
            self.requests_seen += 1
            w.features.append(row)
            for name, value in cats.items():
                w.categories.setdefault(name, []).append(value)
            for name in unk:
                w.unknown[name] = w.unknown.get(name, 0) + 1
            w.n += 1
            counts = self._approvals.setdefault(arm, [0, 0])
            counts[0] += int(ok)
            counts[1] += 1
            if counts[1] >= self.config.window:
                found += self._approval_check(arm, counts)
                self._approvals[arm] = [0, 0]
            if w.n >= self.config.window:
                found += self._window_checks(w)
                w = self._window = _Window()
        return found

    def _approval_check(self, arm: str, counts: list[int]) -> list[Finding]:
        p_ref = self.reference_approval
        if math.isnan(p_ref) or not 0 < p_ref < 1:
            return []
        rate = counts[0] / counts[1]
        z = (rate - p_ref) / math.sqrt(p_ref * (1 - p_ref) / counts[1])
        if abs(z) <= self.config.approval_z:
            return []
        return [
            Finding(
                "approval_rate",
                arm,
                "z",
                z,
                self.config.approval_z,
                f"{counts[1]} decisions up to {self.requests_seen}",
                self.requests_seen,
                f"approval {rate:.2%} vs reference {p_ref:.2%}",
            )
        ]

    def _window_checks(self, w: _Window) -> list[Finding]:
        found: list[Finding] = []
        where = f"{w.n} requests up to {self.requests_seen}"
        matrix = np.asarray(w.features)
        for j, name in enumerate(NUMERIC_FIELDS):
            summary = self.profile["features"][name]
            value = numeric_psi(matrix[:, j], summary)
            if value > self.config.psi:
                found.append(
                    Finding(
                        "feature_psi",
                        name,
                        "psi",
                        value,
                        self.config.psi,
                        where,
                        self.requests_seen,
                        f"KS {ks_from_quantiles(matrix[:, j], summary):.3f}",
                    )
                )
        for name in CATEGORICAL_FIELDS:
            values = w.categories.get(name, [])
            reference = self.profile["categorical"][name]["frequencies"]
            value = categorical_psi(values, reference)
            if value > self.config.psi:
                found.append(Finding("categorical_psi", name, "psi", value, self.config.psi, where, self.requests_seen))
            rate = w.unknown.get(name, 0) / w.n
            if rate > self.config.unknown_rate:
                found.append(
                    Finding(
                        "unknown_category_rate",
                        name,
                        "rate",
                        rate,
                        self.config.unknown_rate,
                        where,
                        self.requests_seen,
                        f"{w.unknown[name]} of {w.n} requests",
                    )
                )
        return found
