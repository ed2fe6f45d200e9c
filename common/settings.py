"""One immutable settings object per process, read from the environment once.

Every field is documented where it is defined. Connections are URLs/URIs so that the same code runs against the
embedded defaults (SQLite MLflow under the data directory) and production services.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.keys import Keys


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


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

    # --- Redis and streams -------------------------------------------------------------------------------------
    #: Redis URL (``redis://[:password@]host:port/db``). ``BNPL_REDIS_URL``; empty: the CLI starts a private
    #: redis-server under ``data_dir`` (embedded default).
    redis_url: str = ""
    #: Prefix of every Redis key. ``BNPL_KEY_PREFIX``.
    key_prefix: str = "bnpl"
    #: Number of stream shards (by customer_id; >1 for Redis Cluster). ``BNPL_STREAM_SHARDS``.
    stream_shards: int = 1

    # --- API ---------------------------------------------------------------------------------------------------
    #: Listen address and port of ``bnpl serve``. ``BNPL_HOST``, ``BNPL_PORT``.
    host: str = "127.0.0.1"
    port: int = 8080
    #: Accepted API keys, comma-separated in ``BNPL_API_KEYS``. Empty: every request is refused unless
    #: ``auth_disabled``.
    api_keys: tuple[str, ...] = ()
    #: Serve without authentication (local experiments only). ``BNPL_AUTH_DISABLED=true``.
    auth_disabled: bool = False
    #: Paths reachable without a key. ``BNPL_OPEN_PATHS`` (comma-separated).
    open_paths: tuple[str, ...] = ("/healthz", "/readyz", "/metrics", "/openapi.json")
    #: Largest accepted request body in bytes (413 above). ``BNPL_MAX_BODY_BYTES``.
    max_body_bytes: int = 2 * 1024 * 1024
    #: Most requests in one batch call. ``BNPL_BATCH_MAX``.
    batch_max: int = 1000
    #: Registry aliases loaded and scored on every request (first = champion). ``BNPL_MODEL_ALIASES``.
    model_aliases: tuple[str, ...] = ("champion", "challenger")
    #: Seconds between registry polls for alias or experiment changes. ``BNPL_REGISTRY_POLL_SECONDS``.
    registry_poll_seconds: float = 10.0
    #: Name of this API instance in events and spool file names. ``BNPL_INSTANCE_ID``.
    instance_id: str = "api-1"

    # --- event publishing ----------------------------------------------------------------------------------------
    #: In-memory event queue bound; beyond it events go straight to the spool. ``BNPL_QUEUE_MAX``.
    queue_max: int = 50_000
    #: Most events per pipelined write. ``BNPL_PUBLISH_BATCH``.
    publish_batch: int = 500
    #: Longest wait before a partial batch is written, in ms. ``BNPL_PUBLISH_INTERVAL_MS``.
    publish_interval_ms: float = 5.0
    #: How long Redis remembers a written block for idempotent retries, in seconds. ``BNPL_PUBLISH_MARKER_TTL``.
    publish_marker_ttl: int = 86_400
    #: Directory of spool files (events kept while Redis is unreachable). ``BNPL_SPOOL_DIR``; default data_dir/spool.
    spool_dir: Path | None = None

    # --- consumer groups and the warehouse ---------------------------------------------------------------------
    #: ``duckdb`` (embedded default) or ``bigquery``. ``BNPL_WAREHOUSE``.
    warehouse: str = "duckdb"
    #: DuckDB file. ``BNPL_DUCKDB_PATH``; default data_dir/warehouse.duckdb.
    duckdb_path: Path | None = None
    #: BigQuery project, dataset and location. ``BNPL_BQ_PROJECT``, ``BNPL_BQ_DATASET``, ``BNPL_BQ_LOCATION``.
    bq_project: str = ""
    bq_dataset: str = "bnpl"
    bq_location: str = "US"
    #: Events per consumer batch and the longest wait to fill one. ``BNPL_CONSUMER_BATCH``, ``BNPL_CONSUMER_WAIT_S``.
    consumer_batch: int = 5_000
    consumer_wait_s: float = 2.0
    #: Deliveries before an entry is dead-lettered. ``BNPL_MAX_DELIVERIES``.
    max_deliveries: int = 5
    #: Idle time after which another worker claims a pending entry, in ms. ``BNPL_CLAIM_IDLE_MS``.
    claim_idle_ms: int = 30_000
    #: Stream retention in Redis, in days (kept longer only while a group still needs entries).
    #: ``BNPL_STREAM_RETENTION_DAYS``.
    stream_retention_days: float = 30.0
    #: Prometheus port of a consumer worker (worker i uses port + i); 0 disables. ``BNPL_METRICS_PORT``.
    metrics_port: int = 0
    #: Window of the MLflow group's per-arm metrics, in seconds. ``BNPL_MLFLOW_WINDOW_S``.
    mlflow_window_s: int = 60
    #: How long after its end a window still accepts late events before it is logged. ``BNPL_MLFLOW_LATENESS_S``.
    mlflow_lateness_s: int = 30

    # --- drift and alerts -------------------------------------------------------------------------------------------
    #: Webhook URLs alerts are POSTed to (comma-separated). ``BNPL_WEBHOOK_URLS``.
    webhook_urls: tuple[str, ...] = ()
    #: Shared secret of the ``X-Signature`` HMAC. ``BNPL_WEBHOOK_SECRET``.
    webhook_secret: str = ""
    #: Send a Slack-compatible ``{"text": …}`` body. ``BNPL_WEBHOOK_SLACK=true``.
    webhook_slack: bool = False
    #: After an alert, the same cause stays quiet this long (seconds). ``BNPL_ALERT_COOLDOWN_S``.
    alert_cooldown_s: int = 3_600
    #: Events per drift window (PSI, unknown rate, approval checks). ``BNPL_DRIFT_WINDOW``.
    drift_window: int = 5_000
    #: PSI above which a score/feature/category distribution alerts. ``BNPL_DRIFT_PSI``.
    drift_psi: float = 0.1
    #: Unknown-category share above which a field alerts. ``BNPL_DRIFT_UNKNOWN_RATE``.
    drift_unknown_rate: float = 0.05
    #: |z| of a window's approval rate vs the reference above which an arm alerts. ``BNPL_DRIFT_APPROVAL_Z``.
    drift_approval_z: float = 5.0
    #: ADWIN confidence on the score stream (smaller: fewer, later alarms). ``BNPL_DRIFT_ADWIN_DELTA``.
    drift_adwin_delta: float = 1e-5

    def __post_init__(self) -> None:
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", _default_tracking_uri(self.data_dir))
        if not self.mlflow_artifact_root:
            object.__setattr__(self, "mlflow_artifact_root", (self.data_dir.resolve() / "mlartifacts").as_uri())
        if self.spool_dir is None:
            object.__setattr__(self, "spool_dir", self.data_dir / "spool")
        if self.duckdb_path is None:
            object.__setattr__(self, "duckdb_path", self.data_dir / "warehouse.duckdb")

    @property
    def keys(self) -> Keys:
        """Redis key names of this deployment."""
        return Keys(self.key_prefix, self.stream_shards)

    @property
    def spool_path(self) -> Path:
        """This instance's spool file."""
        assert self.spool_dir is not None
        return self.spool_dir / f"{self.instance_id}.spool"

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
            "redis_url": env.get("BNPL_REDIS_URL", ""),
            "key_prefix": env.get("BNPL_KEY_PREFIX", "bnpl"),
            "stream_shards": int(env.get("BNPL_STREAM_SHARDS", "1")),
            "host": env.get("BNPL_HOST", "127.0.0.1"),
            "port": int(env.get("BNPL_PORT", "8080")),
            "api_keys": _csv(env.get("BNPL_API_KEYS", "")),
            "auth_disabled": env.get("BNPL_AUTH_DISABLED", "").lower() in ("1", "true", "yes"),
            "max_body_bytes": int(env.get("BNPL_MAX_BODY_BYTES", str(2 * 1024 * 1024))),
            "batch_max": int(env.get("BNPL_BATCH_MAX", "1000")),
            "registry_poll_seconds": float(env.get("BNPL_REGISTRY_POLL_SECONDS", "10")),
            "instance_id": env.get("BNPL_INSTANCE_ID", "api-1"),
            "queue_max": int(env.get("BNPL_QUEUE_MAX", "50000")),
            "publish_batch": int(env.get("BNPL_PUBLISH_BATCH", "500")),
            "publish_interval_ms": float(env.get("BNPL_PUBLISH_INTERVAL_MS", "5")),
            "publish_marker_ttl": int(env.get("BNPL_PUBLISH_MARKER_TTL", "86400")),
        }
        values.update(
            {
                "warehouse": env.get("BNPL_WAREHOUSE", "duckdb"),
                "bq_project": env.get("BNPL_BQ_PROJECT", ""),
                "bq_dataset": env.get("BNPL_BQ_DATASET", "bnpl"),
                "bq_location": env.get("BNPL_BQ_LOCATION", "US"),
                "consumer_batch": int(env.get("BNPL_CONSUMER_BATCH", "5000")),
                "consumer_wait_s": float(env.get("BNPL_CONSUMER_WAIT_S", "2")),
                "max_deliveries": int(env.get("BNPL_MAX_DELIVERIES", "5")),
                "claim_idle_ms": int(env.get("BNPL_CLAIM_IDLE_MS", "30000")),
                "stream_retention_days": float(env.get("BNPL_STREAM_RETENTION_DAYS", "30")),
                "metrics_port": int(env.get("BNPL_METRICS_PORT", "0")),
                "mlflow_window_s": int(env.get("BNPL_MLFLOW_WINDOW_S", "60")),
                "mlflow_lateness_s": int(env.get("BNPL_MLFLOW_LATENESS_S", "30")),
                "webhook_urls": _csv(env.get("BNPL_WEBHOOK_URLS", "")),
                "webhook_secret": env.get("BNPL_WEBHOOK_SECRET", ""),
                "webhook_slack": env.get("BNPL_WEBHOOK_SLACK", "").lower() in ("1", "true", "yes"),
                "alert_cooldown_s": int(env.get("BNPL_ALERT_COOLDOWN_S", "3600")),
                "drift_window": int(env.get("BNPL_DRIFT_WINDOW", "5000")),
                "drift_psi": float(env.get("BNPL_DRIFT_PSI", "0.1")),
                "drift_unknown_rate": float(env.get("BNPL_DRIFT_UNKNOWN_RATE", "0.05")),
                "drift_approval_z": float(env.get("BNPL_DRIFT_APPROVAL_Z", "5")),
                "drift_adwin_delta": float(env.get("BNPL_DRIFT_ADWIN_DELTA", "1e-5")),
            }
        )
        if env.get("BNPL_DUCKDB_PATH"):
            values["duckdb_path"] = Path(env["BNPL_DUCKDB_PATH"])
        if "BNPL_OPEN_PATHS" in env:
            values["open_paths"] = _csv(env["BNPL_OPEN_PATHS"])
        if "BNPL_MODEL_ALIASES" in env:
            values["model_aliases"] = _csv(env["BNPL_MODEL_ALIASES"])
        if env.get("BNPL_SPOOL_DIR"):
            values["spool_dir"] = Path(env["BNPL_SPOOL_DIR"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
