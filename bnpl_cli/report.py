"""Readable terminal reports for the CLI and the demo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.settings import Settings
from governance.aliases import AliasChange
from governance.audit import ModelEvent
from governance.gate import Evidence
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
    for p in report.proposals:
        held = (
            f"v{p.holder} (AUC {p.holder_auc:.4f})" if p.holder and p.holder_auc is not None else p.holder or "nobody"
        )
        gate = "gate passes" if not p.failed_checks else f"gate fails: {', '.join(p.failed_checks)}"
        if p.moved:
            done = "moved (audited)"
        elif p.refusal:
            done = f"not moved: {p.refusal}"
        elif p.holder == p.candidate:
            done = "already there"
        else:
            done = f"not moved (bnpl promote --alias {p.alias} --version {p.candidate})"
        lines.append(f"@{p.alias}: held by {held}; best new v{p.candidate} (AUC {p.candidate_auc:.4f}); {gate}; {done}")
    return "\n".join(lines)


def alias_change_text(model_name: str, change: AliasChange) -> str:
    """Old → new with both versions' evidence and the gate's checks."""
    old, new = change.gate.holder, change.gate.candidate

    def cells(e: Evidence | None) -> list[str]:
        if e is None:
            return ["-"] * 7
        return [
            f"v{e.version} {e.family}",
            "?" if e.holdout_auc is None else f"{e.holdout_auc:.4f}",
            " ".join(f"{label} {ratio:.3f}" for label, ratio, _, _ in e.calibration) or "?",
            "?" if e.impact_ratio is None else f"{e.impact_ratio:.3f}",
            ",".join(e.protected_fields) or "none",
            f"{e.thresholds[0]:.4f} / {e.thresholds[1]:.4f}",
            "?" if e.expected_approve_rate is None else f"{e.expected_approve_rate:.1%}",
        ]

    names = ["version", "holdout AUC", "calibration O/E", "adverse impact", "protected", "review / deny", "approve"]
    rows = [[n, a, b] for n, a, b in zip(names, cells(old), cells(new), strict=True)]
    verb = "moved" if change.event else ("unchanged (already there)" if old and old.version == new.version else "")
    lines = [
        f"{model_name}@{change.alias}: {('v' + old.version) if old else 'nobody'} → v{new.version} {verb}".rstrip(),
        _table(["", "now", "candidate"], rows),
        "promotion gate:",
        change.gate.text(),
    ]
    if change.experiments:
        lines.append(f"active experiment(s) deciding with @{change.alias}: {', '.join(change.experiments)}")
    if change.event:
        lines.append(f"audit record {change.event.event_id}: {change.event.summary()}")
    return "\n".join(lines)


def history_table(events: Sequence[ModelEvent]) -> str:
    """The audit trail, oldest first."""
    if not events:
        return "no alias change or fallback switch recorded"
    rows = [
        [
            e.at[:19].replace("T", " "),
            e.action + (" (forced)" if e.forced else ""),
            e.alias or "-",
            e.from_version or "-",
            e.to_version or "-",
            e.actor,
            (e.reason or "")[:80],
        ]
        for e in events
    ]
    return _table(["when (UTC)", "action", "alias", "from", "to", "who", "reason"], rows)


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
