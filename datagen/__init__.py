"""Synthetic BNPL transactions in the original request format, with delayed ground truth and drift knobs."""

from datagen.drift import ConceptShift, CovariateShift, Drift, NewCategory
from datagen.examples import ORIGINAL_EXAMPLE, example_request
from datagen.generator import Dataset, generate

__all__ = [
    "ORIGINAL_EXAMPLE",
    "ConceptShift",
    "CovariateShift",
    "Dataset",
    "Drift",
    "NewCategory",
    "example_request",
    "generate",
]
