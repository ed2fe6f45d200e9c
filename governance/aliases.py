"""The only code that moves or removes registry aliases. Every change is checked, then written with exactly one
audit record (:mod:`governance.audit`).

A person moves an alias with :func:`promote` (``bnpl promote``, ``bnpl train --promote``) and removes one with
:func:`unalias`; the guardian moves them with :func:`promote` too (``actor="guardian"``, its own action names), so
both go through the same gate and leave the same trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.settings import Settings
from governance.audit import ModelEvent, actor_of, record
from governance.gate import GateResult, evidence_of, gate
from registry.store import RegisteredVersion, get_version, resolve_alias


class GovernanceError(Exception):
    """A change refused (the CLI exits 2 with the message)."""


def _check_override(refusals: list[str], force: bool, reason: str) -> None:
    """Pass when nothing refuses the change, or ``force`` with a reason overrides; else raise
    :class:`GovernanceError`."""
    if refusals and not force:
        raise GovernanceError("; ".join(refusals) + ' (--force --reason "…" overrides, and is recorded)')
    if force and not reason.strip():
        raise GovernanceError("--force needs --reason: the audit record must say why")


@dataclass(frozen=True, slots=True)
class AliasChange:
    alias: str
    holder: RegisteredVersion | None
    candidate: RegisteredVersion
    gate: GateResult
    experiments: tuple[str, ...]
    event: ModelEvent | None  # None: nothing changed (the alias already pointed there)


def configured_alias(settings: Settings, alias: str) -> str:
    aliases = settings.registry.model_aliases
    if alias not in aliases:
        raise GovernanceError(
            f"unknown alias {alias!r}: the configured aliases are {', '.join(aliases)} (BNPL_MODEL_ALIASES)"
        )
    return alias


def current_holder(client: Any, model_name: str, alias: str) -> RegisteredVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return resolve_alias(client, model_name, alias)
    except MlflowException:
        return None


def experiments_using(client: Any, settings: Settings, alias: str) -> tuple[str, ...]:
    """Names of the active experiments with an arm decided by ``alias``."""
    from registry.experiments import list_experiments

    out = []
    for info in list_experiments(client, settings.registry.model_name):
        if info.status != "active":
            continue
        experiment = info.as_experiment()
        if any(experiment.model_for(arm) == alias for arm in experiment.arms):
            out.append(info.name)
    return tuple(out)


def check_promotion(client: Any, settings: Settings, alias: str, version: str) -> AliasChange:
    """What moving ``alias`` to ``version`` would do, and what the gate says (nothing is changed)."""
    from mlflow.exceptions import MlflowException

    model_name = settings.registry.model_name
    configured_alias(settings, alias)
    try:
        candidate = get_version(client, model_name, version)
    except (MlflowException, KeyError) as exc:
        raise GovernanceError(f"{model_name} has no servable version {version!r} ({exc.__class__.__name__})") from None
    holder = current_holder(client, model_name, alias)
    result = gate(evidence_of(candidate), evidence_of(holder) if holder else None, settings.governance)
    return AliasChange(alias, holder, candidate, result, experiments_using(client, settings, alias), None)


def promote(
    client: Any,
    settings: Settings,
    alias: str,
    version: str,
    *,
    force: bool = False,
    reason: str = "",
    actor: str | None = None,
    action: str = "promote",
    evidence: dict[str, Any] | None = None,
) -> AliasChange:
    """Point ``alias`` at ``version`` if the gate passes and no active experiment uses the alias (``force`` with a
    ``reason`` overrides both, and the record says so). Raises :class:`GovernanceError` when refused."""
    change = check_promotion(client, settings, alias, version)
    if change.holder is not None and change.holder.version == change.candidate.version:
        return change
    refusals = (
        [f"the promotion gate fails: {', '.join(c.name for c in change.gate.failed)}"] if not change.gate.passed else []
    )
    if change.experiments:
        refusals.append(f"active experiment(s) {', '.join(change.experiments)} decide with @{alias}")
    _check_override(refusals, force, reason)
    model_name = settings.registry.model_name
    client.set_registered_model_alias(model_name, alias, change.candidate.version)
    event = record(
        client,
        settings,
        ModelEvent(
            model_name=model_name,
            action=action,
            actor=actor or actor_of(settings.governance),
            alias=alias,
            from_version=change.holder.version if change.holder else None,
            to_version=change.candidate.version,
            forced=bool(refusals),
            reason=reason.strip() or None,
            evidence={
                "gate": change.gate.as_dict(),
                "overridden": refusals,
                "active_experiments": list(change.experiments),
                **(evidence or {}),
            },
        ),
    )
    return AliasChange(change.alias, change.holder, change.candidate, change.gate, change.experiments, event)


def unalias(client: Any, settings: Settings, alias: str, *, force: bool = False, reason: str = "") -> ModelEvent:
    """Remove ``alias``. The champion, or an alias an active experiment decides with, only with ``force``."""
    model_name = settings.registry.model_name
    configured_alias(settings, alias)
    holder = current_holder(client, model_name, alias)
    if holder is None:
        raise GovernanceError(f"{model_name}@{alias} does not exist")
    refusals = []
    if alias == settings.registry.model_aliases[0]:
        refusals.append(f"@{alias} is the champion: without it the next alias would decide")
    experiments = experiments_using(client, settings, alias)
    if experiments:
        refusals.append(f"active experiment(s) {', '.join(experiments)} decide with @{alias}")
    _check_override(refusals, force, reason)
    client.delete_registered_model_alias(model_name, alias)
    return record(
        client,
        settings,
        ModelEvent(
            model_name=model_name,
            action="unalias",
            actor=actor_of(settings.governance),
            alias=alias,
            from_version=holder.version,
            forced=bool(refusals),
            reason=reason.strip() or None,
            evidence={"overridden": refusals, "active_experiments": list(experiments)},
        ),
    )
