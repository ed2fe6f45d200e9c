"""The promotion gate: may ``candidate`` take an alias from its current holder?

Every check reads evidence registered with the versions at training (tags and the decision policy file), so a
person (``bnpl promote``) and the guardian judge a move on the same figures:

* **feature spec** — the candidate reads the features this service computes;
* **holdout AUC** — at most ``BNPL_GATE_AUC_TOLERANCE`` below the holder's;
* **calibration** — observed/expected defaults on the holdout, overall and per season, inside the range a calibrated
  model shows at that sample size, or within 1 ± ``BNPL_GATE_CALIBRATION_ERROR``;
* **protected fields** — every field the holder was barred from, the candidate is too;
* **adverse impact** — the lowest age bracket's holdout approval rate over the highest is at least
  ``BNPL_GATE_MIN_IMPACT_RATIO`` (the four-fifths rule).

A figure a version does not carry (trained before it was recorded) fails its check: the gate never passes what it
cannot see; ``--force --reason`` exists for a person who has checked it elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from common.settings import GovernanceSettings
from features.spec import FEATURE_SPEC_VERSION
from registry.store import POLICY_FILE, RegisteredVersion, read_extra_file


def _number(tags: dict[str, str], key: str) -> float | None:
    value = tags.get(key)
    return float(value) if value not in (None, "") else None


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the registry says about one version."""

    version: str
    family: str
    holdout_auc: float | None
    #: Holdout calibration checks: (label, observed/expected, low, high of the calibrated range).
    calibration: tuple[tuple[str, float, float, float], ...]
    impact_ratio: float | None
    protected_fields: tuple[str, ...]
    feature_spec_version: str
    thresholds: tuple[float, float]
    expected_approve_rate: float | None
    expected_approved_default_rate: float | None
    training_run_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "family": self.family,
            "holdout_auc": self.holdout_auc,
            "calibration": {label: round(ratio, 4) for label, ratio, _, _ in self.calibration},
            "adverse_impact_ratio": self.impact_ratio,
            "protected_fields": list(self.protected_fields),
            "thresholds": {"review": self.thresholds[0], "deny": self.thresholds[1]},
            "expected_approve_rate": self.expected_approve_rate,
            "expected_approved_default_rate": self.expected_approved_default_rate,
            "training_run_id": self.training_run_id,
        }


def evidence_of(version: RegisteredVersion, policy: dict[str, Any] | None = None) -> Evidence:
    """Evidence of ``version`` from its tags and decision policy file (``policy`` when already read)."""
    tags = version.tags
    if policy is None:
        try:
            policy = read_extra_file(version, POLICY_FILE)
        except Exception:  # no policy file: the calibration check fails, visibly
            policy = {}
    record = (policy.get("calibration") or {}).get("holdout") or {}
    calibration = tuple(
        (b["label"], float(b["ratio"]), float(b["ratio_low"]), float(b["ratio_high"]))
        for b in ([record["overall"], *record.get("seasons", [])] if record else [])
    )
    protected = tuple(p for p in tags.get("protected_fields", "").split(",") if p)
    return Evidence(
        version=version.version,
        family=version.family,
        holdout_auc=_number(tags, "holdout_auc"),
        calibration=calibration,
        impact_ratio=_number(tags, "holdout_adverse_impact_ratio"),
        protected_fields=protected,
        feature_spec_version=tags.get("feature_spec_version", "?"),
        thresholds=(version.threshold_review, version.threshold_deny),
        expected_approve_rate=_number(tags, "expected_approve_rate"),
        expected_approved_default_rate=_number(tags, "expected_approved_default_rate"),
        training_run_id=tags.get("training_run_id"),
    )


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class GateResult:
    candidate: Evidence
    holder: Evidence | None
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checks": [{"check": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks],
            "candidate": self.candidate.as_dict(),
            "holder": self.holder.as_dict() if self.holder else None,
        }

    def text(self) -> str:
        return "\n".join(f"  [{'pass' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks)


def gate(candidate: Evidence, holder: Evidence | None, settings: GovernanceSettings) -> GateResult:
    """Every check of the promotion gate (see the module docstring)."""
    checks = [
        Check(
            "feature spec",
            candidate.feature_spec_version == str(FEATURE_SPEC_VERSION),
            f"version {candidate.feature_spec_version}, served {FEATURE_SPEC_VERSION}",
        )
    ]
    auc, held = candidate.holdout_auc, holder.holdout_auc if holder else None
    if auc is None:
        checks.append(Check("holdout AUC", False, "not recorded"))
    elif held is None:
        checks.append(Check("holdout AUC", True, f"{auc:.4f} (no holder to compare with)"))
    else:
        floor = held - settings.gate_auc_tolerance
        checks.append(
            Check(
                "holdout AUC",
                auc >= floor,
                f"{auc:.4f} vs holder {held:.4f} (at least {floor:.4f}: tolerance {settings.gate_auc_tolerance})",
            )
        )
    if not candidate.calibration:
        checks.append(Check("calibration", False, "no holdout calibration record"))
    else:
        tol = settings.gate_calibration_error
        bad = [
            f"{label} {ratio:.3f} (calibrated range {low:.3f}–{high:.3f})"
            for label, ratio, low, high in candidate.calibration
            if not low <= ratio <= high and abs(ratio - 1) > tol
        ]
        shown = ", ".join(f"{label} {ratio:.3f}" for label, ratio, _, _ in candidate.calibration)
        checks.append(
            Check(
                "calibration",
                not bad,
                f"observed/expected {shown}" + (f"; outside 1 ± {tol} and its range: {'; '.join(bad)}" if bad else ""),
            )
        )
    barred = set(holder.protected_fields) if holder else set()
    dropped = sorted(barred - set(candidate.protected_fields))
    checks.append(
        Check(
            "protected fields",
            not dropped,
            f"candidate bars {', '.join(candidate.protected_fields) or 'none'}"
            + (f"; the holder also bars {', '.join(dropped)}" if dropped else ""),
        )
    )
    ratio = candidate.impact_ratio
    floor_ratio = settings.gate_min_impact_ratio
    checks.append(
        Check(
            "adverse impact",
            ratio is not None and math.isfinite(ratio) and ratio >= floor_ratio,
            "not recorded" if ratio is None else f"lowest/highest age-bracket approval {ratio:.3f} (≥ {floor_ratio})",
        )
    )
    return GateResult(candidate, holder, tuple(checks))
