"""Probability calibration fitted on held-out data, and the calibration record of a registered version.

Every family's probabilities are checked on the validation months (after the fit year: data the model never saw)
with the Hosmer–Lemeshow χ² over score deciles, which weighs a low-risk decile's relative error like a high-risk
one's (log loss is dominated by the riskiest tenth); "off" means p < 0.001. A model that passes keeps its own
probabilities. Otherwise a one-dimensional increasing map is fitted on held-out predictions of the fit year
(``CalibratedClassifierCV`` with 5 folds grouped by customer — a returning customer's loans never on both sides —
then the model refitted on the whole year): Platt's sigmoid if it passes the validation check, else whichever of the
sigmoid and isotonic regression has the lower χ² there. The fit year's held-out predictions are twice the validation
months' rows, which is what a low-risk decile's few defaults need; the validation months stay an out-of-time check.
A family without probabilities (the ridge) is always mapped.

The map is monotone, so it changes no ranking (AUC, reason order) — only what a score means, which is what the
thresholds and every observed/expected check rely on.

Seasons are retail seasons, Nov–Dec kept apart: ``winter`` Jan–Feb, ``spring`` Mar–May, ``summer`` Jun–Aug,
``autumn`` Sep–Oct, ``holiday`` Nov–Dec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from analysis.performance import Band, band, calibration

SEASONS = ("winter", "spring", "summer", "autumn", "holiday")
#: Season index of each month (January first).
MONTH_SEASON = np.array([0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4])
METHODS = ("sigmoid", "isotonic")
#: Hosmer–Lemeshow p-value (validation period, 10 deciles) below which probabilities count as miscalibrated.
MISFIT_P = 0.001
#: Types a calibrated model's skops file holds beyond each family's own (reviewed: all scikit-learn's).
CALIBRATION_TRUSTED_TYPES = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.isotonic.IsotonicRegression",
)


def season_index(timestamps: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Season of each ISO-8601 timestamp (index into :data:`SEASONS`).

    >>> [SEASONS[i] for i in season_index(["2025-01-31T10:00:00Z", "2025-11-01T00:00:00Z", "2025-07-04T12:00:00Z"])]
    ['winter', 'holiday', 'summer']
    """
    months = np.array([int(str(t)[5:7]) for t in np.asarray(timestamps, dtype=object)], dtype=np.int64)
    return np.asarray(MONTH_SEASON[months - 1], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class CalibrationChoice:
    """Which map was chosen (``none``: the model's own probabilities), and the Hosmer–Lemeshow χ² and log loss on
    the validation months of each candidate measured."""

    method: str
    hosmer_lemeshow: dict[str, float]
    log_loss: dict[str, float]


def _log_loss(y: npt.NDArray[np.bool_], p: npt.NDArray[np.float64]) -> float:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(np.where(y, np.log(q), np.log1p(-q))))


def calibrate(
    build: Callable[[], Any],
    fitted: Any,
    fit: tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.int64]],
    check: tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.int64]],
    folds: int = 5,
) -> tuple[Any, CalibrationChoice]:
    """``fitted`` (``build()`` fitted on ``fit``'s rows) itself, or the family recalibrated on held-out folds of
    ``fit``, as the module docstring chooses with the ``check`` rows (features, labels, customer codes)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import GroupKFold

    x_check, y_check, customers = check
    losses: dict[str, float] = {}
    hl: dict[str, float] = {}

    def measure(name: str, model: Any) -> None:
        p = model.predict_proba(x_check)[:, 1]
        losses[name] = _log_loss(y_check, p)
        hl[name] = calibration(y_check.astype(np.float64), p, customers).hosmer_lemeshow

    misfit = stats.chi2.isf(MISFIT_P, 8)
    if hasattr(fitted, "predict_proba"):
        measure("none", fitted)
        if hl["none"] <= misfit:
            return fitted, CalibrationChoice("none", hl, losses)
    x, y, groups = fit
    splits = list(GroupKFold(n_splits=folds).split(x, y, groups))
    candidates = {
        method: CalibratedClassifierCV(build(), method=method, cv=splits, ensemble=False).fit(x, y)
        for method in METHODS
    }
    for method, model in candidates.items():
        measure(method, model)
    method = "sigmoid" if hl["sigmoid"] <= misfit else min(METHODS, key=hl.__getitem__)
    return candidates[method], CalibrationChoice(method, hl, losses)


def _band_record(b: Band) -> dict[str, float | int | str]:
    return {
        "label": b.label,
        "loans": b.loans,
        "expected": round(b.expected / b.loans, 6) if b.loans else float("nan"),
        "observed": round(b.observed / b.loans, 6) if b.loans else float("nan"),
        "ratio": round(b.ratio, 4),
        "ratio_low": round(b.ratio_low, 4),
        "ratio_high": round(b.ratio_high, 4),
    }


def calibration_record(
    y: npt.NDArray[np.bool_],
    p: npt.NDArray[np.float64],
    customers: npt.NDArray[np.int64],
    seasons: npt.NDArray[np.int64],
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Observed vs expected defaults per score decile and per season (with clustered 95 % intervals), and the
    Hosmer–Lemeshow statistic: what registration records for a version."""
    yy = np.asarray(y, dtype=np.float64)
    result = calibration(yy, p, customers, bands=10, confidence=confidence)
    per_season = [
        _band_record(band(SEASONS[s], yy[seasons == s], p[seasons == s], customers[seasons == s], confidence))
        for s in range(len(SEASONS))
        if (seasons == s).any()
    ]
    return {
        "overall": _band_record(result.overall),
        "deciles": [_band_record(b) for b in result.bands],
        "seasons": per_season,
        "hosmer_lemeshow": round(result.hosmer_lemeshow, 3),
        "hl_p_value": result.hl_p_value,
    }
