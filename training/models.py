"""The candidate model families: scikit-learn estimators over the 36 features. Training fits one, then wraps it in
the probability calibration fitted on held-out data (``training.calibration``); that wrapper is what is registered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def _ridge(seed: int) -> Pipeline:
    # A ridge classifier has no probabilities: its decision values get them from the calibration every family
    # receives on held-out data (training.calibration).
    return Pipeline([("scale", StandardScaler()), ("clf", RidgeClassifier(alpha=10.0))])


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
    "ridge_calibrated": Family("ridge_calibrated", _ridge, {"alpha": 10.0}),
    "hgb": Family(
        "hgb",
        _hgb,
        {"max_iter": 120, "learning_rate": 0.1, "max_depth": 5, "max_leaf_nodes": 24, "l2_regularization": 1.0},
        ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
    ),
}
