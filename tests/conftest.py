"""Shared fixtures: real MLflow (SQLite store in a temp dir), trained once per session where read-only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from common.settings import Settings

#: Rows for test training: enough for stable AUCs, small enough to keep the suite fast.
TEST_TRAIN_ROWS = 40_000


def make_settings(data_dir: Path, **changes: object) -> Settings:
    """Settings whose every store lives under ``data_dir`` (SQLite MLflow, artifacts)."""
    return Settings(data_dir=data_dir, train_rows=TEST_TRAIN_ROWS, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, object]:
    """A real MLflow SQLite registry with the three families trained and champion/challenger set.

    Session-scoped because training takes seconds; tests using it must not change the registry.
    """
    from training.train import train_and_register

    settings = make_settings(tmp_path_factory.mktemp("registry"))
    return settings, train_and_register(settings)
