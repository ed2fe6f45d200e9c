"""The candidate model families: scikit-learn estimators over the 36 features. Training fits one and registers it
as it is when its probabilities pass the calibration check, else recalibrated on held-out folds
(``training.calibration``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from features.spec import FEATURE_NAMES

if TYPE_CHECKING:  # scikit-learn is imported when a model is built: `bnpl --help` needs only the family names
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline


@dataclass(frozen=True, slots=True)
class Family:
    """A model family: how to build it, its hyper-parameters, and the skops types its file needs to load."""

    name: str
    build: Callable[[int], Any]
    params: dict[str, Any]
    #: Types outside skops' default trust list that this family's estimator contains (reviewed: all produced by us).
    skops_trusted_types: tuple[str, ...] = ()


def _logreg(seed: int) -> Pipeline:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [("scale", StandardScaler()), ("clf", LogisticRegression(C=1.0, max_iter=2_000, random_state=seed))]
    )


def _ridge(seed: int) -> Pipeline:
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    # A ridge classifier has no probabilities: its decision values always get them from a calibration map fitted on
    # held-out folds (training.calibration).
    return Pipeline([("scale", StandardScaler()), ("clf", RidgeClassifier(alpha=10.0))])


#: Calendar flags the gradient-boosted family learns as additive effects (each only in trees of its own): a season or
#: the weekend shifts everyone's risk. Left free, boosting spreads a weak global shift over interactions with strong
#: features and learns the holiday flag at about half its size (measured: +0.12 vs the generator's +0.25).
ADDITIVE_FEATURES = ("is_holiday_season", "is_weekend")


def _additive_constraints() -> list[list[int]]:
    alone = [FEATURE_NAMES.index(name) for name in ADDITIVE_FEATURES]
    return [[i] for i in alone] + [[i for i in range(len(FEATURE_NAMES)) if i not in alone]]


def _hgb(seed: int) -> HistGradientBoostingClassifier:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        # Shallow trees: as accurate here as 300 deep ones, and ~3x cheaper to walk on the request path. 150 rounds:
        # the additive calendar trees need rounds of their own (200 walk as fast as 120: measured 8.7 vs 9.5 µs; but
        # more rounds make the lowest scores over-confident: true observed/expected 1.18 in the lowest decile at 200).
        max_iter=150,
        learning_rate=0.1,
        max_depth=5,
        max_leaf_nodes=24,
        l2_regularization=1.0,
        interaction_cst=_additive_constraints(),
        early_stopping=False,
        random_state=seed,
    )


FAMILIES: dict[str, Family] = {
    "logreg": Family("logreg", _logreg, {"C": 1.0, "scaler": "standard", "max_iter": 2000}),
    "ridge_calibrated": Family("ridge_calibrated", _ridge, {"alpha": 10.0}),
    "hgb": Family(
        "hgb",
        _hgb,
        {
            "max_iter": 150,
            "learning_rate": 0.1,
            "max_depth": 5,
            "max_leaf_nodes": 24,
            "l2_regularization": 1.0,
            "additive": ",".join(ADDITIVE_FEATURES),
        },
        ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
    ),
}
