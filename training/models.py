"""The candidate model families. Each is a scikit-learn estimator over the 36 features with ``predict_proba``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True, slots=True)
class Family:
    """A model family: how to build it, its hyper-parameters, and the skops types its file needs to load."""

    name: str
    build: Callable[[int], Any]
    params: dict[str, Any]
    #: Types outside skops' default trust list that this family's estimator contains (reviewed: all produced by us).
    skops_trusted_types: tuple[str, ...] = ()


def _logreg(seed: int) -> Pipeline:
    return Pipeline(
        [("scale", StandardScaler()), ("clf", LogisticRegression(C=1.0, max_iter=2_000, random_state=seed))]
    )


def _ridge_calibrated(seed: int) -> CalibratedClassifierCV:
    # A ridge classifier has no probabilities; Platt scaling on 3-fold out-of-fold scores gives them.
    # ensemble=False keeps one linear model + one sigmoid, so the score stays an exact closed form.
    ridge = Pipeline([("scale", StandardScaler()), ("clf", RidgeClassifier(alpha=10.0))])
    return CalibratedClassifierCV(ridge, method="sigmoid", cv=3, ensemble=False)


def _hgb(seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        # Shallow trees: as accurate here as 300 deep ones, and ~3x cheaper to walk on the request path.
        max_iter=120,
        learning_rate=0.1,
        max_depth=5,
        max_leaf_nodes=24,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )


FAMILIES: dict[str, Family] = {
    "logreg": Family("logreg", _logreg, {"C": 1.0, "scaler": "standard", "max_iter": 2000}),
    "ridge_calibrated": Family(
        "ridge_calibrated",
        _ridge_calibrated,
        {"alpha": 10.0, "calibration": "sigmoid", "cv": 3},
        ("sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration"),
    ),
    "hgb": Family(
        "hgb",
        _hgb,
        {"max_iter": 120, "learning_rate": 0.1, "max_depth": 5, "max_leaf_nodes": 24, "l2_regularization": 1.0},
        ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
    ),
}
