"""One immutable settings object per process, read from the environment once.

Every field is documented where it is defined. Connections are URLs/URIs so that the same code runs against the
embedded defaults (SQLite MLflow under the data directory) and production services.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


def _default_tracking_uri(data_dir: Path) -> str:
    return f"sqlite:///{data_dir.resolve() / 'mlflow.db'}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration of one process. Build it with :meth:`from_env`; never mutate it."""

    #: Directory for every embedded default (SQLite MLflow store, artifacts, DuckDB, spool). ``BNPL_DATA_DIR``.
    data_dir: Path = Path(".bnpl")
    #: MLflow tracking + registry URI. ``MLFLOW_TRACKING_URI``; default: SQLite file under ``data_dir``.
    mlflow_tracking_uri: str = ""
    #: Where new MLflow experiments store artifacts. ``BNPL_MLFLOW_ARTIFACT_ROOT``; default: ``data_dir/mlartifacts``.
    #: Ignored by an ``mlflow server`` that proxies artifacts (it decides the location itself).
    mlflow_artifact_root: str = ""
    #: Registered model that holds every candidate version. ``BNPL_MODEL_NAME``.
    model_name: str = "bnpl_default_predictor"
    #: MLflow experiment that training runs are logged to. ``BNPL_TRAINING_EXPERIMENT``.
    training_experiment: str = "bnpl-training"
    #: Seed of the synthetic training data. ``BNPL_TRAIN_SEED``.
    train_seed: int = 7
    #: Number of synthetic transactions used for training + holdout. ``BNPL_TRAIN_ROWS``.
    train_rows: int = 200_000
    #: Extra labels copied onto every logged run (not secrets). Not read from the environment.
    run_tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", _default_tracking_uri(self.data_dir))
        if not self.mlflow_artifact_root:
            object.__setattr__(self, "mlflow_artifact_root", (self.data_dir.resolve() / "mlartifacts").as_uri())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); keyword overrides win (CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "data_dir": Path(env.get("BNPL_DATA_DIR", ".bnpl")),
            "mlflow_tracking_uri": env.get("MLFLOW_TRACKING_URI", ""),
            "mlflow_artifact_root": env.get("BNPL_MLFLOW_ARTIFACT_ROOT", ""),
            "model_name": env.get("BNPL_MODEL_NAME", "bnpl_default_predictor"),
            "training_experiment": env.get("BNPL_TRAINING_EXPERIMENT", "bnpl-training"),
            "train_seed": int(env.get("BNPL_TRAIN_SEED", "7")),
            "train_rows": int(env.get("BNPL_TRAIN_ROWS", "200000")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
