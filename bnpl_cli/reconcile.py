"""``bnpl reconcile``: does each sink hold exactly what the API published?

The reference is the **published ledger**: the publish script adds, for every block it writes (never for a block it
skips as already written), the block's events per (UTC day of the decision, API instance, experiment, arm) to a
hash per shard and day (``common.keys.Keys.ledger``). Per day it is compared with

* the **warehouse** (DuckDB ``prediction_logs``), per API instance: ``count(*)`` and ``count(DISTINCT
  prediction_id)`` of the day's rows — a missing row and a duplicated row are both differences;
* **MLflow**, per (experiment, arm): the sum of the ``requests`` metric of the arm runs (``bnpl.kind =
  arm-metrics``) over the windows ending in that day (a point's timestamp is its window's end, in ms; the window
  belongs to the day of that end minus one ms).

A difference while the sink's consumer group still has entries waiting (lag or pending, as ``bnpl status`` reads
them) — or, for MLflow, when the shortfall is exactly what the group counted into windows it has not logged yet —
is reported **in flight**, not as a mismatch; events the MLflow group counted as late (after their window was
logged) never reach MLflow, so they remain a mismatch.
A day no shard has a ledger for (before the ledger existed, or past ``BNPL_LEDGER_RETENTION_DAYS``) is reported
**no ledger** and not judged. Exit codes: 0 every sink matches (in-flight and no-ledger rows allowed), 1 a mismatch,
2 a usage error. With ``BNPL_WAREHOUSE=bigquery`` the warehouse side is one query on ``prediction_logs`` limited to
the days asked for (a partition filter).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta

from common.settings import Settings
from performance.reconcile import MISMATCH, OK, WAREHOUSE, Reconciliation, reconcile, warnings

__all__ = ["Reconciliation", "add_parser", "reconcile", "render", "run", "warnings"]


# --- CLI -----------------------------------------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rec = sub.add_parser(
        "reconcile",
        help="compare what the API published (ledger) with the warehouse and MLflow; exit 1 on a mismatch",
    )
    rec.add_argument("--date", help="last UTC day to check, YYYY-MM-DD (None: today, UTC)")
    rec.add_argument("--days", type=int, default=1, help="how many days ending at --date to check")
    rec.add_argument("--json", action="store_true", help="every compared row as JSON instead of the table")


def run(
    settings: Settings,
    args: argparse.Namespace,
    redis: Callable[[Settings], AbstractContextManager[Settings]],
) -> int:
    """Reconcile the days asked for; ``redis`` gives settings with a Redis (the CLI's: the data dir's embedded
    redis-server when ``BNPL_REDIS_URL`` is unset)."""
    from bnpl_cli.main import CliError

    if args.days <= 0:
        raise CliError("--days must be positive", code=2)
    try:
        last = date.fromisoformat(args.date) if args.date else datetime.now(UTC).date()
    except ValueError as exc:
        raise CliError(f"--date: {exc}", code=2) from exc
    days = [last - timedelta(days=k) for k in range(args.days - 1, -1, -1)]
    with redis(settings) as found:
        result = reconcile(found, days)
    print(result.to_json().decode() if args.json else render(result))
    return 0 if result.ok else 1


# --- output --------------------------------------------------------------------------------------------------------
def render(result: Reconciliation) -> str:
    """The differences as a table, then what was checked and the verdict."""
    span = result.days[0] if len(result.days) == 1 else f"{result.days[0]} – {result.days[-1]}"
    lines = [f"reconcile {span}: published ledger vs {' and '.join(result.sinks)}"]
    shown = [r for r in result.rows if r.status != OK]
    if shown:
        lines.append(
            f"  {'day':<10s}  {'sink':<9s}  {'instance / experiment/arm':<28s} {'published':>10s} {'landed':>10s} "
            f"{'diff':>8s} {'dupes':>6s} {'unlogged':>8s}  status"
        )
        for r in shown:
            dupes = "" if r.distinct is None else f"{r.duplicates:,}"
            unlogged = f"{r.open:,}" if r.sink != WAREHOUSE else ""
            lines.append(
                f"  {r.day:<10s}  {r.sink:<9s}  {r.key:<28s} {r.published:>10,} {r.landed:>10,} {r.diff:>+8,} "
                f"{dupes:>6s} {unlogged:>8s}  {r.status}"
            )
    for sink, why in result.in_flight.items():
        lines.append(f"  in flight ({sink}): {why}")
    lines += [f"  note: {n}" for n in result.notes]
    for sink in result.sinks:
        rows = [r for r in result.rows if r.sink == sink]
        published = sum(r.published for r in rows)
        landed = sum(r.landed for r in rows)
        bad = sum(1 for r in rows if r.status == MISMATCH)
        what = "instance" if sink == WAREHOUSE else "arm"
        lines.append(
            f"  {sink}: {len(rows)} (day, {what}) compared, {published:,} published, {landed:,} landed, "
            f"{bad} mismatch(es)"
        )
    lines.append(
        "OK: every sink holds what was published" if result.ok else f"MISMATCH: {len(result.mismatches)} difference(s)"
    )
    return "\n".join(lines)
