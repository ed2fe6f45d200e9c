"""Online drift detection against the training reference profile of each model version (river + PSI/KS)."""
