"""Fast, exact scorers compiled from the registered scikit-learn models.

scikit-learn's ``predict_proba`` costs ~0.1–0.5 ms for a single row (input validation, dispatch); the request path
cannot afford that three times per request. Each supported family is compiled into plain numpy arrays:

* ``Pipeline(StandardScaler, LogisticRegression)`` → one dot product: the scaler is folded into the weights;
* ``CalibratedClassifierCV(Pipeline(StandardScaler, RidgeClassifier), method="sigmoid", ensemble=False)`` → one dot
  product and sklearn's Platt sigmoid ``1 / (1 + exp(a·d + b))``;
* ``HistGradientBoostingClassifier`` → every split of every tree decided in one vectorized compare, then all trees
  followed pointer by pointer (leaves loop to themselves), then ``expit(baseline + Σ leaf values)``.

Anything else is served by :class:`SklearnScorer`. Compiled scorers are checked against ``predict_proba`` when they
are loaded (:func:`verify`), and the test suite checks equality to 1e-9 on 10,000+ generated requests.

Reason-code contributions (log-odds, per feature): exact for the linear families (``w_j · (x_j − mean_j)``, i.e.
relative to the training mean); for trees the path attribution of Saabas — every split on a request's path credits
its feature with the change of the node value — which sums exactly to the raw score minus the trees' root values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

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
        return 1.0 / (1.0 + float(np.exp(-z)))
    e = float(np.exp(z))
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class LinearScorer:
    """``p = expit(w·x + b)`` or, with Platt calibration, ``p = expit(-(a·(w·x + b) + c))``."""

    weights: Vector
    intercept: float
    mean: Vector
    platt: tuple[float, float] | None = None
    kind: str = "linear"

    def _prob(self, decision: Vector | float) -> Any:
        if self.platt is None:
            return decision
        a, c = self.platt
        return -(a * decision + c)

    def score(self, x: Vector) -> float:
        return _expit(float(self._prob(float(self.weights @ x) + self.intercept)))

    def score_batch(self, matrix: Vector) -> Vector:
        from scipy.special import expit

        return np.asarray(expit(self._prob(matrix @ self.weights + self.intercept)), dtype=np.float64)

    def contributions(self, x: Vector) -> Vector:
        scale = 1.0 if self.platt is None else -self.platt[0]
        return np.asarray(scale * self.weights * (x - self.mean), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class TreeEnsembleScorer:
    """Every tree of a gradient-boosted ensemble as flat arrays.

    Internal nodes come first (indices ``0 … n_internal-1``), leaves after them; a leaf's child is itself, so
    following pointers ``depth`` times from the roots always ends on the leaf of every tree.
    """

    feature: npt.NDArray[np.intp]  # per internal node
    threshold: Vector  # per internal node
    left: npt.NDArray[np.intp]  # per internal node, global index
    right: npt.NDArray[np.intp]  # per internal node, global index
    leaf_self: npt.NDArray[np.intp]  # global indices of the leaves (their own child)
    value: Vector  # every node's value on the log-odds scale (internal nodes scaled by the learning rate)
    node_feature: npt.NDArray[np.intp]  # feature of every node (0 for leaves), for path attribution
    roots: npt.NDArray[np.intp]
    depth: int
    baseline: float
    kind: str = "trees"

    def _next(self, x: Vector) -> npt.NDArray[np.intp]:
        # Decide every split of every tree at once (one gather + compare over the internal nodes), then only
        # follow pointers: cheaper than deciding level by level on the nodes reached.
        return np.concatenate((np.where(x[self.feature] <= self.threshold, self.left, self.right), self.leaf_self))

    def score(self, x: Vector) -> float:
        child = self._next(x)
        node = self.roots
        for _ in range(self.depth):
            node = child[node]
        return _expit(self.baseline + float(self.value[node].sum()))

    def score_batch(self, matrix: Vector) -> Vector:
        from scipy.special import expit

        decided = np.where(matrix[:, self.feature] <= self.threshold, self.left, self.right)
        child = np.hstack([decided, np.broadcast_to(self.leaf_self, (matrix.shape[0], self.leaf_self.size))])
        rows = np.arange(matrix.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (matrix.shape[0], self.roots.size))
        for _ in range(self.depth):
            node = child[rows, node]
        return np.asarray(expit(self.baseline + self.value[node].sum(axis=1)), dtype=np.float64)

    def contributions(self, x: Vector) -> Vector:
        child = self._next(x)
        node = self.roots
        total = np.zeros(N_FEATURES)
        for _ in range(self.depth):
            nxt = child[node]
            total += np.bincount(
                self.node_feature[node], weights=self.value[nxt] - self.value[node], minlength=N_FEATURES
            )
            node = nxt
        return total


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
    n_internal = sum(int((~nodes["is_leaf"].astype(bool)).sum()) for nodes in trees)
    # Global numbering: all internal nodes first (tree by tree), then all leaves.
    internal_at, leaf_at, roots = 0, n_internal, []
    feature, threshold, left, right, values_internal, values_leaf = [], [], [], [], [], []
    depth = 0
    for nodes in trees:
        leaf = nodes["is_leaf"].astype(bool)
        index = np.empty(len(nodes), dtype=np.intp)
        index[~leaf] = internal_at + np.arange(int((~leaf).sum()))
        index[leaf] = leaf_at + np.arange(int(leaf.sum()))
        internal_at += int((~leaf).sum())
        leaf_at += int(leaf.sum())
        roots.append(index[0])
        inner = nodes[~leaf]
        feature.append(inner["feature_idx"])
        threshold.append(inner["num_threshold"])
        left.append(index[inner["left"].astype(np.intp)])
        right.append(index[inner["right"].astype(np.intp)])
        # sklearn scales only leaf values by the learning rate; scale internal nodes too for path attribution.
        values_internal.append(inner["value"] * shrinkage)
        values_leaf.append(nodes[leaf]["value"])
        depth = max(depth, int(nodes["depth"].max()))
    features = np.concatenate(feature).astype(np.intp)
    return TreeEnsembleScorer(
        feature=features,
        threshold=np.concatenate(threshold).astype(np.float64),
        left=np.concatenate(left).astype(np.intp),
        right=np.concatenate(right).astype(np.intp),
        leaf_self=np.arange(n_internal, leaf_at, dtype=np.intp),
        value=np.concatenate(values_internal + values_leaf).astype(np.float64),
        node_feature=np.concatenate([features, np.zeros(leaf_at - n_internal, dtype=np.intp)]),
        roots=np.asarray(roots, dtype=np.intp),
        depth=depth,
        baseline=float(np.asarray(model._baseline_prediction).reshape(-1)[0]),
    )


def compile_model(model: Any) -> Scorer:
    """The fastest exact scorer for ``model``; :class:`SklearnScorer` for anything not recognised."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
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
    if (
        isinstance(model, CalibratedClassifierCV)
        and len(model.calibrated_classifiers_) == 1
        and model.method == "sigmoid"
        and linear_pipeline(model.calibrated_classifiers_[0].estimator, RidgeClassifier)
    ):
        calibrated = model.calibrated_classifiers_[0]
        weights, intercept, mean = _fold_scaler(calibrated.estimator)
        sigmoid = calibrated.calibrators[0]
        return LinearScorer(weights, intercept, mean, platt=(float(sigmoid.a_), float(sigmoid.b_)))
    if isinstance(model, HistGradientBoostingClassifier) and model.n_trees_per_iteration_ == 1:
        return _compile_hgb(model)
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
