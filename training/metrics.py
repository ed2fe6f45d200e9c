"""Evaluation metrics for default-probability models."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from analysis.performance import auc


def holdout_metrics(labels: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]) -> dict[str, float]:
    """AUC, log loss, Brier score and calibration-in-the-large on a holdout set."""
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "log_loss": float(log_loss(labels, np.clip(scores, 1e-12, 1 - 1e-12))),
        "brier": float(brier_score_loss(labels, scores)),
        "mean_score": float(scores.mean()),
        "default_rate": float(labels.mean()),
    }


def paired_auc_difference(
    labels: npt.NDArray[np.bool_],
    scores_a: npt.NDArray[np.float64],
    scores_b: npt.NDArray[np.float64],
    resamples: int = 300,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AUC(a) − AUC(b) on the same rows with a 95 % paired-bootstrap interval: (difference, low, high).

    >>> y = np.array([0, 0, 1, 1], dtype=bool)
    >>> paired_auc_difference(y, np.array([.1, .2, .8, .9]), np.array([.1, .2, .8, .9]), resamples=10)[0]
    0.0
    """
    rng = np.random.default_rng(seed)
    diff = auc(labels, scores_a) - auc(labels, scores_b)
    samples = []
    for _ in range(resamples):
        idx = rng.integers(0, labels.size, labels.size)
        y = labels[idx]
        if y.all() or not y.any():
            continue
        samples.append(auc(y, scores_a[idx]) - auc(y, scores_b[idx]))
    low, high = np.quantile(samples, [0.025, 0.975])
    return float(diff), float(low), float(high)
