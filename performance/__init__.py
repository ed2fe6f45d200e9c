"""Model performance from ground truth: the matured cohort's realized metrics per model version, estimated metrics
before outcomes arrive, ``model_metrics`` rows, one MLflow run per version and analysis date, performance alerts.

``performance.analysis`` computes (pure, on arrays the warehouse returns), ``performance.job`` runs an analysis
end to end (``bnpl performance``, the outcomes group's schedule), ``performance.html`` renders its report.
"""
