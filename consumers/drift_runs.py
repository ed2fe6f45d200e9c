"""The drift group's MLflow runs: every closed drift window's statistics, one run per (model version, UTC day).

Runs live in the experiment ``<model name>-drift`` (beside the registered model's A/B experiments, which the API reads
as configuration, and ``bnpl-performance``), are named ``drift v<version> <day>`` and tagged ``bnpl.kind=drift``,
``bnpl.model_name``, ``bnpl.model_version`` and ``bnpl.day``. Each window is one point of every metric of
:func:`drift.monitor.window_metrics` (``feature_psi/amount``, ``unknown_rate/payment_provider``, ``score_psi`` …)
with ``step`` = the window's index within its day (with several stream shards: index × shards + shard, so shards
never share a step) and ``timestamp`` = the window's end, the latest request timestamp in it (application time: a
replay of old traffic charts on its own dates). A day's run is ended (FINISHED) once requests ``BNPL_DRIFT_RUN_
LATENESS_S`` past the day's end arrive, and at the latest when the version's next day's run starts; a window that
closes later still lands in its day's run.

Nothing here may slow detection down: the drift group hands windows over with :meth:`DriftRuns.submit` (a lock and
an append) and a thread of this class's own talks to MLflow. While MLflow fails, the thread logs a warning, keeps the
windows (at most ``BNPL_DRIFT_MLFLOW_QUEUE``; beyond that the oldest are dropped and counted) and retries with
backoff; detectors and alerts go on meanwhile. Windows still queued when a worker dies are lost: the runs are a
chart of what the detectors saw, the alerts are the record.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from common.settings import DriftSettings, RegistrySettings
from drift.monitor import WindowStats, utc_day
from registry.store import ensure_experiment, mlflow_client

log = logging.getLogger(__name__)

KIND_TAG: Final = "bnpl.kind"
VERSION_TAG: Final = "bnpl.model_version"
DAY_TAG: Final = "bnpl.day"
MAX_BACKOFF_S: Final = 30.0


def drift_experiment(model_name: str) -> str:
    """The MLflow experiment holding the drift runs of ``model_name``.

    >>> drift_experiment("bnpl_default_predictor")
    'bnpl_default_predictor-drift'
    """
    return f"{model_name}-drift"


def run_name(version: str, day: str) -> str:
    """The name of the drift run of ``version`` on ``day``.

    >>> run_name("3", "2026-11-27")
    'drift v3 2026-11-27'
    """
    return f"drift v{version} {day}"


@dataclass(frozen=True, slots=True)
class _Window:
    version: str
    step: int
    stats: WindowStats


@dataclass(frozen=True, slots=True)
class _Close:
    """End every drift run of a day before ``day``."""

    day: str


class DriftRuns:
    """Closed drift windows → MLflow, from a background thread (started on the first window)."""

    def __init__(self, registry: RegistrySettings, config: DriftSettings) -> None:
        self.registry = registry
        self.config = config
        self.experiment = drift_experiment(registry.model_name)
        self._items: deque[_Window | _Close] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._stopping = False
        self._closing_day = ""
        self._client: Any = None
        self._experiment_id: str | None = None
        self._runs: dict[tuple[str, str], str] = {}  # (version, day) → run id
        self._newest_day: dict[str, str] = {}  # version → day of its newest run
        self.logged = 0  # windows logged
        self.dropped = 0  # windows dropped while MLflow could not take them
        self.failures = 0  # failed MLflow attempts

    # --- the drift group's side (never blocks) --------------------------------------------------------------------
    def submit(self, version: str, step: int, stats: WindowStats) -> None:
        """Queue a closed window of ``version`` for its day's run."""
        if stats.end_ms is None:
            return  # no request of the window had a readable timestamp: it has no day
        self._put(_Window(version, step, stats))

    def advance(self, newest_s: float) -> None:
        """Requests up to ``newest_s`` (epoch s, request time) have arrived: days that ended more than the lateness
        before it are closed."""
        day = utc_day(newest_s - self.config.run_lateness_s)
        if day > self._closing_day:  # the first call of a worker also ends the runs an earlier one left open
            self._closing_day = day
            self._put(_Close(day))

    def _put(self, item: _Window | _Close) -> None:
        with self._cond:
            self._items.append(item)
            windows = sum(1 for i in self._items if isinstance(i, _Window))
            if windows > self.config.mlflow_queue:
                oldest = next(i for i in self._items if isinstance(i, _Window))
                self._items.remove(oldest)
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning(
                        "drift runs: %d window(s) dropped: MLflow is not taking them (BNPL_DRIFT_MLFLOW_QUEUE=%d)",
                        self.dropped,
                        self.config.mlflow_queue,
                    )
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="drift-mlflow", daemon=True)
                self._thread.start()

    @property
    def pending(self) -> int:
        """Items (windows, day closings) not yet in MLflow, the one being logged included."""
        with self._cond:
            return len(self._items) + int(self._busy)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until everything queued is in MLflow; True if it is."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def stop(self, timeout: float) -> None:
        """Log what is queued within ``timeout`` seconds (one attempt each), then stop the thread."""
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(0.1, timeout / 10))
        if self._items:
            log.warning("drift runs: %d item(s) not logged to MLflow at stop", len(self._items))

    # --- the thread ---------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        backoff = 1.0
        while True:
            with self._cond:
                while not self._items and not self._stopping:
                    self._cond.wait()
                if not self._items:
                    return
                item = self._items.popleft()
                self._busy = True
            try:
                self._apply(item)
            except Exception as exc:  # MLflow down, slow or refusing: keep the item, retry later
                self.failures += 1
                self._client = self._experiment_id = None  # the next attempt connects afresh
                with self._cond:
                    self._items.appendleft(item)
                    self._busy = False
                    waiting = len(self._items)
                    self._cond.notify_all()
                    if self._stopping:
                        return
                log.warning(
                    "drift runs: MLflow logging failed (%s: %s); %d item(s) wait, retrying in %.0f s",
                    exc.__class__.__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "",
                    waiting,
                    backoff,
                )
                with self._cond:
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if backoff > 1.0:
                log.info("drift runs: MLflow takes windows again")
            backoff = 1.0
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _apply(self, item: _Window | _Close) -> None:
        if self._client is None:
            self._client = mlflow_client(self.registry)
        if self._experiment_id is None:
            self._experiment_id = ensure_experiment(self._client, self.registry, self.experiment)
        if isinstance(item, _Close):
            self._end_runs(None, item.day)
            return
        from mlflow.entities import Metric

        stats = item.stats
        assert stats.end_ms is not None
        run_id = self._run_id(item.version, stats.day)
        metrics = [
            Metric(key, float(value), stats.end_ms, item.step)
            for key, value in stats.metrics.items()
            if math.isfinite(value)
        ]
        self._client.log_batch(run_id, metrics=metrics)
        self.logged += 1

    def _drift_runs(self, version: str | None, day: str | None, running: bool) -> list[Any]:
        """The drift runs of this model (of ``version``, of ``day``, only running ones), oldest first."""
        conditions = [f"tags.`{KIND_TAG}` = 'drift'", f"tags.`bnpl.model_name` = '{self.registry.model_name}'"]
        if version is not None:
            conditions.append(f"tags.`{VERSION_TAG}` = '{version}'")
        if day is not None:
            conditions.append(f"tags.`{DAY_TAG}` = '{day}'")
        if running:
            conditions.append("attributes.status = 'RUNNING'")
        runs = self._client.search_runs(
            [self._experiment_id], filter_string=" and ".join(conditions), max_results=1_000
        )
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def _end_runs(self, version: str | None, before: str) -> None:
        """End (FINISHED) the running drift runs (of ``version``) of days before ``before``."""
        for run in self._drift_runs(version, None, running=True):
            if run.data.tags.get(DAY_TAG, "") < before:
                self._client.set_terminated(run.info.run_id, "FINISHED")
                log.info("drift runs: %s ended (its day closed)", run.info.run_name)

    def _run_id(self, version: str, day: str) -> str:
        """The run of (``version``, ``day``): known, found by its tags, or created. Two workers creating it at once
        both keep the older one (the newer is deleted), so the day has one run."""
        known = self._runs.get((version, day))
        if known is not None:
            return known
        if day > self._newest_day.get(version, ""):
            self._end_runs(version, day)  # at the latest when the next day's run starts
            self._newest_day[version] = day
        found = self._drift_runs(version, day, running=False)
        if found:
            run_id = str(found[0].info.run_id)
        else:
            from mlflow.entities import Param

            run = self._client.create_run(
                self._experiment_id,
                run_name=run_name(version, day),
                tags={
                    KIND_TAG: "drift",
                    "bnpl.model_name": self.registry.model_name,
                    VERSION_TAG: version,
                    DAY_TAG: day,
                    "bnpl.time": "transaction_timestamp (UTC day)",
                },
            )
            run_id = str(run.info.run_id)
            again = self._drift_runs(version, day, running=False)
            winner = str(again[0].info.run_id) if again else run_id
            if winner != run_id:  # another worker created the day's run first
                self._client.delete_run(run_id)
                run_id = winner
            else:
                self._client.log_batch(
                    run_id,
                    params=[
                        Param("model_name", self.registry.model_name),
                        Param("model_version", version),
                        Param("day", day),
                        Param("window_requests", str(self.config.window)),
                        Param("time", "transaction_timestamp"),
                    ],
                )
        self._runs[(version, day)] = run_id
        return run_id
