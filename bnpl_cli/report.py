"""Readable terminal reports for the CLI and the demo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.settings import Settings
from registry import RegisteredVersion
from training.train import TrainingReport


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, sep, *body])


def registry_table(versions: Sequence[RegisteredVersion]) -> str:
    """Registered versions with their aliases, family, holdout AUC, thresholds, calibration, the expected decision
    mix of their thresholds and protected inputs (``?``: trained before that was recorded); then each objective."""

    def pct(v: RegisteredVersion, tag: str) -> str:
        value = v.tags.get(tag)
        return "?" if value is None else f"{float(value):.2%}"

    rows = []
    for v in versions:
        rows.append(
            [
                v.version,
                ",".join(v.aliases) or "-",
                v.family,
                v.tags.get("holdout_auc", "?"),
                f"{v.threshold_review:.4f}",
                f"{v.threshold_deny:.4f}",
                v.tags.get("calibration", "?"),
                pct(v, "expected_approve_rate"),
                pct(v, "expected_approved_default_rate"),
                v.tags.get("protected_fields", "?") or "none",
            ]
        )
    headers = [
        "version",
        "alias",
        "family",
        "holdout AUC",
        "review ≥",
        "deny ≥",
        "calibration",
        "exp. approve",
        "exp. approved def.",
        "protected inputs",
    ]
    objectives = sorted({v.tags.get("policy_objective", "percentiles of validation scores") for v in versions})
    return "\n".join([_table(headers, rows), *(f"objective: {o}" for o in objectives)])


def calibration_table(policy: dict[str, Any]) -> str:
    """A version's recorded calibration: observed vs expected defaults per holdout score decile and per season."""
    record = policy.get("calibration")
    if not record:
        return "calibration: not recorded (trained before calibration records)"
    rows = [
        [
            b["label"],
            f"{b['loans']:,}",
            f"{b['expected']:.2%}",
            f"{b['observed']:.2%}",
            f"{b['ratio']:.2f}",
            f"{b['ratio_low']:.2f}–{b['ratio_high']:.2f}",
        ]
        for b in (*record["holdout"]["deciles"], *record["holdout"]["seasons"])
    ]
    return "\n".join(
        [
            f"calibration: {record['method']} (Hosmer–Lemeshow χ² on the holdout "
            f"{record['holdout']['hosmer_lemeshow']:.1f}, p {record['holdout']['hl_p_value']:.2g})",
            _table(["holdout decile / season", "loans", "predicted", "observed", "O/E", "95% if calibrated"], rows),
        ]
    )


def training_summary(report: TrainingReport) -> str:
    """What a training run did: data sizes, each model's holdout metrics and the champion's AUC margins."""
    rows = [
        [
            m.family,
            m.version,
            ",".join(m.aliases) or "-",
            f"{m.metrics['holdout_auc']:.4f}",
            f"{m.metrics['holdout_log_loss']:.4f}",
            f"{m.metrics['holdout_brier']:.4f}",
            f"{m.metrics['holdout_approve_rate']:.1%}/{m.metrics['holdout_review_rate']:.1%}/"
            f"{m.metrics['holdout_deny_rate']:.1%}",
            f"{m.metrics['holdout_approved_default_rate']:.2%}",
            _age_effect(m.metrics),
        ]
        for m in sorted(report.models, key=lambda m: -m.metrics["holdout_auc"])
    ]
    lines = [
        f"trained on {report.train_rows:,} of {report.rows:,} rows; holdout {report.holdout_rows:,} rows "
        f"from {report.holdout_start} ({report.seconds:.0f}s)",
        _table(
            [
                "family",
                "version",
                "alias",
                "AUC",
                "log loss",
                "Brier",
                "approve/review/deny",
                "approved def.",
                "age log-odds 18-24 / 55+",
            ],
            rows,
        ),
    ]
    for family, (diff, low, high) in report.auc_margins.items():
        lines.append(f"champion AUC − {family}: {diff:+.4f} (95% paired bootstrap {low:+.4f} … {high:+.4f})")
    for family, why in report.rejected.items():
        lines.append(f"not registered: {family}: {why}")
    return "\n".join(lines)


def _age_effect(metrics: dict[str, float]) -> str:
    """What a version does with age, all else equal (0 / 0 when the field is protected)."""
    young, old = metrics.get("age_log_odds_18_to_24"), metrics.get("age_log_odds_55_plus")
    return "?" if young is None or old is None else f"{young:+.3f} / {old:+.3f}"


def duckdb_warehouse(settings: Settings, command: str, hint: str = "") -> Any:
    """The DuckDB warehouse for a command that reads it directly; a clear exit when BigQuery is configured."""
    from warehouse.duckdb_store import DuckDBWarehouse

    warehouse = settings.warehouse
    if warehouse.warehouse != "duckdb" or warehouse.duckdb_path is None:
        raise SystemExit(f"{command} reads the DuckDB warehouse{hint}")
    return DuckDBWarehouse(warehouse.duckdb_path)
