"""The drift monitor of one model version: plain Python + river state, picklable for checkpoints.

Per version, against the training reference profile stored with it:

* **score**: river ADWIN on every score (change in mean) and PSI of the score over tumbling windows;
* **numeric features** (the request's own numbers): PSI per feature per window, with the KS distance alongside;
* **categorical fields**: PSI of category shares per window, the **unknown-category rate** (alert above 5 %), and
  **new categories by count** (one never-seen value at least ``BNPL_DRIFT_NEW_CATEGORY_COUNT`` times in a window);
* **time pattern**: PSI of the time of day of the request timestamps over whole days only (a few hours of traffic
  are not comparable with a daily mix; the month and the holiday season change by design and are not watched), so
  an alert names the time field that moved;
* **decision mix**: per arm, the window's approval rate against the reference approval rate (z-test).

Every closed request window also leaves its statistics, alerting or not (:class:`WindowStats`, the metrics of
:func:`window_metrics`), for the drift group to chart in MLflow: dated by the request timestamps (the application
time, which spreads when days of traffic are replayed quickly) and numbered within their UTC day.

Feature, category and time-pattern PSI thresholds come from their null distribution: with the reference shares
fixed, ``n · PSI`` of a window of ``n`` events over ``k`` bins is ≈ χ² with ``k − 1`` degrees of freedom (PSI is a
symmetric χ² distance to first order), so each detector alerts above ``χ²⁻¹(1 − BNPL_DRIFT_FALSE_ALARM) / n`` (never
below ``BNPL_DRIFT_PSI_FLOOR``): about one false alarm per million windows per detector, at any window size. The
score PSI keeps a fixed threshold (ADWIN watches the score's mean). ``make bench-drift`` measures the false alarms.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from river import drift as river_drift

from common.settings import DriftSettings
from drift.stats import categorical_psi, ks_from_quantiles, numeric_psi
from features.spec import CATEGORICAL_FIELDS, NUMERIC_FIELDS

#: The watched time field (``features.spec.time_categories``); weekday/weekend shares are profiled but need whole
#: weeks of traffic to compare, so they are not watched.
TIME_FIELD = "time_of_day"
#: Key of the customer id in the categories a request is observed with (the window's own clustering).
CUSTOMER_KEY = "customer_id"
#: What a window keeps of each request's categories: the categorical fields and the customer.
_WINDOWED = (*CATEGORICAL_FIELDS, CUSTOMER_KEY)
TIME_CHECK_EVERY = 500
#: Closed windows a monitor keeps until :meth:`DriftMonitor.take_windows` collects them (nobody collecting: the oldest
#: go).
KEPT_WINDOWS = 100


def event_time(timestamp: str) -> float | None:
    """Epoch seconds of a request timestamp as written (ISO-8601; without an offset it is taken as UTC); None when
    unreadable.

    >>> event_time("2026-01-02T00:00:00Z"), event_time("2026-01-02T01:00:00+01:00"), event_time("soon")
    (1767312000.0, 1767312000.0, None)
    """
    try:
        parsed = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def utc_day(seconds: float) -> str:
    """The UTC date of an epoch time.

    >>> utc_day(1767312000.0)
    '2026-01-02'
    """
    return datetime.fromtimestamp(seconds, UTC).date().isoformat()


def window_metrics(
    profile: Mapping[str, Any],
    numeric: npt.NDArray[np.float64],
    categories: Mapping[str, Sequence[str]],
    unknown: Mapping[str, int],
    scores: npt.NDArray[np.float64] | None = None,
    approved: int | None = None,
) -> dict[str, float]:
    """Every drift statistic of one window of requests against ``profile``, by metric name: ``requests``,
    ``feature_psi/<field>`` and ``feature_ks/<field>`` per numeric field (``numeric``: one row per request, columns
    in ``NUMERIC_FIELDS`` order), ``category_psi/<field>`` and ``unknown_rate/<field>`` per categorical field
    (``unknown``: requests with that field unknown), ``score_psi`` / ``score_ks`` of the requests' scores and
    ``approval_rate`` when given. The drift monitor alerts on these numbers and the drift group logs them to MLflow;
    ``bnpl drift-report`` computes the same per time window from the warehouse."""
    n = int(numeric.shape[0])
    out: dict[str, float] = {"requests": float(n)}
    for j, name in enumerate(NUMERIC_FIELDS):
        summary = profile["features"][name]
        out[f"feature_psi/{name}"] = numeric_psi(numeric[:, j], summary)
        out[f"feature_ks/{name}"] = ks_from_quantiles(numeric[:, j], summary)
    for name in CATEGORICAL_FIELDS:
        values = categories.get(name, [])
        out[f"category_psi/{name}"] = categorical_psi(values, profile["categorical"][name]["frequencies"])
        out[f"unknown_rate/{name}"] = unknown.get(name, 0) / max(n, 1)
    if scores is not None and scores.size:
        out["score_psi"] = numeric_psi(scores, profile["score"])
        out["score_ks"] = ks_from_quantiles(scores, profile["score"])
    if approved is not None and n:
        out["approval_rate"] = approved / n
    return out


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


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One closed request window of a version: its :func:`window_metrics`, when it was (the earliest and latest
    request timestamp, epoch ms; None when no request carried a readable one), the UTC day of its end and its index
    among that day's windows of this monitor (0, 1, … ; -1 without timestamps)."""

    requests: int
    start_ms: int | None
    end_ms: int | None
    day: str
    index: int
    metrics: dict[str, float]


@dataclass(slots=True)
class _Window:
    scores: list[float] = field(default_factory=list)  # the deciding version's score of each request, when given
    features: list[list[float]] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)
    n: int = 0
    # Added after the first checkpoints: keep them last (an older pickled window loads without them, see _current).
    times: list[float] = field(default_factory=list)
    approved: int = 0


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
        scores: list[float | None] | None = None,
        times: list[float | None] | None = None,
    ) -> list[Finding]:
        """Feed requests this version decided; ``scores`` (its score of each) and ``times`` (epoch seconds of each
        request timestamp) only go into the window's statistics (:meth:`take_windows`)."""
        found: list[Finding] = []
        w = self._current()
        for i, (row, cats, unk, arm, ok) in enumerate(zip(numeric, categories, unknown, arms, approved, strict=True)):
            self.requests_seen += 1
            w.features.append(row)
            w.approved += int(ok)
            if scores is not None and (score := scores[i]) is not None:
                w.scores.append(score)
            if times is not None and (when := times[i]) is not None:
                w.times.append(when)
            for name in _WINDOWED:  # the time fields and date are accumulated per date by _observe_time instead
                value = cats.get(name)
                if value is not None:
                    w.categories.setdefault(name, []).append(value)
            for name in unk:
                w.unknown[name] = w.unknown.get(name, 0) + 1
            w.n += 1
            found += self._observe_time(cats)
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

    def _current(self) -> _Window:
        """The open window; one restored from a checkpoint written before windows kept times is completed."""
        w = self._window
        if not hasattr(w, "times"):
            w = self._window = _Window(w.scores, w.features, w.categories, w.unknown, w.n, [], 0)
        return w

    def take_windows(self) -> list[WindowStats]:
        """The windows closed since the last call, oldest first (at most the last ``KEPT_WINDOWS``)."""
        closed: list[WindowStats] = self.__dict__.pop("_closed", [])
        return closed

    def _close_window(self, w: _Window, metrics: dict[str, float]) -> None:
        """Keep the statistics of closed window ``w``, dated and numbered within its UTC day."""
        start_ms = end_ms = None
        day, index = "", -1
        if w.times:
            start_ms, end_ms = round(min(w.times) * 1000), round(max(w.times) * 1000)
            day = utc_day(end_ms / 1000)
            per_day: dict[str, int] = self.__dict__.setdefault("_windows_per_day", {})
            index = per_day.get(day, 0)
            per_day[day] = index + 1
            for old in sorted(per_day)[:-7]:  # a late window of a recent day still gets the next free index
                del per_day[old]
        closed = self.__dict__.setdefault("_closed", [])
        closed.append(WindowStats(w.n, start_ms, end_ms, day, index, metrics))
        del closed[:-KEPT_WINDOWS]

    def _observe_time(self, cats: dict[str, str]) -> list[Finding]:
        """Accumulate time-of-day counts per date; once the dates strictly inside the accumulation (the first and the
        newest may be partial days) hold ``window`` requests, compare their mix with the reference."""
        date = cats.get("date")
        frequencies = self.profile.get("time", {}).get(TIME_FIELD, {}).get("frequencies")
        if date is None or not frequencies:
            return []  # no timestamp, or a profile from before time patterns were watched
        per_date: dict[str, Counter[str]] = self.__dict__.setdefault("_time_by_date", {})
        per_date.setdefault(date, Counter())[cats.get(TIME_FIELD, "")] += 1
        if self.requests_seen % TIME_CHECK_EVERY or len(per_date) < 3:
            return []  # the window is looked at every TIME_CHECK_EVERY requests, not per request
        first, last = min(per_date), max(per_date)
        inside = Counter[str]()
        for day, counts in per_date.items():
            if first < day < last:
                inside.update(counts)
        n = sum(inside.values())
        if n < self.config.window:
            return []
        self.__dict__["_time_by_date"] = {last: per_date[last]}  # the newest (partial) day starts the next window
        value = categorical_psi(list(inside.elements()), frequencies)
        threshold = self.psi_threshold(sum(1 for f in frequencies.values() if f > 0), n, TIME_FIELD)
        if value <= threshold:
            return []
        top = ", ".join(f"{v} {c / n:.0%} (reference {frequencies.get(v, 0.0):.0%})" for v, c in inside.most_common(2))
        where = f"{n} requests of whole days up to {self.requests_seen}"
        return [Finding("time_pattern_psi", TIME_FIELD, "psi", value, threshold, where, self.requests_seen, top)]

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

    def psi_threshold(self, bins: int, n: int, field: str | None = None, cluster: float | None = None) -> float:
        """The PSI a window of ``n`` events over ``bins`` reference bins exceeds with probability
        ``false_alarm`` when nothing changed (χ² null), times the field's design effect (repeat customers make a
        window noisier), never below the floor. The design effect is ``1 + (cluster − 1) · ρ``: ``ρ`` is the field's
        within-customer agreement measured at training, ``cluster`` the window's own ``Σ m_c² / n`` when known (a
        new business's first weeks repeat customers far more than the steady state), else the training value."""
        from scipy import stats

        config = self.config
        critical = float(stats.chi2.isf(config.false_alarm, max(bins - 1, 1))) / max(n, 1)
        null = self.profile.get("null", {})
        if not field:
            effect = 1.0
        elif cluster is not None and field in null.get("agreement", {}):
            effect = 1.0 + (max(cluster, 1.0) - 1.0) * float(null["agreement"][field])
        else:
            effect = float(null.get("design_effect", {}).get(field, 1.0))
        return max(config.psi_floor, critical * max(effect, 1.0))

    def _window_checks(self, w: _Window) -> list[Finding]:
        found: list[Finding] = []
        where = f"{w.n} requests up to {self.requests_seen}"
        metrics = window_metrics(
            self.profile,
            np.asarray(w.features, dtype=np.float64).reshape(w.n, len(NUMERIC_FIELDS)),
            w.categories,
            w.unknown,
            np.asarray(w.scores, dtype=np.float64) if w.scores else None,
            w.approved,
        )
        self._close_window(w, metrics)
        customers = w.categories.get(CUSTOMER_KEY)
        cluster = None
        if customers:
            counts = np.asarray(list(Counter(customers).values()), dtype=np.float64)
            cluster = float((counts**2).sum() / len(customers))
        for name in NUMERIC_FIELDS:
            summary = self.profile["features"][name]
            value = metrics[f"feature_psi/{name}"]
            threshold = self.psi_threshold(sum(1 for f in summary["bin_fractions"] if f > 0), w.n, name, cluster)
            if value > threshold:
                found.append(
                    Finding(
                        "feature_psi",
                        name,
                        "psi",
                        value,
                        threshold,
                        where,
                        self.requests_seen,
                        f"KS {metrics[f'feature_ks/{name}']:.3f}",
                    )
                )
        for name in CATEGORICAL_FIELDS:
            values = w.categories.get(name, [])
            reference = self.profile["categorical"][name]["frequencies"]
            value = metrics[f"category_psi/{name}"]
            threshold = self.psi_threshold(sum(1 for f in reference.values() if f > 0), len(values), name, cluster)
            if value > threshold:
                found.append(Finding("categorical_psi", name, "psi", value, threshold, where, self.requests_seen))
            new = Counter(v for v in values if v not in reference)
            if new:
                value_seen, count = new.most_common(1)[0]
                if count >= self.config.new_category_count:
                    found.append(
                        Finding(
                            "new_category",
                            name,
                            "count",
                            float(count),
                            float(self.config.new_category_count),
                            where,
                            self.requests_seen,
                            f"{value_seen!r} {count} times ({count / max(len(values), 1):.1%})",
                        )
                    )
            rate = metrics[f"unknown_rate/{name}"]
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
