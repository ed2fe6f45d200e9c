"""``bnpl outcomes load|simulate`` and ``bnpl performance``: ground truth in, model performance out."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from common.settings import Settings
from schemas.outcomes import Outcome, parse_outcome

PROGRESS_EVERY = 10_000


def read_outcome_file(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, raw record) of a JSON-lines or CSV outcome file (CSV: by suffix, or a header line)."""
    with path.open("rb") as fh:
        head = fh.read(1)
    if path.suffix.lower() == ".csv" or (head and head not in b"{ \t\r\n"):
        with path.open(newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh), start=2):
                yield i, {k: v for k, v in row.items() if v not in ("", None)}
        return
    with path.open("rb") as fh:
        for i, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    yield i, orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield i, exc


def validate_file(path: Path, source: str | None) -> tuple[list[Outcome], list[str]]:
    """Every outcome of ``path`` validated as the API validates it; errors as ``line N: message``."""
    outcomes: list[Outcome] = []
    errors: list[str] = []
    for line, record in read_outcome_file(path):
        if isinstance(record, Exception):
            errors.append(f"line {line}: not valid JSON ({record})")
            continue
        if isinstance(record, dict) and source and "source" not in record:
            record["source"] = source
        try:
            outcomes.append(parse_outcome(record))
        except msgspec.ValidationError as exc:
            errors.append(f"line {line}: {exc}")
    return outcomes, errors


def load(settings: Settings, path: Path, source: str | None, skip_invalid: bool, chunk: int = 1_000) -> int:
    """Validate the whole file, then publish it to the outcome stream in chunks, with progress on stderr."""
    from common.redis_client import redis_for_sync
    from producers.outcomes import outcome_events, publish_outcomes_sync

    if not path.exists():
        raise SystemExit(f"no such file: {path}")
    outcomes, errors = validate_file(path, source or f"file:{path.name}")
    if errors:
        for message in errors[:20]:
            print(message, file=sys.stderr)
        if len(errors) > 20:
            print(f"… and {len(errors) - 20:,} more", file=sys.stderr)
        if not skip_invalid:
            print(
                f"{len(errors):,} invalid line(s): nothing was loaded (--skip-invalid loads the rest)", file=sys.stderr
            )
            return 2
    redis = redis_for_sync(settings.streams)
    sent = 0
    try:
        for start in range(0, len(outcomes), chunk):
            part = outcomes[start : start + chunk]
            publish_outcomes_sync(redis, settings.keys, outcome_events(part, "loader"))
            sent += len(part)
            if sent % PROGRESS_EVERY < chunk or sent == len(outcomes):
                print(f"  {sent:,}/{len(outcomes):,} outcomes published", file=sys.stderr, flush=True)
    finally:
        redis.close()
    print(f"published {sent:,} outcomes from {path} to {settings.keys.outcomes()}; skipped {len(errors):,} invalid")
    return 0


def decisions_by_transaction(settings: Settings, ids: list[str]) -> dict[str, str]:
    """transaction id → the latest business decision in the warehouse."""
    import pyarrow as pa

    from bnpl_cli.report import duckdb_warehouse

    warehouse = duckdb_warehouse(settings, "outcomes simulate", " (the decisions of the generated transactions)")
    if not warehouse.path.exists():
        raise SystemExit(f"{warehouse.path} does not exist: decide the traffic first (the warehouse group lands it)")
    wanted = pa.table({"transaction_id": pa.array(ids, pa.string())})  # noqa: F841 - read by DuckDB
    with warehouse.connect(read_only=True) as conn:
        rows = conn.execute(
            "SELECT transaction_id, arg_max(business_decision, assessment_timestamp) FROM prediction_logs "
            "JOIN wanted USING (transaction_id) GROUP BY transaction_id"
        ).fetchall()
    return {str(t): str(d) for t, d in rows}


def simulate(settings: Settings, rows: int, seed: int, out: Path, as_of: str | None) -> int:
    """Outcomes of the funded loans among ``bnpl generate --rows R --seed S``'s transactions, as decided."""
    from datagen import generate
    from datagen.outcomes import funded_outcomes, write_outcomes

    data = generate(rows, seed=seed)
    decisions = decisions_by_transaction(settings, data.columns["transaction_id"].tolist())
    when = datetime.fromisoformat(as_of).replace(tzinfo=UTC) if as_of else None
    n = write_outcomes(funded_outcomes(data, decisions, settings.performance.review_approval_rate, seed, when), out)
    print(f"wrote {n:,} outcomes of {len(decisions):,} decided transactions to {out} (funded loans only)")
    return 0


def _pct(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:6.2%}"


def performance_text(result: Any) -> str:
    """The terminal report of a performance analysis (``performance.job.JobResult``)."""
    r = result.report
    w = r.windows
    lines = [
        f"performance, {w.cadence} analysis of {w.analysis_date} — matured cohort: decisions of "
        f"{w.cohort_start:%Y-%m-%d} – {w.cohort_end:%Y-%m-%d}",
        f"  measured on {r.population}",
        *(f"  {line}" for line in result.reconciliation),
        f"  {r.decisions:,} decisions, {r.funded:,} funded ({r.reviews_funded:,} after review), {r.labelled:,} with "
        f"an outcome, {r.approved_without_outcome:,} approved without one yet",
    ]
    counts = result.outcome_counts
    if counts:
        lines.append(
            f"  outcomes table: {counts['outcomes']:,} loans, {counts['bad']:,} bad, "
            f"{counts['without_decision']:,} without a decision in the warehouse (kept; unknown or not landed yet)"
        )
    lines += [
        "",
        f"  {'version':<16s} {'loans':>7s} {'bad':>5s} {'AUC (95% CI)':>20s} {'vs champ':>9s} {'KS':>5s} "
        f"{'Brier':>6s} {'O/E':>5s} {'approved: realized':>19s} {'estimated':>10s} {'gap':>7s}",
    ]
    for v in r.versions:
        c = v.calibration
        vs = "" if v.vs_champion is None else f"{v.vs_champion.delta:+.3f}"
        oe = "—" if c is None or not math.isfinite(c.overall.ratio) else f"{c.overall.ratio:.2f}"
        lines.append(
            f"  v{v.version + ' (' + v.alias + ')':<15s} {v.loans:>7,} {v.bads:>5,} "
            f"{v.auc.value:>6.3f} ({v.auc.low:.3f}–{v.auc.high:.3f}) {vs:>9s} {v.ks:>5.3f} {v.brier:>6.4f} {oe:>5s} "
            f"{_pct(v.default_approved.value):>19s} {_pct(v.estimated_matured.default_rate):>10s} "
            f"{'—' if not math.isfinite(v.gap) else format(v.gap, '+.2%'):>7s}"
        )
    lines.append("")
    lines.append("  estimated before outcomes (fresh decisions of the last period, approved):")
    for v in r.versions:
        f = v.estimated_fresh
        if not f.loans:
            lines.append(f"    v{v.version}: no approvals of its own in the last period")
            continue
        lines.append(
            f"    v{v.version}: {f.loans:,} approved, expected default rate {_pct(f.default_rate).strip()} "
            f"({_pct(f.default_rate_low).strip()}–{_pct(f.default_rate_high).strip()}), expected AUC "
            f"{f.auc:.3f}"
        )
    for f in r.fairness:
        cells = ", ".join(
            f"{b.bracket} {b.approval.value:.1%} (AIR {b.impact_ratio:.2f})"
            for b in sorted(f.brackets, key=lambda b: b.bracket)
        )
        lines.append(f"  fairness, v{f.version}, approvals by age bracket (last period): {cells or '—'}")
    lines.append(f"  alerts: {len(result.alerts)}")
    for a in result.alerts:
        lines.append(f"    [{a.severity}] {a.kind}: {a.message}")
    if result.runs:
        kept = f" ({len(result.runs_kept)} existed, kept)" if result.runs_kept else ""
        lines.append(f"  MLflow: {len(result.runs)} run(s) `{w.cadence}_performance_{w.analysis_date}`{kept}")
    lines.append(f"  model_metrics: {result.metric_rows} rows; HTML: {result.html}")
    return "\n".join(lines)


def run_performance(settings: Settings, args: argparse.Namespace) -> int:
    from governance.guardian import guarded_analysis
    from performance.analysis import due_date

    cadence = args.cadence or settings.performance.cadence
    day = date.fromisoformat(args.as_of) if args.as_of else due_date(datetime.now(UTC), cadence)
    result = guarded_analysis(
        settings,
        day,
        cadence=cadence,
        force=args.force,
        log_mlflow=not args.no_mlflow,
        send_alerts=not args.no_alerts,
        html_dir=Path(args.html_dir) if args.html_dir else None,
    )
    print(performance_text(result))
    if result.verdict is not None:
        print(result.verdict.summary())
        for event in result.verdict.events:
            print(f"  audit {event.event_id}: {event.summary()}")
    return 0


def add_parsers(sub: Any) -> None:
    outcomes = sub.add_parser("outcomes", help="loan outcomes: load a file, or simulate them for decided traffic")
    actions = outcomes.add_subparsers(dest="action", required=True)
    load_p = actions.add_parser("load", help="validate a JSONL/CSV outcome file and publish it to the outcome stream")
    load_p.add_argument("file", help="JSON lines of outcome records (one per loan outcome)")
    load_p.add_argument("--source", help="source of outcomes that name none (default: file:<name>)")
    load_p.add_argument("--skip-invalid", action="store_true", help="load the valid lines when some are invalid")
    sim = actions.add_parser(
        "simulate", help="outcomes of the funded loans among `bnpl generate`'s transactions, as the warehouse decided"
    )
    sim.add_argument("--rows", type=int, default=10_000, help="as given to `bnpl generate`")
    sim.add_argument("--seed", type=int, default=0, help="as given to `bnpl generate`")
    sim.add_argument("--out", default="outcomes.jsonl", help=".jsonl or .csv")
    sim.add_argument("--as-of", help="leave out outcomes not known by this date (ISO)")

    perf = sub.add_parser("performance", help="model performance from matured outcomes (metrics, MLflow, alerts)")
    perf.add_argument("--as-of", help="analysis date (default: the latest due: Monday for weekly, today for daily)")
    perf.add_argument("--cadence", choices=["weekly", "daily"], help="env BNPL_PERFORMANCE_CADENCE (default weekly)")
    perf.add_argument("--force", action="store_true", help="replace the MLflow runs of this analysis date")
    perf.add_argument("--no-mlflow", action="store_true", help="do not log MLflow runs")
    perf.add_argument("--no-alerts", action="store_true", help="do not raise alerts")
    perf.add_argument("--html-dir", help="where to write the HTML report (default: a temp directory)")


def run_outcomes(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "load":
        return load(settings, Path(args.file), args.source, args.skip_invalid)
    return simulate(settings, args.rows, args.seed, Path(args.out), args.as_of)
