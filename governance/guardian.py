"""The guardian: after every performance analysis, is the champion still fit to decide — and if not, is another
model provably better? It runs inside the performance job (``bnpl performance``, the outcomes group's schedule).

**Guardrails of the deciding champion** (a breach is any of):

* the analysis's own critical alerts about it: AUC drop among its approved loans, calibration failing overall,
  default rate among approved above the limit, adverse impact on an age bracket (see :mod:`performance.job`);
* estimated before outcomes: the default rate its fresh approvals will show, lower bound above
  ``BNPL_PERFORMANCE_DEFAULT_LIMIT``;
* on probation (the ``BNPL_GUARDIAN_PROBATION_PERIODS`` analyses after the guardian made it champion, when its own
  decisions have not matured yet): its scores fail calibration overall on the matured cohort, or the champion it
  replaced ranks that cohort significantly better (paired test below).

Drift alerts of the champion (through the analysis's retraining recommendations) are attached as evidence; drift
alone never moves an alias (inputs moving is not the
model failing — the performance checks decide).

**A candidate** is another configured alias's version that scored the same matured loans and

* ranks them significantly better than the champion: paired DeLong test with customers as clusters, one-sided,
  ``BNPL_GUARDIAN_ALPHA``;
* passes calibration overall on them;
* passes the promotion gate (:mod:`governance.gate`) against the champion — all checks but the holdout-AUC one, which
  the realized paired comparison on the same loans replaces.

**Actions** (``BNPL_GUARDIAN_MODE``): ``auto`` switches (the candidate becomes champion, the old champion takes the
candidate's alias: a swap, so a rollback is the same swap back), rolls a breaching champion on probation back (or,
when the old one breaches too, engages the emergency fallback), and engages the fallback when the champion breaches
and no model passes its guardrails. At most one switch per ``BNPL_GUARDIAN_COOLDOWN_DAYS`` (a rollback is always
allowed). ``recommend`` raises the same verdict as an alert with its evidence and changes nothing. Every action
writes its audit records (actor ``guardian``) and raises an alert.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final

from scipy import stats

from common.settings import Settings
from governance.audit import GUARDIAN, ModelEvent
from governance.gate import GateResult
from performance.analysis import PerformanceReport, VersionReport
from schemas.alerts import Alert

log = logging.getLogger(__name__)

MODES: Final = ("auto", "recommend", "off")
#: Critical performance alerts that are a breach of the version they name.
BREACH_ALERTS: Final = (
    "performance_auc_drop",
    "performance_calibration",
    "performance_default_rate",
    "fairness_adverse_impact",
)
#: Gate checks the guardian applies (the holdout AUC is replaced by the realized paired test).
GUARDIAN_GATE_SKIPS: Final = ("holdout AUC",)


@dataclass(frozen=True, slots=True)
class Breach:
    version: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Comparison:
    """AUC of ``version`` minus the champion's on the same matured loans (customer-clustered DeLong)."""

    version: str
    alias: str
    delta: float
    se: float
    z: float
    loans: int

    @property
    def p_one_sided(self) -> float:
        return float(stats.norm.sf(self.z))  # 0 for z = +inf, 1 for z = -inf

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "alias": self.alias,
            "auc_difference": self.delta,
            "se": self.se,
            "z": self.z,
            "p_one_sided": self.p_one_sided,
            "loans": self.loans,
        }


@dataclass(frozen=True, slots=True)
class GuardianState:
    """What the audit trail says about the guardian's last switch."""

    #: The last alias change the guardian made to the champion (auto_switch or rollback), and its analysis date.
    last_switch: ModelEvent | None = None
    last_switch_date: date | None = None
    #: The last switch was itself rolled back (no second rollback of the same switch).
    rolled_back: bool = False

    @classmethod
    def from_history(cls, events: list[ModelEvent], champion_alias: str) -> GuardianState:
        """From the last change of the champion alias: a person's change supersedes the guardian's bookkeeping (no
        probation, no cooldown after it)."""
        changes = [e for e in events if e.alias == champion_alias and e.action != "unalias"]
        if not changes or changes[-1].actor != GUARDIAN:
            return cls()
        last = changes[-1]
        when = last.evidence.get("analysis_date")
        return cls(last, date.fromisoformat(when) if when else None, last.action == "rollback")

    def on_probation(self, champion: str | None, today: date, period: timedelta, periods: int) -> bool:
        """The champion was switched in by the guardian less than ``periods`` analyses ago."""
        if self.last_switch is None or self.rolled_back or self.last_switch_date is None:
            return False
        return self.last_switch.to_version == champion and today - self.last_switch_date <= periods * period

    def cooling_down(self, today: date, days: int) -> bool:
        return self.last_switch_date is not None and (today - self.last_switch_date).days < days


@dataclass(slots=True)
class Verdict:
    """What the guardian concluded from one analysis, and what it did."""

    analysis_date: date
    mode: str
    champion: str | None
    #: none | switch | rollback | fallback | hold (a switch was warranted but is blocked: cooldown).
    action: str = "none"
    target: str | None = None
    probation: bool = False
    breaches: list[Breach] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    gates: dict[str, dict[str, Any]] = field(default_factory=dict)
    reason: str = ""
    #: Drift evidence: the analysis's retraining recommendations naming the champion (drift never triggers alone).
    drift: list[str] = field(default_factory=list)
    #: Audit records written (auto mode).
    events: list[ModelEvent] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)

    @property
    def acted(self) -> bool:
        return bool(self.events)

    def evidence(self) -> dict[str, Any]:
        return {
            "analysis_date": self.analysis_date.isoformat(),
            "mode": self.mode,
            "champion": self.champion,
            "probation": self.probation,
            "breaches": [{"version": b.version, "kind": b.kind, "message": b.message} for b in self.breaches],
            "comparisons": [c.as_dict() for c in self.comparisons],
            "gates": self.gates,
            "drift": self.drift,
            "reason": self.reason,
        }

    def summary(self) -> str:
        what = {
            "none": "no action" if self.reason else "champion within its guardrails",
            "switch": f"switch champion v{self.champion} → v{self.target}",
            "rollback": f"roll back champion v{self.champion} → v{self.target}",
            "fallback": "engage the emergency fallback (no model passes its guardrails)",
            "hold": "champion breaches; no switch now",
        }[self.action]
        return f"guardian ({self.mode}) {self.analysis_date}: {what}" + (f" — {self.reason}" if self.reason else "")


def _names(alert: Alert) -> set[str]:
    return set((alert.model_version or "").split(","))


def breaches_of(report: PerformanceReport, alerts: list[Alert], version: str, settings: Settings) -> list[Breach]:
    """The guardrail breaches of a deciding ``version`` in this analysis (see the module docstring)."""
    out = [
        Breach(version, a.kind, a.message)
        for a in alerts
        if a.kind in BREACH_ALERTS and a.severity == "critical" and version in _names(a)
    ]
    v = _report_of(report, version)
    limit = settings.performance.default_limit
    if v is not None and v.estimated_fresh.loans >= settings.performance.min_loans:
        e = v.estimated_fresh
        if math.isfinite(e.default_rate_low) and e.default_rate_low > limit:
            out.append(
                Breach(
                    version,
                    "estimated_default_rate",
                    f"v{version}: its fresh approvals are estimated to default at {e.default_rate:.2%} (lower bound "
                    f"{e.default_rate_low:.2%}) above the limit {limit:.2%}, {e.loans:,} loans, before outcomes",
                )
            )
    return out


def shadow_breaches(report: PerformanceReport, version: str, settings: Settings) -> list[Breach]:
    """Breaches visible on the scores of a version that did not decide the matured cohort: calibration overall."""
    v = _report_of(report, version)
    if v is None or v.loans < settings.performance.min_loans or v.calibration_alert is None:
        return []
    overall = v.calibration_alert.overall
    if not overall.outside:
        return []
    return [
        Breach(
            version,
            "calibration_scores",
            f"v{version}'s scores on the matured cohort: observed/expected {overall.ratio:.2f} outside "
            f"{overall.ratio_low:.2f}–{overall.ratio_high:.2f} ({v.loans:,} loans)",
        )
    ]


def _report_of(report: PerformanceReport, version: str) -> VersionReport | None:
    return next((v for v in report.versions if v.version == version), None)


def comparisons(report: PerformanceReport, aliases: dict[str, str]) -> list[Comparison]:
    """Every other aliased version against the champion on the same matured loans."""
    by_version = {version: alias for alias, version in aliases.items()}
    return [
        Comparison(v.version, by_version[v.version], v.vs_champion.delta, v.vs_champion.se, v.vs_champion.z, v.loans)
        for v in report.versions
        if v.version != report.champion and v.version in by_version and v.vs_champion is not None
    ]


def assess(
    report: PerformanceReport,
    alerts: list[Alert],
    settings: Settings,
    aliases: dict[str, str],
    state: GuardianState,
    gate_of: Callable[[str, str], GateResult | None],
    fallback_engaged: bool = False,
) -> Verdict:
    """The guardian's verdict on one analysis (pure: no registry or Redis writes). ``aliases``: configured alias →
    version now; ``gate_of(candidate, holder)``: the promotion gate of two versions."""
    gov = settings.governance
    champion_alias = settings.registry.model_aliases[0]
    champion = aliases.get(champion_alias)
    today = report.windows.analysis_date
    verdict = Verdict(today, gov.guardian_mode, champion)
    if champion is None or report.champion != champion or fallback_engaged:
        verdict.reason = (
            "the emergency fallback decides; release it with `bnpl fallback off`"
            if fallback_engaged
            else "the analysed decisions were not made by the current champion"
        )
        return verdict
    z_crit = float(stats.norm.isf(gov.guardian_alpha))
    verdict.probation = state.on_probation(champion, today, report.windows.period, gov.guardian_probation_periods)
    verdict.comparisons = comparisons(report, aliases)
    verdict.breaches = breaches_of(report, alerts, champion, settings)
    verdict.drift = [a.message for a in alerts if a.kind == "retraining_recommended" and champion in _names(a)]
    previous = state.last_switch.from_version if verdict.probation and state.last_switch else None
    if verdict.probation:
        verdict.breaches += shadow_breaches(report, champion, settings)
        for c in verdict.comparisons:
            if c.version == previous and c.z > z_crit:
                verdict.breaches.append(
                    Breach(
                        champion,
                        "worse_than_previous",
                        f"v{previous}, the champion it replaced, ranks the matured loans better by "
                        f"{c.delta:+.4f} AUC (z {c.z:.1f}, one-sided p {c.p_one_sided:.2g})",
                    )
                )
    if not verdict.breaches:
        return verdict

    def healthy(version: str) -> bool:
        return not breaches_of(report, alerts, version, settings) and not shadow_breaches(report, version, settings)

    if previous and previous in aliases.values() and healthy(previous):
        verdict.action, verdict.target = "rollback", previous
        verdict.reason = f"v{champion} breached on probation; v{previous} passes its guardrails"
        return verdict
    better, gated = [], []
    for c in verdict.comparisons:
        if c.z <= z_crit or not healthy(c.version):
            continue
        gate = gate_of(c.version, champion)
        if gate is not None:
            verdict.gates[c.version] = gate.as_dict()
            failed = [ch.name for ch in gate.checks if not ch.passed and ch.name not in GUARDIAN_GATE_SKIPS]
            if failed:
                gated.append(
                    f"v{c.version} ranks better (z {c.z:.1f}) but fails the promotion gate: {', '.join(failed)}"
                )
                continue
        better.append(c)
    if better:
        best = max(better, key=lambda c: c.z)
        if state.cooling_down(today, gov.guardian_cooldown_days):
            verdict.action, verdict.target = "hold", best.version
            verdict.reason = (
                f"v{best.version} is better, but the last switch was on {state.last_switch_date}: one switch per "
                f"{gov.guardian_cooldown_days} days"
            )
            return verdict
        verdict.action, verdict.target = "switch", best.version
        verdict.reason = (
            f"v{champion} breaches ({', '.join(sorted({b.kind for b in verdict.breaches}))}); "
            f"v{best.version} ranks the same {best.loans:,} matured loans better by {best.delta:+.4f} AUC "
            f"(z {best.z:.1f}, one-sided p {best.p_one_sided:.2g}) and passes its guardrails and the gate"
        )
        return verdict
    others = [v for a, v in aliases.items() if a != champion_alias and v != champion]
    if not any(healthy(v) for v in others):
        verdict.action = "fallback"
        verdict.reason = f"v{champion} breaches and no other model passes its guardrails"
    else:
        verdict.action = "hold"
        verdict.reason = (
            "; ".join(gated) + " — a person decides (bnpl promote --force --reason)"
            if gated
            else "no other model is significantly better on the matured loans"
        )
    return verdict


RUNBOOK: Final = (
    "The guardian acted on a performance analysis: read its evidence (`bnpl models --history`, the performance "
    "report), confirm or undo it (`bnpl promote … --force --reason`), retrain the model that breached."
)


def _alert(settings: Settings, verdict: Verdict) -> Alert:
    import uuid_utils

    done = verdict.mode == "auto" and verdict.action in ("switch", "rollback")
    kind = f"guardian_{verdict.action}" if verdict.mode == "auto" else "guardian_recommendation"
    prefix = "" if done or verdict.action == "hold" else ("would " if verdict.mode != "auto" else "")
    return Alert(
        alert_id=str(uuid_utils.uuid7()),
        alert_key=f"guardian:{verdict.action}:{verdict.champion}:{verdict.analysis_date.isoformat()}",
        kind=kind,
        severity="critical" if verdict.action in ("switch", "rollback", "fallback") else "warning",
        model_name=settings.registry.model_name,
        model_version=verdict.champion,
        statistic="guardian",
        value=float(len(verdict.breaches)),
        threshold=1.0,
        window=f"analysis {verdict.analysis_date.isoformat()}",
        first_seen=verdict.analysis_date.isoformat(),
        message=prefix + verdict.summary(),
        runbook=RUNBOOK,
    )


def run_guardian(settings: Settings, report: PerformanceReport, alerts: list[Alert], *, send: bool) -> Verdict:
    """Assess one analysis against the registry's current aliases and audit trail; in ``auto`` mode act on the
    verdict (alias swaps, rollback, the emergency fallback), each action audited; raise the verdict's alert."""
    from governance.aliases import current_holder, promote
    from governance.audit import history
    from governance.gate import evidence_of, gate
    from registry.store import get_version, mlflow_client

    registry = settings.registry
    client = mlflow_client(registry)
    aliases = {}
    for alias in registry.model_aliases:
        holder = current_holder(client, registry.model_name, alias)
        if holder is not None:
            aliases[alias] = holder.version
    if registry.model_aliases[0] not in aliases:
        return Verdict(report.windows.analysis_date, settings.governance.guardian_mode, None, reason="no champion")
    state = GuardianState.from_history(history(client, registry.model_name), registry.model_aliases[0])
    engaged = False
    if settings.streams.redis_url:
        from common.redis_client import redis_for_sync
        from governance.fallback import read_state_sync

        redis = redis_for_sync(settings.streams)
        try:
            engaged = read_state_sync(redis, settings.keys) is not None
        finally:
            redis.close()

    def gate_of(candidate: str, holder: str) -> GateResult:
        return gate(
            evidence_of(get_version(client, registry.model_name, candidate)),
            evidence_of(get_version(client, registry.model_name, holder)),
            settings.governance,
        )

    verdict = assess(report, alerts, settings, aliases, state, gate_of, engaged)
    if verdict.action == "none":
        return verdict
    log.warning("%s", verdict.summary())
    if verdict.mode == "auto" and verdict.action in ("switch", "rollback") and verdict.target and verdict.champion:
        action = "auto_switch" if verdict.action == "switch" else "rollback"
        other = next((a for a, v in aliases.items() if v == verdict.target and a != registry.model_aliases[0]), None)
        moves = [(registry.model_aliases[0], verdict.target)] + ([(other, verdict.champion)] if other else [])
        for alias, version in moves:
            change = promote(
                client,
                settings,
                alias,
                version,
                force=True,
                reason=verdict.reason,
                actor=GUARDIAN,
                action=action,
                evidence=verdict.evidence(),
            )
            if change.event is not None:
                verdict.events.append(change.event)
    elif verdict.mode == "auto" and verdict.action == "fallback" and settings.streams.redis_url:
        from governance.fallback import switch

        event = switch(client, settings, True, verdict.reason, actor=GUARDIAN, evidence=verdict.evidence())
        if event is not None:
            verdict.events.append(event)
    if not (verdict.mode == "auto" and verdict.action == "fallback"):  # the fallback switch raises its own alert
        verdict.alerts.append(_alert(settings, verdict))
    if send and settings.streams.redis_url and verdict.alerts:
        import asyncio

        from alerting.channel import raise_alert
        from common.redis_client import redis_for

        async def publish() -> None:
            redis = redis_for(settings.streams)
            try:
                for alert in verdict.alerts:
                    await raise_alert(redis, settings.keys, alert, 90 * 86_400)
            finally:
                await redis.aclose()

        asyncio.run(publish())
    return verdict


def guarded_analysis(settings: Settings, analysis_date: date, **options: Any) -> Any:
    """:func:`performance.job.run_analysis`, then the guardian on its report (unless ``BNPL_GUARDIAN_MODE=off``);
    the verdict is the result's ``verdict``. A guardian that fails (registry down) is logged: the analysis, already
    written and alerted, stands."""
    from performance.job import run_analysis

    result = run_analysis(settings, analysis_date, **options)
    if settings.governance.guardian_mode != "off":
        try:
            result.verdict = run_guardian(
                settings, result.report, result.alerts, send=bool(options.get("send_alerts", True))
            )
        except Exception:
            log.exception(
                "the guardian could not assess the analysis of %s (the analysis itself stands)", analysis_date
            )
    return result
