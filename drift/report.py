"""The drift report of one model version: its decided requests cut into time windows, each window's drift statistics
against the version's training reference profile (:func:`drift.monitor.window_metrics`, the numbers the drift group
alerts on and logs to MLflow), the score distribution now vs the reference, and the drift alerts raised.

Windows are cut on the request timestamp (``transaction_timestamp``, the application time): it is what spreads when
days of traffic are replayed in minutes, while the assessment time of a replay all falls in one hour. Their width is
the smallest of 1 h, 3 h, 6 h, 12 h, 1 day and 7 days in which nine windows in ten (of those with traffic) hold at
least ``TARGET_REQUESTS`` requests, with at most ``MAX_WINDOWS`` windows: PSI over a few dozen requests is mostly
noise (its expected value without any drift is ≈ (bins − 1) / n), and quiet night hours would otherwise make the
noisiest windows. Windows with fewer than ``MIN_REQUESTS`` requests are shown empty. Each window also carries the
drift group's alert line for each statistic at its size (:meth:`drift.monitor.DriftMonitor.psi_threshold`), so a
window "over the line" is one the detectors would alert on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from common.settings import DriftSettings
from drift.monitor import DriftMonitor, window_metrics
from features.spec import CATEGORICAL_FIELDS, NUMERIC_FIELDS
from schemas.alerts import Alert

HOUR: Final = 3_600
WINDOW_WIDTHS: Final = (HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, 24 * HOUR, 7 * 24 * HOUR)
TARGET_REQUESTS: Final = 250
MIN_REQUESTS: Final = 30
MAX_WINDOWS: Final = 200

FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class Traffic:
    """The requests one version decided, in time order: request time (epoch s), numeric fields (``NUMERIC_FIELDS``
    columns), normalized categorical values, the fields that were unknown, the version's score and the decision."""

    times: FloatArray
    numeric: FloatArray
    categories: dict[str, list[str]]
    unknown: list[list[str]]
    scores: FloatArray
    approved: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.times.size)

    def metrics(self, profile: dict[str, Any], start: int, stop: int) -> dict[str, float]:
        """:func:`window_metrics` of requests ``start:stop``."""
        unknown = Counter(name for row in self.unknown[start:stop] for name in row)
        scores = self.scores[start:stop]
        return window_metrics(
            profile,
            self.numeric[start:stop],
            {name: values[start:stop] for name, values in self.categories.items()},
            unknown,
            scores[np.isfinite(scores)],
            int(self.approved[start:stop].sum()),
        )


@dataclass(frozen=True, slots=True)
class Window:
    """One time window ``[start, end)`` (epoch s), its statistics (empty when it held too few requests) and the
    alert line of each (the drift group's threshold at this window's size)."""

    start: float
    end: float
    requests: int
    metrics: dict[str, float]
    lines: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoreComparison:
    """The version's scores in the latest window ("now") against the reference profile's score summary."""

    edges: list[float]  # interior bin edges of the reference score histogram
    reference: list[float]  # reference share per bin (len(edges) + 1)
    now: list[float]  # the latest window's share per bin
    quantiles: dict[str, tuple[float, float]]  # "mean", "p10", … → (reference, now)
    psi: float
    ks: float
    requests: int


@dataclass(slots=True)
class DriftReport:
    """Everything ``bnpl drift-report`` shows."""

    model_name: str
    version: str
    aliases: tuple[str, ...]
    days: float
    window_s: int
    requests: int
    first: float | None  # request time of the first and last request in the report
    last: float | None
    windows: list[Window]
    overall: dict[str, float]  # the statistics of every request in the report at once
    score: ScoreComparison | None
    alerts: list[Alert]
    thresholds: dict[str, float] = field(default_factory=dict)  # alert lines: unknown_rate, score_psi
    notes: list[str] = field(default_factory=list)

    def series(self, metric: str) -> FloatArray:
        """``metric`` per window (NaN where a window had too few requests)."""
        return np.array([w.metrics.get(metric, np.nan) for w in self.windows], dtype=np.float64)

    def over_line(self, metric: str) -> tuple[int, int]:
        """(windows where ``metric`` is above its alert line, windows with statistics)."""
        filled = [w for w in self.windows if metric in w.metrics and metric in w.lines]
        return sum(1 for w in filled if w.metrics[metric] > w.lines[metric]), len(filled)


def alert_lines(monitor: DriftMonitor, metrics: dict[str, float]) -> dict[str, float]:
    """The drift group's alert line of each statistic in ``metrics`` (a window of ``metrics["requests"]``; every
    request carries every categorical field)."""
    profile, config = monitor.profile, monitor.config
    n = int(metrics.get("requests", 0))
    lines = {"score_psi": config.psi}
    for name in NUMERIC_FIELDS:
        bins = sum(1 for f in profile["features"][name]["bin_fractions"] if f > 0)
        lines[f"feature_psi/{name}"] = monitor.psi_threshold(bins, n, name)
    for name in CATEGORICAL_FIELDS:
        bins = sum(1 for f in profile["categorical"][name]["frequencies"].values() if f > 0)
        lines[f"category_psi/{name}"] = monitor.psi_threshold(bins, n, name)
        lines[f"unknown_rate/{name}"] = config.unknown_rate
    return lines


def choose_width(times: FloatArray) -> int:
    """The window width (s) for request times ``times`` (see the module docstring).

    >>> hours = np.arange(0, 3 * 24 * 3600, 3600.0)  # one request an hour for three days
    >>> choose_width(np.repeat(hours, 300)), choose_width(np.repeat(hours, 20)), choose_width(hours)
    (3600, 86400, 604800)
    """
    if times.size == 0:
        return WINDOW_WIDTHS[0]
    span = float(np.max(times) - np.min(times))
    for width in WINDOW_WIDTHS:
        if span / width + 1 > MAX_WINDOWS:
            continue
        _, counts = np.unique(np.floor(times / width), return_counts=True)
        if float(np.quantile(counts, 0.1)) >= TARGET_REQUESTS:
            return width
    fits = [w for w in WINDOW_WIDTHS if span / w + 1 <= MAX_WINDOWS]
    return fits[-1] if fits else WINDOW_WIDTHS[-1]


def _score_comparison(profile: dict[str, Any], scores: FloatArray) -> ScoreComparison | None:
    scores = scores[np.isfinite(scores)]
    summary = profile.get("score")
    if not scores.size or not summary:
        return None
    edges = [float(e) for e in summary["bin_edges"]]
    counts = np.bincount(np.searchsorted(np.asarray(edges), scores, side="left"), minlength=len(edges) + 1)
    quantiles = {"mean": (float(summary["mean"]), float(scores.mean()))}
    for name, value in summary["quantiles"].items():
        if name in ("p10", "p50", "p90", "p99"):
            quantiles[name] = (float(value), float(np.quantile(scores, int(name[1:]) / 100)))
    from drift.stats import ks_from_quantiles, numeric_psi

    return ScoreComparison(
        edges=edges,
        reference=[float(f) for f in summary["bin_fractions"]],
        now=[float(c) for c in counts / scores.size],
        quantiles=quantiles,
        psi=numeric_psi(scores, summary),
        ks=ks_from_quantiles(scores, summary),
        requests=int(scores.size),
    )


def build_report(
    model_name: str,
    version: str,
    aliases: Sequence[str],
    profile: dict[str, Any],
    traffic: Traffic,
    alerts: Sequence[Alert],
    days: float,
    width_s: int | None = None,
    config: DriftSettings | None = None,
) -> DriftReport:
    """The report of ``traffic`` (time-ordered) against ``profile``, in windows of ``width_s`` (None: chosen), with
    the alert lines of the drift group's ``config``."""
    n = len(traffic)
    width = width_s or choose_width(traffic.times)
    config = config or DriftSettings()
    monitor = DriftMonitor(version, profile, config)
    windows: list[Window] = []
    if n:
        first_index = int(np.floor(traffic.times[0] / width))
        last_index = int(np.floor(traffic.times[-1] / width))
        bounds = np.searchsorted(traffic.times, np.arange(first_index, last_index + 2) * float(width), side="left")
        for k in range(last_index - first_index + 1):
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            start = (first_index + k) * float(width)
            metrics = traffic.metrics(profile, lo, hi) if hi - lo >= MIN_REQUESTS else {}
            lines = alert_lines(monitor, metrics) if metrics else {}
            windows.append(Window(start, start + width, hi - lo, metrics, lines))
    latest = next((w for w in reversed(windows) if w.metrics), None)
    score = None
    if latest is not None:
        lo, hi = np.searchsorted(traffic.times, [latest.start, latest.end], side="left")
        score = _score_comparison(profile, traffic.scores[int(lo) : int(hi)])
    return DriftReport(
        model_name=model_name,
        version=version,
        aliases=tuple(aliases),
        days=days,
        window_s=width,
        requests=n,
        first=float(traffic.times[0]) if n else None,
        last=float(traffic.times[-1]) if n else None,
        windows=windows,
        overall=traffic.metrics(profile, 0, n) if n else {},
        score=score,
        alerts=sorted(alerts, key=lambda a: a.first_seen),
        thresholds={"unknown_rate": config.unknown_rate, "score_psi": config.psi},
    )
