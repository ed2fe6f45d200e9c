"""The MLflow model registry seen by every process: write candidates (training), resolve aliases (API, drift)."""

from registry.store import (
    POLICY_FILE,
    PROFILE_FILE,
    RegisteredVersion,
    ensure_experiment,
    get_version,
    has_aliases,
    list_versions,
    mlflow_client,
    read_profile,
    resolve_alias,
)

__all__ = [
    "POLICY_FILE",
    "PROFILE_FILE",
    "RegisteredVersion",
    "ensure_experiment",
    "get_version",
    "has_aliases",
    "list_versions",
    "mlflow_client",
    "read_profile",
    "resolve_alias",
]
