"""Model training: time-split synthetic data, three scikit-learn families, thresholds, reference profiles, registry."""
