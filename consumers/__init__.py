"""The shared consumer-group runtime and one module per group (warehouse, mlflow, drift)."""
