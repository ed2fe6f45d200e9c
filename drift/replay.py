"""Turn generated data into the observation arrays a :class:`DriftMonitor` consumes (benchmarks, tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from datagen import Dataset
from decision.scorers import Scorer
from features import featurize_columns
from features.spec import CATEGORICAL_FIELDS, FEATURE_NAMES, NUMERIC_FIELDS, time_categories


@dataclass(slots=True)
class Observations:
    scores: npt.NDArray[np.float64]
    numeric: npt.NDArray[np.float64]  # the request's numeric fields (NUMERIC_FIELDS order)
    categories: list[dict[str, str]]
    unknown: list[list[str]]
    approved: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.scores.size)

    def take(self, index: npt.NDArray[np.intp]) -> Observations:
        return Observations(
            self.scores[index],
            self.numeric[index],
            [self.categories[i] for i in index],
            [self.unknown[i] for i in index],
            self.approved[index],
        )


def observations(data: Dataset, scorer: Scorer, review_threshold: float, chunk: int = 5_000) -> Observations:
    """Features, scores (champion), categories, unknown fields and approvals of every generated request."""
    batch = featurize_columns(data.columns)
    scores = (
        np.concatenate([scorer.score_batch(batch.matrix[i : i + chunk]) for i in range(0, len(data), chunk)])
        if len(data)
        else np.zeros(0)
    )
    columns = {name: [str(v).strip().lower() for v in data.columns[name]] for name in CATEGORICAL_FIELDS}
    stamps = data.columns["transaction_timestamp"]
    customers = data.columns["customer_id"]
    categories = [
        {
            **{name: columns[name][i] for name in CATEGORICAL_FIELDS},
            **time_categories(str(stamps[i])),
            "customer_id": str(customers[i]),
        }
        for i in range(len(data))
    ]
    unknown = [list(batch.unknown_fields(i)) for i in range(len(data))]
    amounts = np.asarray(data.columns["amount"], dtype=float)
    limits = np.asarray(data.columns["payment_credit_limit"], dtype=float)
    approved = (scores < review_threshold) & (amounts <= 0.8 * limits)
    numeric = batch.matrix[:, [FEATURE_NAMES.index(f) for f in NUMERIC_FIELDS]]
    return Observations(scores, numeric, categories, unknown, approved)
