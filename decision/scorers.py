"""Fast, exact scorers compiled from the registered scikit-learn models.

scikit-learn's ``predict_proba`` costs ~0.1–0.5 ms for a single row (input validation, dispatch); the request path
cannot afford that three times per request. Each supported family is compiled into plain numpy arrays:

* ``Pipeline(StandardScaler, LogisticRegression)`` → one dot product: the scaler is folded into the weights;
* ``HistGradientBoostingClassifier`` → flat node arrays walked by a branch-free numba-compiled loop, summed from the
  baseline in sklearn's order, then ``expit``;
* ``CalibratedClassifierCV(m, ensemble=False)`` (or around ``FrozenEstimator(m)``) of any of those — what training
  registers when a model's own probabilities are off → ``m``'s decision value
  (log-odds for the trees and the logistic regression, the ridge's decision value) through the fitted map: Platt's
  ``expit(−(a·d + b))`` or isotonic regression's clipped linear interpolation.

Anything else is served by :class:`SklearnScorer`. Compiled scorers are checked against ``predict_proba`` when they
are loaded (:func:`verify`), and the test suite checks equality to 1e-9 on 10,000+ generated requests.

Reason-code contributions (log-odds, per feature): exact for the linear families (``w_j · (x_j − mean_j)``, i.e.
relative to the training mean); for trees the path attribution of Saabas — every split on a request's path credits
its feature with the change of the node value — which sums exactly to the raw score minus the trees' root values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from numba import njit

from features.spec import N_FEATURES

Vector = npt.NDArray[np.float64]


class Scorer(Protocol):
    """Default probability for feature vectors, plus per-feature log-odds contributions for reason codes."""

    @property
    def kind(self) -> str: ...

    def score(self, x: Vector) -> float: ...

    def score_batch(self, matrix: Vector) -> Vector: ...

    def contributions(self, x: Vector) -> Vector | None: ...


def _expit(z: float) -> float:
    # Same branches as scipy.special.expit for large |z|, so extremes match sklearn's probabilities.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class LinearScorer:
    """``p = expit(w·x + b)`` (a ridge's decision value is only served through a :class:`CalibratedScorer`)."""

    weights: Vector
    intercept: float
    mean: Vector
    kind: str = "linear"

    def raw(self, x: Vector) -> float:
        return float(x.dot(self.weights)) + self.intercept

    def raw_batch(self, matrix: Vector) -> Vector:
        return np.asarray(matrix @ self.weights + self.intercept, dtype=np.float64)

    def score(self, x: Vector) -> float:
        return _expit(self.raw(x))

    def score_batch(self, matrix: Vector) -> Vector:
        from scipy.special import expit

        return np.asarray(expit(self.raw_batch(matrix)), dtype=np.float64)

    def contributions(self, x: Vector) -> Vector:
        return np.asarray(self.weights * (x - self.mean), dtype=np.float64)


# The walk is branch-free and runs a fixed ``depth`` steps per tree: children are adjacent (right = left + 1), so
# a step is ``node = left + goes_right``; a leaf is its own left child and never goes right (threshold +inf).
# Without data-dependent branches the CPU overlaps the trees' pointer chains instead of mispredicting every split.
# One node is one row of ``nodes`` (one cache line): THRESHOLD, VALUE, FEATURE, LEFT, NAN_RIGHT, all float64 (node
# indices and feature numbers are exact in a double), so a call passes few arguments: numba's dispatcher checks the
# type of every argument on every call, and that costs more than walking 120 small trees.
THRESHOLD, VALUE, FEATURE, LEFT, NAN_RIGHT = range(5)


@njit(cache=True, nogil=True, inline="always")
def _step(x: Vector, nodes: Vector, n: int) -> int:
    v = x[int(nodes[n, FEATURE])]
    goes_right = (v > nodes[n, THRESHOLD]) | ((v != v) & (nodes[n, NAN_RIGHT] != 0.0))
    return int(nodes[n, LEFT]) + int(goes_right)


@njit(cache=True, nogil=True)
def _raw_score(x: Vector, nodes: Vector, roots: Any, depth: int, base: float) -> float:
    # Level by level across all trees: the trees' steps are independent, so they overlap in the CPU.
    node = roots.copy()
    for _ in range(depth):
        for t in range(node.size):
            node[t] = _step(x, nodes, node[t])
    total = base  # tree by tree from the baseline: sklearn's order of summation
    for t in range(node.size):
        total += nodes[node[t], VALUE]
    return total


@njit(cache=True, nogil=True)
def _raw_scores(matrix: Vector, nodes: Vector, roots: Any, depth: int, base: float) -> Vector:
    out = np.empty(matrix.shape[0])
    for i in range(matrix.shape[0]):
        out[i] = _raw_score(matrix[i], nodes, roots, depth, base)
    return out


@njit(cache=True, nogil=True)
def _path_contributions(x: Vector, nodes: Vector, roots: Any, depth: int, n_features: int) -> Vector:
    out = np.zeros(n_features)
    node = roots.copy()
    for _ in range(depth):  # level by level, like _raw_score
        for t in range(node.size):
            n = node[t]
            nxt = _step(x, nodes, n)
            out[int(nodes[n, FEATURE])] += nodes[nxt, VALUE] - nodes[n, VALUE]  # a leaf adds 0 (its own child)
            node[t] = nxt
    return out


@dataclass(frozen=True, slots=True)
class TreeEnsembleScorer:
    """Every tree of a gradient-boosted ensemble as one node table, walked by compiled (numba) loops.

    Node ``i`` sends ``x[FEATURE] <= THRESHOLD`` to ``LEFT`` and the rest to ``LEFT + 1`` (NaN goes right where
    ``NAN_RIGHT``, as sklearn learned). A leaf is its own child with threshold +inf. Leaves hold sklearn's values;
    internal nodes their value scaled by the learning rate, for path attribution.
    """

    nodes: Vector  # shape (n_nodes, 5)
    roots: npt.NDArray[np.intp]
    depth: int
    baseline: float
    kind: str = "trees"

    def raw(self, x: Vector) -> float:
        return float(_raw_score(x, self.nodes, self.roots, self.depth, self.baseline))

    def raw_batch(self, matrix: Vector) -> Vector:
        return np.asarray(
            _raw_scores(
                np.ascontiguousarray(matrix, dtype=np.float64), self.nodes, self.roots, self.depth, self.baseline
            ),
            dtype=np.float64,
        )

    def score(self, x: Vector) -> float:
        return _expit(_raw_score(x, self.nodes, self.roots, self.depth, self.baseline))

    def score_batch(self, matrix: Vector) -> Vector:
        from scipy.special import expit

        return np.asarray(expit(self.raw_batch(matrix)), dtype=np.float64)

    def contributions(self, x: Vector) -> Vector:
        return _path_contributions(x, self.nodes, self.roots, self.depth, N_FEATURES)


@dataclass(frozen=True, slots=True)
class CalibratedScorer:
    """A compiled scorer's decision value through a fitted calibration map (Platt sigmoid or isotonic).

    The map is increasing, so the inner scorer's log-odds contributions still rank the reasons."""

    inner: LinearScorer | TreeEnsembleScorer
    #: Platt's (a, b): p = expit(−(a·d + b)); or None for isotonic.
    platt: tuple[float, float] | None
    #: Isotonic knots (ascending x, and y): p = interp(clip(d)).
    knots_x: Vector
    knots_y: Vector
    kind: str = "calibrated"

    def _map(self, d: float) -> float:
        if self.platt is not None:
            return _expit(-(self.platt[0] * d + self.platt[1]))
        xs, ys = self.knots_x, self.knots_y
        if d <= xs[0]:
            return float(ys[0])
        if d >= xs[-1]:
            return float(ys[-1])
        i = int(np.searchsorted(xs, d, side="right"))
        slope = (ys[i] - ys[i - 1]) / (xs[i] - xs[i - 1])
        return float(slope * (d - xs[i - 1]) + ys[i - 1])

    def score(self, x: Vector) -> float:
        return min(self._map(self.inner.raw(x)), 1.0)

    def score_batch(self, matrix: Vector) -> Vector:
        from scipy.special import expit

        d = self.inner.raw_batch(matrix)
        if self.platt is not None:
            p = expit(-(self.platt[0] * d + self.platt[1]))
        else:
            p = np.interp(np.clip(d, self.knots_x[0], self.knots_x[-1]), self.knots_x, self.knots_y)
        return np.asarray(np.minimum(p, 1.0), dtype=np.float64)

    def contributions(self, x: Vector) -> Vector:
        contributions = self.inner.contributions(x)
        # A Platt map with a > 0 would reverse the order; sklearn fits a < 0 for any useful score.
        return contributions if self.platt is None or self.platt[0] <= 0 else -contributions


@dataclass(frozen=True, slots=True)
class SklearnScorer:
    """Any estimator with ``predict_proba``: correct, slower, no contributions."""

    model: Any
    kind: str = "sklearn"

    def score(self, x: Vector) -> float:
        return float(self.model.predict_proba(x.reshape(1, -1))[0, 1])

    def score_batch(self, matrix: Vector) -> Vector:
        return np.asarray(self.model.predict_proba(matrix)[:, 1], dtype=np.float64)

    def contributions(self, x: Vector) -> None:
        return None


def _fold_scaler(pipeline: Any) -> tuple[Vector, float, Vector]:
    scaler, clf = pipeline.named_steps["scale"], pipeline.named_steps["clf"]
    coef = np.asarray(clf.coef_, dtype=np.float64).reshape(-1)
    weights = coef / scaler.scale_
    intercept = float(np.asarray(clf.intercept_).reshape(-1)[0] - weights @ scaler.mean_)
    return weights, intercept, np.asarray(scaler.mean_, dtype=np.float64)


def _compile_hgb(model: Any) -> TreeEnsembleScorer:
    shrinkage = float(model.learning_rate)
    trees = [predictor.nodes for (predictor,) in model._predictors]
    if any(nodes["is_categorical"].any() for nodes in trees):
        raise ValueError("categorical splits are not compiled")
    n_nodes = sum(len(nodes) for nodes in trees)
    table = np.zeros((n_nodes, 5))
    table[:, THRESHOLD] = np.inf
    table[:, LEFT] = np.arange(n_nodes)  # leaves stay their own child
    roots, depth, at = [], 0, 0
    for nodes in trees:
        # Renumber breadth-first so that every internal node's children are adjacent.
        roots.append(at)
        order, placed = [0], {0: at}
        at += 1
        for old in order:
            node = nodes[old]
            new = placed[old]
            # sklearn scales only leaf values by the learning rate; scale internal nodes too for path attribution.
            table[new, VALUE] = node["value"] if node["is_leaf"] else node["value"] * shrinkage
            if node["is_leaf"]:
                continue
            table[new, FEATURE], table[new, THRESHOLD] = node["feature_idx"], node["num_threshold"]
            table[new, NAN_RIGHT] = 0.0 if node["missing_go_to_left"] else 1.0
            table[new, LEFT] = at
            for child in (int(node["left"]), int(node["right"])):
                placed[child] = at
                order.append(child)
                at += 1
        depth = max(depth, int(nodes["depth"].max()))
    return TreeEnsembleScorer(
        nodes=table,
        roots=np.asarray(roots, dtype=np.intp),
        depth=depth,
        baseline=float(np.asarray(model._baseline_prediction).reshape(-1)[0]),
    )


def compile_model(model: Any) -> Scorer:
    """The fastest exact scorer for ``model``; :class:`SklearnScorer` for anything not recognised."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.frozen import FrozenEstimator
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.pipeline import Pipeline

    def linear_pipeline(p: Any, clf_type: type) -> bool:
        return (
            isinstance(p, Pipeline)
            and list(p.named_steps) == ["scale", "clf"]
            and isinstance(p.named_steps["clf"], clf_type)
            and len(p.classes_) == 2
        )

    if linear_pipeline(model, LogisticRegression):
        weights, intercept, mean = _fold_scaler(model)
        return LinearScorer(weights, intercept, mean)
    if isinstance(model, HistGradientBoostingClassifier) and model.n_trees_per_iteration_ == 1:
        return _compile_hgb(model)
    if (
        isinstance(model, CalibratedClassifierCV)
        and len(model.calibrated_classifiers_) == 1
        and len(model.classes_) == 2
    ):
        # One map over one estimator: fitted on held-out folds (ensemble=False) or around a frozen, prefitted model.
        frozen = model.calibrated_classifiers_[0].estimator
        if isinstance(frozen, FrozenEstimator):
            frozen = frozen.estimator
        inner: LinearScorer | TreeEnsembleScorer | None = None
        if linear_pipeline(frozen, LogisticRegression) or linear_pipeline(frozen, RidgeClassifier):
            inner = LinearScorer(*_fold_scaler(frozen))
        elif isinstance(frozen, HistGradientBoostingClassifier) and frozen.n_trees_per_iteration_ == 1:
            inner = _compile_hgb(frozen)
        (calibrator,) = model.calibrated_classifiers_[0].calibrators
        if inner is not None and isinstance(calibrator, IsotonicRegression):
            knots = (np.asarray(calibrator.X_thresholds_, np.float64), np.asarray(calibrator.y_thresholds_, np.float64))
            return CalibratedScorer(inner, None, *knots, kind=f"{inner.kind}+isotonic")
        if inner is not None:
            empty = np.empty(0)
            platt = (float(calibrator.a_), float(calibrator.b_))
            return CalibratedScorer(inner, platt, empty, empty, kind=f"{inner.kind}+sigmoid")
    return SklearnScorer(model)


def verify(scorer: Scorer, model: Any, sample: Vector, tolerance: float = 1e-9) -> float:
    """Largest |compiled − predict_proba| over ``sample`` (single-row and batch); raises if above ``tolerance``."""
    expected = np.asarray(model.predict_proba(sample)[:, 1], dtype=np.float64)
    single = np.array([scorer.score(row) for row in sample])
    batch = scorer.score_batch(sample)
    worst = float(max(np.abs(single - expected).max(), np.abs(batch - expected).max()))
    if worst > tolerance:
        raise ValueError(f"{scorer.kind} scorer differs from predict_proba by {worst:.3g}")
    return worst
