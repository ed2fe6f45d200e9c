"""``bnpl drift-report [--version V] [--days N] [--html F]``: the drift of one model version, from what the system
already stores.

* **Traffic**: the requests the version decided, from the warehouse's ``prediction_logs`` (DuckDB), over the last
  ``--days`` days of request time before its newest request, cut into time windows (``drift.report``).
* **Reference**: the training profile stored with the version in the MLflow registry.
* **Alerts**: the drift alerts of the version on the alert stream (``<prefix>:{alerts}``, kept
  ``BNPL_ALERT_RETENTION_DAYS``), raised in the last ``--days`` days, from ``BNPL_REDIS_URL`` or else the data
  dir's embedded redis-server (the demo's); alerts are kept nowhere else, so without either the report says it
  could not read them.

The terminal gets compact tables (one line per field, a sparkline of its PSI per window); ``--html`` writes a page
that stands alone (figures as inline PNGs) with the same tables and figures of every series.
"""

from __future__ import annotations

import argparse
import html
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from common.settings import Settings
from features.spec import CATEGORICAL_FIELDS, NUMERIC_FIELDS, normalize_category

if TYPE_CHECKING:  # drift.report imports river and scipy: loaded when the command runs, not when the CLI parses
    from drift.report import DriftReport, Traffic
    from schemas.alerts import Alert

SPARKS: Final = "▁▂▃▄▅▆▇█"
#: Conventional PSI readings: below 0.1 stable, 0.1–0.25 a moderate shift, above 0.25 a major one.
PSI_MODERATE: Final = 0.1
PSI_MAJOR: Final = 0.25
NUMERIC_ROWS: Final = NUMERIC_FIELDS
CATEGORICAL_ROWS: Final = tuple(CATEGORICAL_FIELDS)
#: Kinds of alert the drift group raises (their keys start with ``drift:``).
DRIFT_KEY_PREFIX: Final = "drift:"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``bnpl drift-report`` and its options."""
    report = sub.add_parser(
        "drift-report",
        help="drift of a model version: PSI/KS per feature over time, scores vs reference, unknown categories, alerts",
    )
    report.add_argument(
        "--version", help="registered model version to report on (default: the version serving the champion alias)"
    )
    report.add_argument(
        "--days",
        type=float,
        default=7.0,
        help="days of traffic (request time, back from the version's newest request) and of alerts to show",
    )
    report.add_argument(
        "--window-hours",
        type=float,
        help="width of a window in hours (default: chosen from the traffic: 1, 3, 6, 12, 24 or 168)",
    )
    report.add_argument("--html", help="also write the report as a self-contained HTML page with figures to this file")


def run(
    settings: Settings,
    args: argparse.Namespace,
    redis: Callable[[Settings], AbstractContextManager[Settings]] | None = None,
) -> int:
    """Print the drift report (and write ``--html``); exit 0, or 1 when the version decided nothing in the window.
    ``redis`` gives settings with a Redis to read the alerts from when ``BNPL_REDIS_URL`` is not set (the CLI's: the
    data dir's embedded redis-server)."""
    from bnpl_cli.main import CliError
    from drift.report import build_report
    from registry.store import get_version, mlflow_client, read_profile, resolve_alias

    if args.days <= 0 or (args.window_hours is not None and args.window_hours <= 0):
        raise CliError("--days and --window-hours must be positive", code=2)
    registry = settings.registry
    client = mlflow_client(registry)
    if args.version:
        version = get_version(client, registry.model_name, str(args.version))
    else:
        version = resolve_alias(client, registry.model_name, registry.model_aliases[0])
    aliases = tuple(
        a for a, v in client.get_registered_model(registry.model_name).aliases.items() if str(v) == version.version
    )
    profile = read_profile(version)
    traffic = load_traffic(settings, version.version, args.days)
    alerts, problem = _alerts(settings, version.version, args.days, redis)
    width = round(args.window_hours * 3600) if args.window_hours else None
    report = build_report(
        registry.model_name,
        version.version,
        aliases,
        profile,
        traffic,
        alerts,
        args.days,
        width,
        settings.drift,
    )
    if problem:
        report.notes.append(problem)
    text = render_text(report)
    print(text)
    if args.html:
        Path(args.html).write_text(render_html(report, text))
        print(f"\nHTML report: {args.html}")
    return 0 if report.requests else 1


# --- sources -------------------------------------------------------------------------------------------------------
def load_traffic(settings: Settings, version: str, days: float) -> Traffic:
    """The requests ``version`` decided in the last ``days`` days of request time before its newest one."""
    import duckdb

    from bnpl_cli.main import CliError
    from bnpl_cli.report import duckdb_warehouse
    from drift.monitor import event_time

    warehouse = duckdb_warehouse(settings, "drift-report")
    if not Path(warehouse.path).exists():
        raise CliError(f"no warehouse at {warehouse.path}: run the warehouse group (or `make demo`) first")
    stamp = "epoch(TRY_CAST(transaction_timestamp AS TIMESTAMPTZ))"
    numeric = ", ".join(f'CAST("{name}" AS DOUBLE)' for name in NUMERIC_FIELDS)
    categorical = ", ".join(f'"{name}"' for name in CATEGORICAL_FIELDS)
    try:
        with warehouse.connect(read_only=True) as conn:
            newest_sql = f"SELECT max({stamp}) FROM prediction_logs WHERE model_version = ?"  # noqa: S608 - ours
            row = conn.execute(newest_sql, [version]).fetchone()
            newest = row[0] if row else None
            if newest is None:
                return _traffic(np.zeros(0), np.zeros((0, len(NUMERIC_FIELDS))), {}, [], np.zeros(0), [])
            # A day of margin: DuckDB reads a timestamp without offset in its session time zone, the cut below in UTC.
            cut = float(newest) - (days + 1) * 86_400
            columns = conn.execute(
                f"SELECT transaction_timestamp, COALESCE(default_probability, 'NaN'::DOUBLE), business_decision, "  # noqa: S608 - our own names
                f"COALESCE(unknown_fields, []), {numeric}, {categorical} FROM prediction_logs "
                f"WHERE model_version = ? AND {stamp} >= ?",
                [version, cut],
            ).fetchall()
    except duckdb.CatalogException as exc:
        raise CliError(f"the warehouse at {warehouse.path} has no prediction_logs yet ({exc})") from exc
    times = np.array([event_time(str(r[0])) or math.nan for r in columns], dtype=np.float64)
    order = np.argsort(times, kind="stable")
    rows = [columns[i] for i in order if math.isfinite(times[i])]
    times = times[order][np.isfinite(times[order])]
    keep = times >= (times[-1] - days * 86_400 if times.size else 0.0)
    rows = [r for r, k in zip(rows, keep, strict=True) if k]
    times = times[keep]
    k = len(NUMERIC_FIELDS)
    cache: dict[str, str] = {}

    def norm(value: Any) -> str:
        text = str(value)
        found = cache.get(text)
        if found is None:
            found = cache[text] = normalize_category(text)
        return found

    return _traffic(
        times,
        np.array([r[4 : 4 + k] for r in rows], dtype=np.float64).reshape(len(rows), k),
        {name: [norm(r[4 + k + j]) for r in rows] for j, name in enumerate(CATEGORICAL_FIELDS)},
        [list(r[3]) for r in rows],
        np.array([r[1] for r in rows], dtype=np.float64),
        [r[2] == "approve" for r in rows],
    )


def _traffic(
    times: np.ndarray[Any, Any],
    numeric: np.ndarray[Any, Any],
    categories: dict[str, list[str]],
    unknown: list[list[str]],
    scores: np.ndarray[Any, Any],
    approved: list[bool],
) -> Traffic:
    from drift.report import Traffic

    return Traffic(
        times=np.asarray(times, dtype=np.float64),
        numeric=np.asarray(numeric, dtype=np.float64),
        categories=categories or {name: [] for name in CATEGORICAL_FIELDS},
        unknown=unknown,
        scores=np.asarray(scores, dtype=np.float64),
        approved=np.asarray(approved, dtype=np.bool_),
    )


def _alerts(
    settings: Settings,
    version: str,
    days: float,
    redis: Callable[[Settings], AbstractContextManager[Settings]] | None,
) -> tuple[list[Alert], str | None]:
    """:func:`load_alerts`, from the Redis ``redis`` finds when none is configured."""
    from bnpl_cli.main import CliError

    if settings.streams.redis_url or redis is None:
        return load_alerts(settings, version, days)
    try:
        with redis(settings) as found:
            return load_alerts(found, version, days)
    except CliError as exc:  # no Redis configured, none embedded in the data dir
        return [], f"drift alerts not shown: {exc}"


def load_alerts(settings: Settings, version: str, days: float) -> tuple[list[Alert], str | None]:
    """The drift alerts of ``version`` raised in the last ``days`` days, from the alert stream; and why none could
    be read, if so (the report goes on without them)."""
    from redis import exceptions as redis_errors

    from alerting.channel import alert_of
    from common.redis_client import redis_for_sync

    stream = settings.keys.alerts()
    if not settings.streams.redis_url:
        return [], f"drift alerts not shown: they are kept on the alert stream {stream}, and BNPL_REDIS_URL is not set"
    since = int((datetime.now(UTC) - timedelta(days=days)).timestamp() * 1000)
    redis = redis_for_sync(settings.streams)
    try:
        entries = redis.xrange(stream, min=f"{since}-0", max="+")
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        return [], f"drift alerts not shown: the alert stream {stream} cannot be read ({exc})"
    finally:
        redis.close()
    alerts = []
    for _, fields in entries:
        alert = alert_of(fields)
        if alert is not None and alert.alert_key.startswith(DRIFT_KEY_PREFIX) and alert.model_version == version:
            alerts.append(alert)
    return alerts, None


# --- terminal ------------------------------------------------------------------------------------------------------
def _when(seconds: float | None, width_s: int = 60) -> str:
    if seconds is None:
        return "—"
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%d" if width_s >= 86_400 else "%Y-%m-%d %H:%M")


def _width_text(width_s: int) -> str:
    """A window width as text.

    >>> _width_text(3600), _width_text(86400), _width_text(604800)
    ('1 h', '1 day', '7 days')
    """
    if width_s % 86_400 == 0:
        days = width_s // 86_400
        return f"{days} day{'s' if days > 1 else ''}"
    return f"{width_s / 3600:g} h"


def sparkline(values: np.ndarray[Any, Any], top: float) -> str:
    """One character per window, scaled on ``[0, max(top, largest value)]``; ``·`` for a window without data.

    >>> sparkline(np.array([0.0, 0.05, np.nan, 0.1]), 0.1)
    '▁▅·█'
    """
    finite = values[np.isfinite(values)]
    scale = max(top, float(finite.max()) if finite.size else 0.0) or 1.0
    return "".join(
        "·" if not math.isfinite(v) else SPARKS[min(len(SPARKS) - 1, int(v / scale * (len(SPARKS) - 1) + 0.5))]
        for v in values
    )


def _fmt(value: float, percent: bool = False) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.1%}" if percent else f"{value:.3f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _peak(report: DriftReport, metric: str) -> tuple[float, str]:
    series = report.series(metric)
    if not np.isfinite(series).any():
        return math.nan, "—"
    i = int(np.nanargmax(series))
    return float(series[i]), _when(report.windows[i].start, report.window_s)


def _latest(report: DriftReport, metric: str) -> float:
    series = report.series(metric)
    finite = series[np.isfinite(series)]
    return float(finite[-1]) if finite.size else math.nan


NUMERIC_HEADERS: Final = (
    "field",
    "PSI all",
    "KS all",
    "PSI peak",
    "peak window",
    "PSI last",
    "KS last",
    "over line",
    "PSI per window",
)
CATEGORICAL_HEADERS: Final = (
    "field",
    "PSI all",
    "PSI peak",
    "PSI last",
    "over line",
    "unknown all",
    "unknown peak",
    "peak window",
    "unknown last",
    "unknown per window",
)
ALERT_HEADERS: Final = ("raised (UTC)", "kind", "feature", "value", "threshold", "window")


def _over(report: DriftReport, metric: str) -> str:
    over, filled = report.over_line(metric)
    return f"{over}/{filled}"


def numeric_rows(report: DriftReport) -> list[list[str]]:
    """One row per numeric field: PSI and KS over the whole report, the peak window, the latest, how many windows
    are over the drift group's alert line, the sparkline of its PSI."""
    rows = []
    for name in NUMERIC_ROWS:
        psi, ks = f"feature_psi/{name}", f"feature_ks/{name}"
        peak, when = _peak(report, psi)
        rows.append(
            [
                name,
                _fmt(report.overall.get(psi, math.nan)),
                _fmt(report.overall.get(ks, math.nan)),
                _fmt(peak),
                when,
                _fmt(_latest(report, psi)),
                _fmt(_latest(report, ks)),
                _over(report, psi),
                sparkline(report.series(psi), PSI_MODERATE),
            ]
        )
    return rows


def categorical_rows(report: DriftReport) -> list[list[str]]:
    """One row per categorical field: PSI of its mix and its unknown-category rate (whole report, peak, latest)."""
    rows = []
    for name in CATEGORICAL_ROWS:
        psi, unknown = f"category_psi/{name}", f"unknown_rate/{name}"
        peak, _ = _peak(report, psi)
        unknown_peak, when = _peak(report, unknown)
        rows.append(
            [
                name,
                _fmt(report.overall.get(psi, math.nan)),
                _fmt(peak),
                _fmt(_latest(report, psi)),
                _over(report, psi),
                _fmt(report.overall.get(unknown, math.nan), percent=True),
                _fmt(unknown_peak, percent=True),
                when if unknown_peak > 0 else "—",
                _fmt(_latest(report, unknown), percent=True),
                sparkline(report.series(unknown), report.thresholds.get("unknown_rate", 0.05)),
            ]
        )
    return rows


def alert_rows(report: DriftReport) -> list[list[str]]:
    """One row per drift alert: when it was raised, kind, feature, value, threshold, window."""
    return [
        [
            a.first_seen[:19].replace("T", " "),
            a.kind,
            a.feature or "(score)",
            f"{a.value:.4g}",
            f"{a.threshold:.4g}",
            a.window,
        ]
        for a in report.alerts
    ]


def render_text(report: DriftReport) -> str:
    """The terminal report."""
    from drift.report import MIN_REQUESTS

    alias = f" ({', '.join(report.aliases)})" if report.aliases else ""
    out = [f"drift report — {report.model_name} v{report.version}{alias}"]
    filled = sum(1 for w in report.windows if w.metrics)
    out.append(
        f"traffic: {report.requests:,} requests decided by v{report.version} from the warehouse, request time "
        f"{_when(report.first)} – {_when(report.last)} UTC (last {report.days:g} days); "
        f"{len(report.windows)} windows of {_width_text(report.window_s)} ({filled} with ≥ {MIN_REQUESTS} requests)"
    )
    out.append(f"reference: the training profile stored with v{report.version} in the MLflow registry")
    if not report.requests:
        out.append(f"\nv{report.version} decided no request in the warehouse in that time: nothing to compare.")
    else:
        out.append(
            f"\nnumeric fields — PSI and KS against the reference (PSI < {PSI_MODERATE:g} stable, > {PSI_MAJOR:g} "
            "a major shift); over line: windows where the drift group's alert threshold for that window size is "
            "exceeded; sparkline: PSI per window, oldest first"
        )
        out.append(_table(NUMERIC_HEADERS, numeric_rows(report)))
        out.append("\ncategorical fields — PSI of the mix, unknown-category rate; sparkline: unknown rate per window")
        out.append(_table(CATEGORICAL_HEADERS, categorical_rows(report)))
        score = report.score
        if score is not None:
            out.append(
                f"\nscore (v{report.version}'s default probability) — latest window ({score.requests:,} requests) "
                f"vs reference: PSI {score.psi:.3f}, KS {score.ks:.3f}"
            )
            out.append(
                _table(
                    ["", *score.quantiles],
                    [
                        ["reference", *(f"{r:.4f}" for r, _ in score.quantiles.values())],
                        ["now", *(f"{n:.4f}" for _, n in score.quantiles.values())],
                    ],
                )
            )
            out.append(f"score PSI per window: {sparkline(report.series('score_psi'), PSI_MODERATE)}")
    out.append(f"\ndrift alerts of v{report.version} raised in the last {report.days:g} days: {len(report.alerts)}")
    if report.alerts:
        out.append(_table(ALERT_HEADERS, alert_rows(report)))
    out += [f"note: {n}" for n in report.notes]
    return "\n".join(out)


# --- HTML ----------------------------------------------------------------------------------------------------------
def _figure(img: str, caption: str) -> str:
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _over_time(
    report: DriftReport, metrics: Sequence[tuple[str, str]], title: str, lines: Sequence[tuple[float, str]]
) -> str:
    from common.charts import png, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.4))
    x = [datetime.fromtimestamp(w.start, UTC) for w in report.windows]
    for metric, label in metrics:
        ax.plot(x, report.series(metric), marker="." if len(x) < 60 else None, label=label)
    for value, label in lines:
        ax.axhline(value, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(label, (0.995, value), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7)
    ax.set_title(title)
    ax.set_xlabel(f"window start (request time, UTC; {_width_text(report.window_s)} windows)")
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    fig.autofmt_xdate()
    return str(png(fig))


def _score_figure(report: DriftReport) -> str:
    from common.charts import png, pyplot

    score = report.score
    assert score is not None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.4))
    x = np.arange(len(score.reference))
    ax.bar(x - 0.2, score.reference, width=0.4, label="reference (training)", color="#999")
    ax.bar(x + 0.2, score.now, width=0.4, label=f"latest window ({score.requests:,} requests)", color="#c44")
    labels = [f"≤ {e:.3g}" for e in score.edges] + [f"> {score.edges[-1]:.3g}" if score.edges else "all"]
    ax.set_xticks(x, labels, fontsize=7, rotation=45, ha="right")
    ax.set_xlabel(f"v{report.version} score (default probability), the reference's quantile bins")
    ax.set_ylabel("share of requests")
    ax.set_title(f"score distribution: latest window vs reference (PSI {score.psi:.3f}, KS {score.ks:.3f})")
    ax.legend(fontsize=8)
    return str(png(fig))


def _heatmap(report: DriftReport) -> str:
    from common.charts import png, pyplot

    plt = pyplot()
    names = [f"feature_psi/{n}" for n in NUMERIC_ROWS] + [f"category_psi/{n}" for n in CATEGORICAL_ROWS]
    grid = np.vstack([report.series(n) for n in names])
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(names) + 1.2))
    colours = plt.get_cmap("Reds").with_extremes(bad="#ddd")
    image = ax.imshow(
        np.ma.masked_invalid(grid),
        aspect="auto",
        cmap=colours,
        vmin=0,
        vmax=2 * PSI_MAJOR,  # a major shift is dark; larger ones saturate
    )
    ax.set_yticks(range(len(names)), [n.split("/", 1)[1] for n in names], fontsize=7)
    ticks = np.linspace(0, len(report.windows) - 1, min(8, len(report.windows))).round().astype(int)
    ax.set_xticks(ticks, [_when(report.windows[i].start, report.window_s) for i in ticks], fontsize=7, rotation=20)
    fig.colorbar(image, ax=ax, label="PSI", extend="max")
    ax.set_title("PSI per field and window (grey: too few requests)")
    return str(png(fig))


def figures(report: DriftReport) -> list[str]:
    """The report's figures, each a ``<figure>`` with an inline image and a caption (none without traffic)."""
    if not report.windows:
        return []
    moderate = (PSI_MODERATE, f"PSI {PSI_MODERATE:g}: moderate shift")
    major = (PSI_MAJOR, f"PSI {PSI_MAJOR:g}: major shift")
    unknown_line = report.thresholds.get("unknown_rate", 0.05)
    out = [
        _figure(
            _over_time(
                report,
                [(f"feature_psi/{n}", n) for n in NUMERIC_ROWS],
                "numeric fields: PSI against the training reference",
                [moderate, major],
            ),
            f"Figure 1. PSI of each numeric request field per {_width_text(report.window_s)} window of request time, "
            f"against the reference bins of v{report.version}'s training profile.",
        ),
        _figure(
            _over_time(
                report,
                [(f"feature_ks/{n}", n) for n in NUMERIC_ROWS],
                "numeric fields: Kolmogorov–Smirnov distance to the training reference",
                [],
            ),
            "Figure 2. KS distance of each numeric field per window, evaluated at the reference quantiles (p01 … p99).",
        ),
        _figure(
            _over_time(
                report,
                [(f"category_psi/{n}", n) for n in CATEGORICAL_ROWS],
                "categorical fields: PSI of the category mix",
                [moderate, major],
            ),
            "Figure 3. PSI of each categorical field's mix per window (values the models never saw pooled in one "
            "bucket).",
        ),
        _figure(
            _over_time(
                report,
                [(f"unknown_rate/{n}", n) for n in CATEGORICAL_ROWS],
                "unknown-category rate per categorical field",
                [(unknown_line, f"alert line {unknown_line:.0%}")],
            ),
            "Figure 4. Share of requests per window whose field held a value the models never saw; the drift group "
            f"alerts above {unknown_line:.0%} (BNPL_DRIFT_UNKNOWN_RATE).",
        ),
    ]
    if report.score is not None:
        out.append(
            _figure(
                _score_figure(report),
                f"Figure 5. Score distribution of v{report.version}'s decisions in the latest window "
                f"({report.score.requests:,} requests) against the training reference: the share of requests in each "
                "of the reference's score bins (equal shares in the reference, by construction).",
            )
        )
    out.append(
        _figure(
            _heatmap(report),
            f"Figure {len(out) + 1}. PSI of every watched field per window at a glance (darker: larger shift; "
            f"{2 * PSI_MAJOR:g} and above at full colour).",
        )
    )
    return out


STYLE: Final = "figure{margin:1.5em 0}figcaption{font-size:.9em;color:#555}pre{font-size:.8em}"


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: DriftReport, text: str) -> str:
    """The report as one HTML page: summary, tables, figures (inline PNGs), alerts, and the terminal text."""
    from common.charts import BASE_STYLE

    esc = html.escape
    title = f"Drift report — {report.model_name} v{report.version}"
    alias = f" ({', '.join(report.aliases)})" if report.aliases else ""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{BASE_STYLE}{STYLE}</style></head><body><h1>{esc(title)}{esc(alias)}</h1>",
        f"<p>{report.requests:,} requests decided by v{esc(report.version)}, request time {_when(report.first)} – "
        f"{_when(report.last)} UTC (last {report.days:g} days), in {len(report.windows)} windows of "
        f"{_width_text(report.window_s)}, against the training profile stored with the version in MLflow.</p>",
    ]
    if report.requests:
        parts.append("<h2>Numeric fields</h2>")
        parts.append(_html_table(NUMERIC_HEADERS, numeric_rows(report)))
        parts.append("<h2>Categorical fields</h2>")
        parts.append(_html_table(CATEGORICAL_HEADERS, categorical_rows(report)))
        parts.append("<h2>Figures</h2>")
        parts += figures(report)
    parts.append(f"<h2>Drift alerts ({len(report.alerts)})</h2>")
    if report.alerts:
        parts.append(_html_table(ALERT_HEADERS, alert_rows(report)))
    parts += [f"<p><i>{esc(n)}</i></p>" for n in report.notes]
    parts.append(f"<h2>Terminal report</h2><pre>{esc(text)}</pre></body></html>")
    return "".join(parts)
