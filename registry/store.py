"""Thin, typed helpers over ``mlflow.MlflowClient`` for the registry conventions of this project.

Conventions (one place):

* one registered model (``BNPL_MODEL_NAME``) holds every candidate version; aliases ``champion``,
  ``challenger``, … point at versions (stages are deprecated in MLflow);
* every version carries tags ``family``, ``threshold_review``, ``threshold_deny``, ``feature_spec_version``,
  ``holdout_auc``, ``training_run_id``;
* every version's model directory holds ``extra_files/reference_profile.json`` (drift reference) and
  ``extra_files/decision_policy.json`` (thresholds and policy name).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common.settings import RegistrySettings

PROFILE_FILE: Final = "reference_profile.json"
POLICY_FILE: Final = "decision_policy.json"


def mlflow_client(settings: RegistrySettings) -> Any:
    """An ``MlflowClient`` for the configured tracking/registry URI; creates the directory of a SQLite store."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no phoning home from a risk service
    # MLflow's own defaults (120 s per request, 7 retries with backoff) hang a command for minutes when the server is
    # unreachable; ours fail within seconds. Variables set explicitly win.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(settings.mlflow_timeout_s))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.2")
    import mlflow  # imported lazily: importing mlflow costs ~1 s and must not happen at module import

    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(uri, registry_uri=uri)


def ensure_experiment(client: Any, settings: RegistrySettings, name: str) -> str:
    """Id of experiment ``name``, created with an artifact location under the configured root if missing."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    location = None
    if not settings.tracking_uri.startswith(("http://", "https://")):
        location = f"{settings.artifact_root.rstrip('/')}/{name}"
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except Exception:  # a concurrent creator won the race
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


@dataclass(frozen=True, slots=True)
class RegisteredVersion:
    """One registered model version as the serving side needs it."""

    name: str
    version: str
    #: The alias this version was looked up by (None when listed).
    alias: str | None
    family: str
    threshold_review: float
    threshold_deny: float
    run_id: str
    source: str
    tags: dict[str, str]
    #: Every alias currently pointing at this version.
    aliases: tuple[str, ...] = ()

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _as_registered(mv: Any, alias: str | None, aliases: tuple[str, ...] | None = None) -> RegisteredVersion:
    tags = dict(mv.tags)
    return RegisteredVersion(
        name=mv.name,
        version=str(mv.version),
        alias=alias,
        family=tags.get("family", "unknown"),
        threshold_review=float(tags["threshold_review"]),
        threshold_deny=float(tags["threshold_deny"]),
        run_id=str(mv.run_id),
        source=str(mv.source),
        tags=tags,
        aliases=aliases if aliases is not None else tuple(sorted(getattr(mv, "aliases", None) or ())),
    )


def list_versions(client: Any, name: str) -> list[RegisteredVersion]:
    """Every version of ``name`` that carries thresholds, newest first."""
    found = client.search_model_versions(f"name = '{name}'")
    # search results do not carry aliases; the registered model has the alias -> version map.
    by_version: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    versions = [
        _as_registered(mv, None, tuple(sorted(by_version.get(str(mv.version), ()))))
        for mv in found
        if "threshold_review" in mv.tags
    ]
    return sorted(versions, key=lambda v: int(v.version), reverse=True)


def get_version(client: Any, name: str, version: str) -> RegisteredVersion:
    """Registered ``version`` of ``name``."""
    return _as_registered(client.get_model_version(name, version), None)


def resolve_alias(client: Any, name: str, alias: str) -> RegisteredVersion:
    """The version ``alias`` points at; raises ``mlflow.exceptions.MlflowException`` when it does not exist."""
    return _as_registered(client.get_model_version_by_alias(name, alias), alias)


def has_aliases(client: Any, name: str, aliases: tuple[str, ...] = ("champion", "challenger")) -> bool:
    """True when every alias resolves to a version of ``name``."""
    from mlflow.exceptions import MlflowException

    try:
        for alias in aliases:
            client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return False
    return True


def read_extra_file(version: RegisteredVersion, filename: str) -> dict[str, Any]:
    """A JSON file stored under ``extra_files/`` of the version's model directory."""
    import mlflow

    local = mlflow.artifacts.download_artifacts(artifact_uri=f"{version.model_uri}/extra_files/{filename}")
    data: dict[str, Any] = json.loads(Path(local).read_text())
    return data


def read_profile(version: RegisteredVersion) -> dict[str, Any]:
    """The training reference profile stored with ``version``."""
    return read_extra_file(version, PROFILE_FILE)
