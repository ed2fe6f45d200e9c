"""Every setting of every process, declared once: one frozen dataclass per section, one field per setting.

Each field names its environment variable, default and documentation in one place (:func:`setting`); parsing is
derived from the field's type. ``Settings`` holds one instance of each section, built once per process from the
environment (:meth:`Settings.from_env`). Modules receive only the section they need (``settings.api``,
``settings.consumers`` …). The README's configuration table is generated from these declarations
(``bnpl config --markdown``), and a test keeps the two equal.

Defaults that depend on the data directory (SQLite MLflow store, spool, DuckDB file) are resolved when the settings
are built; :meth:`Settings.replace` rebuilds from what was given, so changing ``data_dir`` moves them too.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from common.keys import Keys
from common.redact import redact_url

#: Values that mean true / false in boolean variables (anything else is an error, not silently false).
TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS: Final = frozenset({"", "0", "false", "no", "off"})


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def setting(env: str, default: Any, doc: str, *, shown: str | None = None, secret: bool = False) -> Any:
    """Declare a setting: environment variable ``env``, ``default`` and one line of documentation.

    ``shown`` replaces the default in the README table (e.g. a path under the data directory); ``secret`` values
    are never printed by ``bnpl config``.
    """
    return field(default=default, metadata={"env": env, "doc": doc, "shown": shown, "secret": secret})


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _bool(value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected one of {sorted(TRUE_WORDS | FALSE_WORDS - {''})}")


def _parser(tp: Any) -> Callable[[str], Any]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        parse = _parser(inner)
        return lambda text: parse(text) if text else None
    if typing.get_origin(tp) is tuple:
        return _csv
    parsers: dict[Any, Callable[[str], Any]] = {str: str, int: int, float: float, bool: _bool, Path: Path}
    return parsers[tp]


# --- sections --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ApiSettings:
    """``bnpl serve``: the decision API."""

    host: str = setting("BNPL_HOST", "127.0.0.1", "listen address of `bnpl serve`")
    port: int = setting("BNPL_PORT", 8080, "listen port of `bnpl serve`")
    api_keys: tuple[str, ...] = setting(
        "BNPL_API_KEYS",
        (),
        "comma-separated accepted keys (`X-API-Key` or `Authorization: Bearer`); the API refuses to start without one",
        shown="(none)",
        secret=True,
    )
    auth_disabled: bool = setting("BNPL_AUTH_DISABLED", False, "`true` serves without keys (local experiments only)")
    open_paths: tuple[str, ...] = setting(
        "BNPL_OPEN_PATHS", ("/healthz", "/readyz", "/metrics", "/openapi.json"), "paths reachable without a key"
    )
    max_body_bytes: int = setting("BNPL_MAX_BODY_BYTES", 2 * 1024 * 1024, "413 above this request body size")
    batch_max: int = setting("BNPL_BATCH_MAX", 1000, "most requests in one batch call (422 above)")
    read_timeout_s: float = setting(
        "BNPL_READ_TIMEOUT_S", 10.0, "a request body not received within this is answered 408 and the connection closed"
    )
    max_json_depth: int = setting("BNPL_MAX_JSON_DEPTH", 32, "request bodies nesting deeper than this are 400s")
    instance_id: str = setting(
        "BNPL_INSTANCE_ID", "api-1", "unique per API process: names its spool file and its publish sequence in Redis"
    )
    reuse_port: bool = setting(
        "BNPL_REUSE_PORT", False, "bind with SO_REUSEPORT (set by `bnpl serve --workers N` for its processes)"
    )


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    """The API's event publisher: in-memory queue, blocks written to Redis, the local spool."""

    queue_max: int = setting("BNPL_QUEUE_MAX", 50_000, "events held in memory; beyond it they go to the spool")
    publish_batch: int = setting("BNPL_PUBLISH_BATCH", 500, "most events per block written to Redis")
    publish_interval_ms: float = setting(
        "BNPL_PUBLISH_INTERVAL_MS", 5.0, "longest wait (ms) before a partial block is written"
    )
    spool_dir: Path | None = setting(
        "BNPL_SPOOL_DIR", None, "where events wait while Redis cannot take them", shown="`<data dir>/spool`"
    )
    queue_high_water: int = setting(
        "BNPL_QUEUE_HIGH_WATER", 10_000, "more events than this queued in memory: /readyz says degraded"
    )
    stall_s: float = setting(
        "BNPL_PUBLISH_STALL_S", 10.0, "events waiting and none reached Redis for this long: /readyz says degraded"
    )
    publish_wait_replicas: int = setting(
        "BNPL_PUBLISH_WAIT_REPLICAS",
        0,
        "replicas that must acknowledge each written block (WAIT) or it is spooled and re-sent; 0: no wait",
    )
    publish_wait_ms: int = setting(
        "BNPL_PUBLISH_WAIT_MS", 200, "longest WAIT (ms) for those replicas' acknowledgement of a block"
    )
    ledger_retention_days: int = setting(
        "BNPL_LEDGER_RETENTION_DAYS",
        400,
        "days a published-ledger hash (events per day and instance, read by `bnpl reconcile`) is kept after its "
        "last write",
    )

    def spool_path(self, instance_id: str) -> Path:
        """The spool file of API instance ``instance_id``."""
        assert self.spool_dir is not None, "resolved by Settings.build"
        return self.spool_dir / f"{instance_id}.spool"


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Redis and the stream layout shared by the API and every consumer group."""

    redis_url: str = setting(
        "BNPL_REDIS_URL",
        "",
        "`redis://[:password@]host:port/db`; empty: `bnpl serve` starts a private redis-server under the data dir",
        shown="(embedded)",
    )
    key_prefix: str = setting("BNPL_KEY_PREFIX", "bnpl", "prefix of every Redis key (separates deployments)")
    stream_shards: int = setting(
        "BNPL_STREAM_SHARDS", 1, "prediction-stream shards (by customer_id, hash-tagged for Redis Cluster)"
    )
    redis_cluster: bool = setting(
        "BNPL_REDIS_CLUSTER",
        False,
        "`BNPL_REDIS_URL` is a Redis Cluster node (any one): the API publishes through a cluster client",
    )

    @property
    def keys(self) -> Keys:
        """Every Redis key name of this deployment."""
        return Keys(self.key_prefix, self.stream_shards)


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """Every consumer-group worker (`bnpl consume <group>`): batching, retries, claiming, health, trimming."""

    batch_size: int = setting("BNPL_CONSUMER_BATCH", 5_000, "entries per batch handed to a group's sink")
    max_wait_s: float = setting(
        "BNPL_CONSUMER_WAIT_S", 2.0, "upper bound: a partial batch is handed over at the latest after this wait"
    )
    linger_ms: int = setting(
        "BNPL_CONSUMER_LINGER_MS",
        150,
        "once a group has caught up (a read returned fewer entries than asked), a partial batch waits at most this "
        "long for more (ms); under a backlog batches grow up to BNPL_CONSUMER_BATCH",
    )
    block_ms: int = setting("BNPL_CONSUMER_BLOCK_MS", 500, "longest blocking XREADGROUP call (ms)")
    max_deliveries: int = setting("BNPL_MAX_DELIVERIES", 5, "an entry delivered this often goes to the dead letters")
    claim_idle_ms: int = setting("BNPL_CLAIM_IDLE_MS", 30_000, "another worker claims entries pending this long (ms)")
    claim_every_s: float = setting("BNPL_CLAIM_EVERY_S", 5.0, "how often a worker looks for idle entries")
    lease_ttl_s: float = setting(
        "BNPL_LEASE_TTL_S",
        10.0,
        "a worker's lease on a stream shard lapses this long after its last renewal; its shards then move",
    )
    health_ttl_s: int = setting("BNPL_HEALTH_TTL_S", 15, "a worker's health key expires this long after its beat")
    trim_every_s: float = setting("BNPL_TRIM_EVERY_S", 30.0, "how often a worker trims the streams it reads")
    stream_retention_hours: float = setting(
        "BNPL_STREAM_RETENTION_HOURS",
        6.0,
        "acked prediction events leave Redis this long after publishing (never before every group acked them)",
    )
    alert_retention_days: float = setting(
        "BNPL_ALERT_RETENTION_DAYS", 30.0, "alerts and outcomes stay in their streams this long (their audit trail)"
    )
    drain_timeout_s: float = setting("BNPL_DRAIN_TIMEOUT_S", 30.0, "first stop signal: finish the batch within this")
    max_backoff_s: float = setting("BNPL_MAX_BACKOFF_S", 30.0, "ceiling of the retry backoff of a failing sink")
    metrics_port: int | None = setting(
        "BNPL_METRICS_PORT",
        None,
        "Prometheus `/metrics` port of a worker (worker i: port + i); unset: the group's port (warehouse 9101, "
        "mlflow 9111, drift 9121, outcomes 9131, alert-sender 9141, + i); 0: off",
        shown="(per group)",
    )
    metrics_host: str = setting(
        "BNPL_METRICS_HOST", "127.0.0.1", "listen address of a worker's `/metrics` (`0.0.0.0` in containers)"
    )
    worker_index: int = setting(
        "BNPL_WORKER_INDEX", 0, "slot of a worker within `--workers N` (set by the supervisor; offsets its metrics)"
    )
    mlflow_window_s: int = setting("BNPL_MLFLOW_WINDOW_S", 60, "window of the MLflow group's per-arm metrics (s)")
    mlflow_lateness_s: int = setting(
        "BNPL_MLFLOW_LATENESS_S", 30, "how long after its end a window still takes late events (s)"
    )

    @property
    def retention_ms(self) -> int:
        """Retention of the prediction streams."""
        return int(self.stream_retention_hours * 3600 * 1000)

    @property
    def alert_retention_ms(self) -> int:
        return int(self.alert_retention_days * 24 * 3600 * 1000)


@dataclass(frozen=True, slots=True)
class WarehouseSettings:
    """Where the warehouse group lands events."""

    warehouse: str = setting("BNPL_WAREHOUSE", "duckdb", "`duckdb` (embedded) or `bigquery`")
    duckdb_path: Path | None = setting("BNPL_DUCKDB_PATH", None, "DuckDB file", shown="`<data dir>/warehouse.duckdb`")
    duckdb_hold_s: float = setting(
        "BNPL_DUCKDB_HOLD_S",
        5.0,
        "the warehouse group keeps its DuckDB connection across batches this long (s), then lets other processes in "
        "(they wait for the file up to 30 s); 0: open and close it per batch",
    )
    bq_project: str = setting(
        "BNPL_BQ_PROJECT",
        "",
        "BigQuery project (credentials: Application Default Credentials, e.g. `GOOGLE_APPLICATION_CREDENTIALS`)",
        shown="—",
    )
    bq_dataset: str = setting("BNPL_BQ_DATASET", "bnpl", "BigQuery dataset")
    bq_location: str = setting("BNPL_BQ_LOCATION", "US", "BigQuery location of the dataset")
    bq_mode: str = setting(
        "BNPL_BQ_MODE",
        "load",
        "`load`: each batch is a free load job into a staging table, then one MERGE on prediction_id (exactly "
        "once); `stream`: appends through the Storage Write API, one committed write stream per shard, offsets "
        "kept in Redis and advanced with the XACK (exactly once, rows visible at once)",
    )
    bq_batch_rows: int = setting(
        "BNPL_BQ_BATCH_ROWS",
        10_000,
        "BigQuery `load` mode: rows per batch of the warehouse group (replaces `BNPL_CONSUMER_BATCH`); one load "
        "job and one MERGE each",
    )
    bq_batch_max_s: float = setting(
        "BNPL_BQ_BATCH_MAX_S",
        300.0,
        "BigQuery `load` mode: a partial batch is loaded at this age, not before (replaces `BNPL_CONSUMER_WAIT_S`): "
        "≤ 86,400 / this MERGEs a day per worker (288), against 1,500 table operations per table a day",
    )
    bq_max_delay_s: float = setting(
        "BNPL_BQ_MAX_DELAY_S", 21_600.0, "warning alert when the oldest event not yet in BigQuery is older (s)"
    )
    bq_endpoint: str = setting(
        "BNPL_BQ_ENDPOINT", "", "BigQuery API endpoint override (an emulator; anonymous credentials)", shown="—"
    )


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """The drift group's detectors (defaults measured by `make bench-drift`)."""

    window: int = setting("BNPL_DRIFT_WINDOW", 5_000, "events per drift window (PSI, KS, unknown rate, approval)")
    psi: float = setting("BNPL_DRIFT_PSI", 0.1, "PSI above which the score distribution alerts")
    false_alarm: float = setting(
        "BNPL_DRIFT_FALSE_ALARM",
        1e-6,
        "false-alarm rate per window and detector: feature, category and time PSI alert above its χ² critical value",
    )
    psi_floor: float = setting(
        "BNPL_DRIFT_PSI_FLOOR", 0.005, "feature, category and time-pattern PSI never alert below this (tiny shifts)"
    )
    new_category_count: int = setting(
        "BNPL_DRIFT_NEW_CATEGORY_COUNT", 25, "a value the models never saw, this often in one window, alerts"
    )
    unknown_rate: float = setting("BNPL_DRIFT_UNKNOWN_RATE", 0.05, "unknown-category share above which a field alerts")
    approval_z: float = setting(
        "BNPL_DRIFT_APPROVAL_Z", 5.0, "|z| of a window's approval rate vs the reference above which an arm alerts"
    )
    adwin_delta: float = setting("BNPL_DRIFT_ADWIN_DELTA", 1e-5, "ADWIN confidence on the score stream")
    adwin_min_samples: int = setting(
        "BNPL_DRIFT_ADWIN_MIN_SAMPLES", 5_000, "scores seen before ADWIN may alert (its warm-up)"
    )
    checkpoint_every_s: float = setting(
        "BNPL_DRIFT_CHECKPOINT_S", 5.0, "how often detector state is checkpointed to Redis"
    )
    mlflow_runs: bool = setting(
        "BNPL_DRIFT_MLFLOW",
        True,
        "log each closed drift window's statistics to MLflow (experiment `<model>-drift`, a run per version and day)",
    )
    mlflow_queue: int = setting(
        "BNPL_DRIFT_MLFLOW_QUEUE",
        1_000,
        "closed drift windows kept while MLflow cannot take them (retried with backoff); beyond it the oldest go",
    )
    run_lateness_s: float = setting(
        "BNPL_DRIFT_RUN_LATENESS_S",
        600.0,
        "a day's drift run is ended once requests this far (s, request time) past the day's end arrive",
    )


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Alerts: dedup cooldown and webhook delivery."""

    webhook_urls: tuple[str, ...] = setting(
        "BNPL_WEBHOOK_URLS", (), "where alerts are POSTed (comma-separated)", shown="—"
    )
    webhook_secret: str = setting(
        "BNPL_WEBHOOK_SECRET", "", "HMAC-SHA256 secret of `X-Signature`", shown="—", secret=True
    )
    webhook_allow_unsigned: bool = setting(
        "BNPL_WEBHOOK_ALLOW_UNSIGNED", False, "`true` lets the alert sender run without a secret (unsigned calls)"
    )
    webhook_slack: bool = setting("BNPL_WEBHOOK_SLACK", False, 'send a Slack-compatible `{"text": …}` body')
    alert_cooldown_s: int = setting(
        "BNPL_ALERT_COOLDOWN_S", 3_600, "the same cause (alert key) alerts at most once per cooldown (s)"
    )


@dataclass(frozen=True, slots=True)
class PerformanceSettings:
    """Outcomes and the performance job (`bnpl performance`, the outcomes group's schedule)."""

    outcomes_batch_max: int = setting("BNPL_OUTCOMES_BATCH_MAX", 10_000, "most outcomes in one POST (422 above)")
    maturity_days: int = setting(
        "BNPL_OUTCOME_MATURITY_DAYS", 42, "a loan's outcome is known this many days after the decision (cohorts mature)"
    )
    cadence: str = setting("BNPL_PERFORMANCE_CADENCE", "weekly", "`weekly` or `daily`: analysis period and cohort size")
    review_approval_rate: float = setting(
        "BNPL_REVIEW_APPROVAL_RATE", 0.5, "share of manual reviews a reviewer funds (simulated outcomes, estimates)"
    )
    auc_drop: float = setting(
        "BNPL_PERFORMANCE_AUC_DROP", 0.05, "realized AUC this much (relative) below the holdout AUC alerts"
    )
    default_limit: float = setting(
        "BNPL_PERFORMANCE_DEFAULT_LIMIT", 0.05, "default rate among approved above this (CI lower bound) alerts"
    )
    alpha: float = setting(
        "BNPL_PERFORMANCE_ALPHA", 0.001, "false-alarm rate of the calibration check per version and analysis"
    )
    min_loans: int = setting("BNPL_PERFORMANCE_MIN_LOANS", 500, "fewer matured loans than this: metrics, no alerts")
    time_column: str = setting(
        "BNPL_PERFORMANCE_TIME",
        "assessment",
        "cohorts by `assessment` time, or by the request's `transaction` time (replayed or back-filled traffic)",
    )
    schedule_s: float = setting(
        "BNPL_PERFORMANCE_SCHEDULE_S",
        3_600.0,
        "how often the outcomes group checks whether an analysis is due; 0: never",
    )


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """The MLflow tracking server and model registry."""

    tracking_uri: str = setting(
        "MLFLOW_TRACKING_URI", "", "MLflow tracking + registry", shown="`sqlite:///<data dir>/mlflow.db`"
    )
    artifact_root: str = setting(
        "BNPL_MLFLOW_ARTIFACT_ROOT",
        "",
        "artifact root of experiments this project creates (ignored by an `mlflow server` that serves artifacts)",
        shown="`<data dir>/mlartifacts`",
    )
    model_name: str = setting("BNPL_MODEL_NAME", "bnpl_default_predictor", "registered model of every candidate")
    model_aliases: tuple[str, ...] = setting(
        "BNPL_MODEL_ALIASES",
        ("champion", "challenger"),
        "aliases loaded and scored on every request (first = champion)",
    )
    registry_poll_seconds: float = setting(
        "BNPL_REGISTRY_POLL_SECONDS", 10.0, "how often the API re-reads aliases and the active experiment"
    )
    mlflow_timeout_s: float = setting(
        "BNPL_MLFLOW_TIMEOUT_S",
        5.0,
        "timeout of each request to an MLflow server (s); sets MLFLOW_HTTP_REQUEST_TIMEOUT unless that is set",
    )
    mlflow_retries: int = setting(
        "BNPL_MLFLOW_RETRIES",
        1,
        "retries of a failed request to an MLflow server; sets MLFLOW_HTTP_REQUEST_MAX_RETRIES unless that is set",
    )


@dataclass(frozen=True, slots=True)
class GovernanceSettings:
    """Who may move which alias when: the promotion gate, the guardian, the audit trail, the emergency fallback."""

    actor: str = setting("BNPL_ACTOR", "", "who audit records name for CLI changes", shown="`<user>@<host>`")
    gate_auc_tolerance: float = setting(
        "BNPL_GATE_AUC_TOLERANCE",
        0.002,
        "promotion gate: a candidate's holdout AUC may be at most this below the holder's",
    )
    gate_calibration_error: float = setting(
        "BNPL_GATE_CALIBRATION_ERROR",
        0.10,
        "promotion gate: holdout observed/expected defaults must lie within 1 ± this, overall and in every season",
    )
    gate_min_impact_ratio: float = setting(
        "BNPL_GATE_MIN_IMPACT_RATIO",
        0.80,
        "promotion gate: lowest approval rate of an age bracket over the highest, on the holdout (four-fifths rule)",
    )
    guardian_mode: str = setting(
        "BNPL_GUARDIAN_MODE",
        "recommend",
        "`auto` (switch champion, roll back, engage the fallback), `recommend` (alert with the evidence) or `off`",
    )
    guardian_alpha: float = setting(
        "BNPL_GUARDIAN_ALPHA", 0.01, "one-sided false-switch rate of the guardian's paired test per analysis"
    )
    guardian_probation_periods: int = setting(
        "BNPL_GUARDIAN_PROBATION_PERIODS", 3, "analyses after a switch in which a breaching new champion is rolled back"
    )
    guardian_cooldown_days: int = setting(
        "BNPL_GUARDIAN_COOLDOWN_DAYS", 28, "at most one automatic switch in this many days (rollbacks excepted)"
    )

    def __post_init__(self) -> None:
        if self.guardian_mode not in ("auto", "recommend", "off"):
            raise SettingsError(f"BNPL_GUARDIAN_MODE={self.guardian_mode!r}: expected auto, recommend or off")


@dataclass(frozen=True, slots=True)
class TrainingSettings:
    """`bnpl train` and the demo's training step."""

    training_experiment: str = setting("BNPL_TRAINING_EXPERIMENT", "bnpl-training", "MLflow experiment of training")
    train_seed: int = setting("BNPL_TRAIN_SEED", 7, "seed of the synthetic training data")
    train_rows: int = setting("BNPL_TRAIN_ROWS", 400_000, "synthetic transactions for training + holdout")
    train_start: str = setting("BNPL_TRAIN_START", "2024-01-01", "first day of the synthetic training history")
    train_days: int = setting(
        "BNPL_TRAIN_DAYS",
        730,
        "days of training history: the first half fits, the next quarter calibrates and sets thresholds, the last "
        "quarter is the holdout (730: a full year of every season to fit on)",
    )
    objective: str = setting(
        "BNPL_POLICY_OBJECTIVE",
        "default_rate",
        "how thresholds are set: `default_rate` (approve up to the target default rate among approved, review "
        "while a review pays) or `profit` (maximum expected profit under the cost matrix)",
    )
    target_default_rate: float = setting(
        "BNPL_TARGET_DEFAULT_RATE", 0.02, "expected default rate among approved loans (`default_rate` objective)"
    )
    margin: float = setting("BNPL_MARGIN", 0.06, "revenue of a repaid loan, as a share of its amount")
    loss_given_default: float = setting(
        "BNPL_LOSS_GIVEN_DEFAULT", 0.5, "loss of a defaulted loan, as a share of its amount"
    )
    review_cost: float = setting("BNPL_REVIEW_COST", 0.01, "cost of a manual review, as a share of the amount")
    review_catch: float = setting("BNPL_REVIEW_CATCH", 0.6, "share of defaulters a manual review stops")
    protected_fields: tuple[str, ...] = setting(
        "BNPL_PROTECTED_FIELDS",
        ("customer_age_bracket",),
        "request fields no model learns from (they stay in events for fairness monitoring); empty: models may use "
        "them, and a version that scores an elderly bracket worse than another is not registered",
    )
    elderly_brackets: tuple[str, ...] = setting(
        "BNPL_ELDERLY_BRACKETS", ("55+",), "age brackets a model that uses age must never score worse than any other"
    )


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """`make bench-*` (development only)."""

    bench_rounds: int = setting("BENCH_ROUNDS", 3, "`make bench-api`: rounds per cell (servers take turns)")
    bench_seconds: float = setting("BENCH_SECONDS", 5.0, "`make bench-api`: seconds per cell")
    bench_warmup_seconds: float = setting("BENCH_WARMUP_SECONDS", 3.0, "`make bench-api`: warm-up per server")
    bench_events: int = setting("BENCH_EVENTS", 100_000, "`make bench-consumers`: events per run")
    bench_groups: tuple[str, ...] = setting(
        "BENCH_GROUPS", ("warehouse", "drift"), "`make bench-consumers`: groups measured"
    )
    bench_drift_events: int = setting("BENCH_DRIFT_EVENTS", 1_000_000, "`make bench-drift`: events without drift")
    bench_ab_runs: int = setting("BENCH_AB_RUNS", 1_000, "`make bench-ab`: simulated experiments per regime")
    bench_performance_decisions: int = setting(
        "BENCH_PERFORMANCE_DECISIONS", 1_000_000, "`make bench-performance`: decisions without drift"
    )
    bench_model_rows: int = setting("BENCH_MODEL_ROWS", 2_000_000, "`make bench-model`: fresh applications scored")
    bench_guardian_decisions: int = setting(
        "BENCH_GUARDIAN_DECISIONS", 1_000_000, "`make bench-guardian`: decisions without degradation"
    )
    bench_model_decisions: int = setting(
        "BENCH_MODEL_DECISIONS", 100_000, "`make bench-model`: engine decisions whose reasons are checked"
    )
    soak_seconds: float = setting("BENCH_SOAK_SECONDS", 180.0, "`make bench-soak`: seconds of traffic")
    soak_rate: float = setting("BENCH_SOAK_RATE", 800.0, "`make bench-soak`: decisions per second (open loop)")
    soak_sample_s: float = setting("BENCH_SOAK_SAMPLE_S", 1.0, "`make bench-soak`: seconds between samples")
    soak_retention_s: float = setting(
        "BENCH_SOAK_RETENTION_S",
        60.0,
        "`make bench-soak`: stream retention of the run (short, so Redis memory reaches its plateau within it)",
    )


#: Section name → section class, in README order.
SECTIONS: Final[dict[str, type]] = {
    "api": ApiSettings,
    "publisher": PublisherSettings,
    "streams": StreamSettings,
    "consumers": ConsumerSettings,
    "warehouse": WarehouseSettings,
    "drift": DriftSettings,
    "alerts": AlertSettings,
    "performance": PerformanceSettings,
    "registry": RegistrySettings,
    "governance": GovernanceSettings,
    "training": TrainingSettings,
    "bench": BenchSettings,
}
DATA_DIR_ENV: Final = "BNPL_DATA_DIR"


@dataclass(frozen=True, slots=True)
class SettingInfo:
    """One declared setting, as the README table and ``bnpl config`` show it."""

    section: str
    name: str
    env: str
    default: Any
    doc: str
    shown: str | None
    secret: bool
    parse: Callable[[str], Any]


def declared() -> Iterator[SettingInfo]:
    """Every declared setting, section by section."""
    yield SettingInfo("core", "data_dir", DATA_DIR_ENV, Path(".bnpl"), _DATA_DIR_DOC, None, False, Path)
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            meta = f.metadata
            yield SettingInfo(
                section,
                f.name,
                meta["env"],
                f.default,
                meta["doc"],
                meta["shown"],
                meta["secret"],
                _parser(hints[f.name]),
            )


_DATA_DIR_DOC = "directory of every embedded store (SQLite MLflow, artifacts, DuckDB, spool, redis)"
#: Flat setting name → its section (names are unique across sections, so overrides can be given flat).
_SECTION_OF: Final[dict[str, str]] = {}
for _info in declared():
    if _info.name in _SECTION_OF:
        raise AssertionError(f"setting name {_info.name!r} is declared twice")
    _SECTION_OF[_info.name] = _info.section


def _shown_default(info: SettingInfo) -> str:
    if info.shown is not None:
        return info.shown
    value = info.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else "—"
    return f"`{value}`" if value != "" else "—"


def configuration_table() -> str:
    """The README's configuration table (markdown), generated from the declarations."""
    lines = ["| variable | default | section | meaning |", "|---|---|---|---|"]
    for info in declared():
        doc = info.doc.replace("|", "\\|")  # a pipe would end the cell
        lines.append(f"| `{info.env}` | {_shown_default(info)} | {info.section} | {doc} |")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Settings:
    """The configuration of one process: one object per section. Build with :meth:`from_env` or :meth:`build`."""

    data_dir: Path
    api: ApiSettings
    publisher: PublisherSettings
    streams: StreamSettings
    consumers: ConsumerSettings
    warehouse: WarehouseSettings
    drift: DriftSettings
    alerts: AlertSettings
    performance: PerformanceSettings
    registry: RegistrySettings
    governance: GovernanceSettings
    training: TrainingSettings
    bench: BenchSettings
    #: Extra labels copied onto every logged run (not secrets). Not read from the environment.
    run_tags: Mapping[str, str] = field(default_factory=dict)
    #: What was set explicitly (environment or overrides), flat; :meth:`replace` rebuilds from it.
    given: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, run_tags: Mapping[str, str] | None = None, **given: Any) -> Settings:
        """Settings from flat setting names (``redis_url=…``, ``batch_size=…``); everything else at its default."""
        unknown = set(given) - set(_SECTION_OF)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        data_dir = Path(given.get("data_dir") or ".bnpl")
        sections: dict[str, Any] = {}
        for name, section_cls in SECTIONS.items():
            values = {k: v for k, v in given.items() if _SECTION_OF[k] == name}
            sections[name] = section_cls(**values)
        resolved = data_dir.resolve()
        if sections["publisher"].spool_dir is None:
            sections["publisher"] = dataclasses.replace(sections["publisher"], spool_dir=data_dir / "spool")
        if sections["warehouse"].duckdb_path is None:
            sections["warehouse"] = dataclasses.replace(
                sections["warehouse"], duckdb_path=data_dir / "warehouse.duckdb"
            )
        registry = sections["registry"]
        sections["registry"] = dataclasses.replace(
            registry,
            tracking_uri=registry.tracking_uri or f"sqlite:///{resolved / 'mlflow.db'}",
            artifact_root=registry.artifact_root or (resolved / "mlartifacts").as_uri(),
        )
        return cls(data_dir=data_dir, run_tags=dict(run_tags or {}), given=dict(given), **sections)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every declared variable from ``environ`` (default: the process environment) once; keyword
        overrides (CLI flags) win when not None. A value a setting cannot take raises :class:`SettingsError`."""
        env = os.environ if environ is None else environ
        given: dict[str, Any] = {}
        for info in declared():
            if info.env not in env:
                continue
            try:
                given[info.name] = info.parse(env[info.env])
            except (ValueError, TypeError) as exc:
                raise SettingsError(f"{info.env}={env[info.env]!r}: {exc}") from None
        given.update({k: v for k, v in overrides.items() if v is not None})
        return cls.build(**given)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (flat names; None leaves a setting as it is), derived defaults
        recomputed."""
        changed = {k: v for k, v in changes.items() if v is not None}
        return Settings.build(run_tags=self.run_tags, **{**self.given, **changed})

    @property
    def keys(self) -> Keys:
        """Every Redis key name of this deployment (shorthand for ``settings.streams.keys``)."""
        return self.streams.keys

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, effective value, section) of every setting; secrets hidden, URLs without passwords."""
        rows = []
        for info in declared():
            value = self.data_dir if info.section == "core" else getattr(getattr(self, info.section), info.name)
            if info.secret:
                text = "(set)" if value else "(not set)"
            elif isinstance(value, tuple):
                text = ",".join(value)
            else:
                text = redact_url(str(value)) if isinstance(value, str) else str(value)
            rows.append((info.env, text, info.section))
        return rows
