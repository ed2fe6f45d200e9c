"""Feature engineering: the 36 features of the original service, one spec, two implementations.

``features.single`` turns one validated request into a vector on the request path (no pandas), ``features.batch``
does the same for columnar training data with numpy. Both follow ``features.spec`` and are tested for equality.
"""

from features.batch import featurize_columns
from features.single import FeatureResult, featurize
from features.spec import FEATURE_NAMES, N_FEATURES

__all__ = ["FEATURE_NAMES", "N_FEATURES", "FeatureResult", "featurize", "featurize_columns"]
