"""A/B experiments stored as MLflow experiment tags, so the API (which reads them) and MLflow's UI agree.

Tags (prefix ``bnpl.``): ``model_name``, ``status`` (``draft`` → ``active`` ⇄ ``paused`` → ``stopped``),
``traffic_allocation`` (``control:0.7,treatment:0.3``), ``arm_models`` (``control=champion,treatment=challenger``;
an arm without one is itself a registry alias), ``salt`` (assignment salt; default: the experiment id),
``success_metric``, ``minimum_sample_size`` (customers per arm), ``confidence_level``, ``minimum_effect`` (approval
change the sample size is planned for), ``guardrail_margins`` (``deny_rate:0.01,latency_ms:2``), ``cuped``
(``true``: adjust with the customers' pre-experiment decisions), ``start_date``, ``end_date``.
At most one experiment is active per registered model: starting one pauses the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from common.settings import RegistrySettings
from decision.experiment import Experiment, parse_allocation, parse_arm_models
from registry.store import ensure_experiment

MODEL_TAG: Final = "bnpl.model_name"
STATUS_TAG: Final = "bnpl.status"
ALLOCATION_TAG: Final = "bnpl.traffic_allocation"
ARM_MODELS_TAG: Final = "bnpl.arm_models"
SALT_TAG: Final = "bnpl.salt"
STATUSES: Final = ("draft", "active", "paused", "stopped")


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """Everything an operator sets when creating an experiment."""

    name: str
    allocation: str
    arm_models: str = ""
    success_metric: str = "approval_rate"
    minimum_sample_size: int = 1_000
    confidence_level: float = 0.95
    minimum_effect: float = 0.02
    guardrail_margins: str = ""
    cuped: bool = False
    start_date: str = ""
    end_date: str = ""
    extra_tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExperimentInfo:
    experiment_id: str
    name: str
    tags: dict[str, str]
    #: when the MLflow experiment was created / last changed (ms since the epoch; None where unknown)
    created_ms: int | None = None
    updated_ms: int | None = None

    @property
    def status(self) -> str:
        return self.tags.get(STATUS_TAG, "draft")

    def as_experiment(self) -> Experiment:
        return Experiment(
            experiment_id=self.experiment_id,
            name=self.name,
            salt=self.tags.get(SALT_TAG) or self.experiment_id,
            allocation=parse_allocation(self.tags[ALLOCATION_TAG]),
            arm_models=parse_arm_models(self.tags.get(ARM_MODELS_TAG, "")),
        )

    def warehouse_row(self, model_name: str) -> dict[str, Any]:
        """A row of the warehouse ``experiments`` table."""
        import orjson

        def number(tag: str) -> float | None:
            value = self.tags.get(f"bnpl.{tag}")
            return float(value) if value else None

        size = number("minimum_sample_size")
        return {
            "experiment_id": self.experiment_id,
            "name": self.name,
            "model_name": self.tags.get(MODEL_TAG, model_name),
            "status": self.status,
            "traffic_allocation": orjson.dumps(dict(parse_allocation(self.tags[ALLOCATION_TAG]))).decode(),
            "arm_models": orjson.dumps(dict(parse_arm_models(self.tags.get(ARM_MODELS_TAG, "")))).decode(),
            "success_metric": self.tags.get("bnpl.success_metric"),
            "minimum_sample_size": int(size) if size is not None else None,
            "confidence_level": number("confidence_level"),
            "start_date": self.tags.get("bnpl.start_date") or None,
            "end_date": self.tags.get("bnpl.end_date") or None,
            "updated_at": datetime.now(UTC).isoformat(),
        }


def _info(exp: Any) -> ExperimentInfo:
    return ExperimentInfo(
        str(exp.experiment_id),
        str(exp.name),
        dict(exp.tags),
        getattr(exp, "creation_time", None),
        getattr(exp, "last_update_time", None),
    )


def list_experiments(client: Any, model_name: str) -> list[ExperimentInfo]:
    """Every A/B experiment of ``model_name``, newest first."""
    found = client.search_experiments(
        filter_string=f"tags.`{MODEL_TAG}` = '{model_name}'", order_by=["creation_time DESC"]
    )
    return [_info(e) for e in found]


def get_experiment(client: Any, model_name: str, name: str) -> ExperimentInfo:
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.tags.get(MODEL_TAG) != model_name:
        raise LookupError(f"no A/B experiment {name!r} for {model_name}")
    return _info(exp)


def active_experiment(client: Any, model_name: str) -> Experiment | None:
    """The active experiment of ``model_name``, or None; the most recently created wins if several are active."""
    found = client.search_experiments(
        filter_string=f"tags.`{STATUS_TAG}` = 'active' and tags.`{MODEL_TAG}` = '{model_name}'",
        order_by=["creation_time DESC"],
    )
    return _info(found[0]).as_experiment() if found else None


class ExperimentError(ValueError):
    """An experiment configuration that cannot run; nothing was created or changed."""


def validate_arms(client: Any, settings: RegistrySettings, allocation_text: str, arm_models_text: str) -> Experiment:
    """The experiment ``allocation``/``arm_models`` describe, when every arm is decided by a configured alias that
    points at a version; raises :class:`ExperimentError` with every problem found."""
    from mlflow.exceptions import MlflowException

    try:
        allocation = parse_allocation(allocation_text)
        arm_models = parse_arm_models(arm_models_text)
        experiment = Experiment("-", "-", "-", allocation, arm_models)
    except ValueError as exc:
        raise ExperimentError(str(exc)) from None
    problems = []
    unknown_arms = sorted({arm for arm, _ in arm_models} - set(experiment.arms))
    if unknown_arms:
        problems.append(f"--arm-models names arms not in the allocation: {', '.join(unknown_arms)}")
    for arm in experiment.arms:
        alias = experiment.model_for(arm)
        if alias not in settings.model_aliases:
            problems.append(
                f"arm {arm!r} is decided by {alias!r}, not a configured alias ({', '.join(settings.model_aliases)}; "
                "name the alias with --arm-models arm=alias)"
            )
            continue
        try:
            client.get_model_version_by_alias(settings.model_name, alias)
        except MlflowException:
            problems.append(f"alias {alias!r} (arm {arm!r}) points at no version of {settings.model_name}")
    if problems:
        raise ExperimentError("; ".join(problems))
    return experiment


def validate_spec(client: Any, settings: RegistrySettings, spec: ExperimentSpec) -> None:
    """Every check a new configuration must pass (arms, allocation, metrics, numbers), before anything is written."""
    from analysis.ab_report import SUCCESS, parse_margins

    validate_arms(client, settings, spec.allocation, spec.arm_models)
    problems = []
    if spec.success_metric != SUCCESS:
        problems.append(f"unknown success metric {spec.success_metric!r}: the report decides on {SUCCESS}")
    try:
        margins = parse_margins(spec.guardrail_margins)
    except ValueError as exc:
        problems.append(str(exc))
        margins = {}
    problems += [f"guardrail margin of {metric} must be ≥ 0" for metric, value in margins.items() if value < 0]
    if not 0.5 <= spec.confidence_level < 1:
        problems.append(f"confidence {spec.confidence_level} must be in [0.5, 1)")
    if spec.minimum_sample_size < 1:
        problems.append("minimum sample size must be at least 1 customer per arm")
    if not 0 < spec.minimum_effect < 1:
        problems.append(f"minimum effect {spec.minimum_effect} must be in (0, 1)")
    for label, text in (("start", spec.start_date), ("end", spec.end_date)):
        if text:
            try:
                datetime.fromisoformat(text)
            except ValueError:
                problems.append(f"{label} {text!r} is not an ISO-8601 date")
    if problems:
        raise ExperimentError("; ".join(problems))


def create_experiment(client: Any, settings: RegistrySettings, spec: ExperimentSpec) -> ExperimentInfo:
    """Create (or update, while not active) experiment ``spec.name`` as a draft; a configuration that cannot run
    raises :class:`ExperimentError` before anything is created."""
    validate_spec(client, settings, spec)
    existing = client.get_experiment_by_name(spec.name)
    if existing is not None and existing.tags.get(MODEL_TAG) not in (None, settings.model_name):
        raise ExperimentError(f"MLflow experiment {spec.name!r} exists and is not an A/B experiment of this model")
    experiment_id = ensure_experiment(client, settings, spec.name)
    tags = {
        MODEL_TAG: settings.model_name,
        ALLOCATION_TAG: spec.allocation,
        ARM_MODELS_TAG: spec.arm_models,
        "bnpl.success_metric": spec.success_metric,
        "bnpl.minimum_sample_size": str(spec.minimum_sample_size),
        "bnpl.confidence_level": str(spec.confidence_level),
        "bnpl.minimum_effect": str(spec.minimum_effect),
        "bnpl.guardrail_margins": spec.guardrail_margins,
        "bnpl.cuped": "true" if spec.cuped else "false",
        "bnpl.start_date": spec.start_date,
        "bnpl.end_date": spec.end_date,
        **spec.extra_tags,
    }
    current = client.get_experiment(experiment_id).tags.get(STATUS_TAG)
    if current == "active":
        raise ExperimentError(f"{spec.name} is active: pause it before changing its configuration")
    try:
        for key, value in tags.items():
            client.set_experiment_tag(experiment_id, key, value)
        if current is None:
            client.set_experiment_tag(experiment_id, STATUS_TAG, "draft")
    except Exception:
        if existing is None:  # created by this call: leave nothing half-made behind
            client.delete_experiment(experiment_id)
        raise
    return get_experiment(client, settings.model_name, spec.name)


def set_status(client: Any, settings: RegistrySettings, name: str, status: str) -> ExperimentInfo:
    """Move an experiment to ``status``; activating it pauses the model's other active experiment."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    info = get_experiment(client, settings.model_name, name)
    if info.status == "stopped" and status != "stopped":
        raise ExperimentError(f"{name} is stopped; create a new experiment instead")
    if status == "active":  # checked before another experiment is paused for it
        validate_arms(client, settings, info.tags.get(ALLOCATION_TAG, ""), info.tags.get(ARM_MODELS_TAG, ""))
        for other in list_experiments(client, settings.model_name):
            if other.status == "active" and other.experiment_id != info.experiment_id:
                client.set_experiment_tag(other.experiment_id, STATUS_TAG, "paused")
        if not info.tags.get("bnpl.start_date"):
            client.set_experiment_tag(info.experiment_id, "bnpl.start_date", datetime.now(UTC).isoformat())
    if status == "stopped":
        client.set_experiment_tag(info.experiment_id, "bnpl.end_date", datetime.now(UTC).isoformat())
    client.set_experiment_tag(info.experiment_id, STATUS_TAG, status)
    return get_experiment(client, settings.model_name, name)


def start_experiment(
    client: Any, settings: RegistrySettings, name: str, allocation: str, arm_models: str = ""
) -> Experiment:
    """Create (if needed) and activate experiment ``name``."""
    existing = client.get_experiment_by_name(name)
    if existing is None or existing.tags.get(STATUS_TAG) != "active":
        create_experiment(client, settings, ExperimentSpec(name, allocation, arm_models))
    info = set_status(client, settings, name, "active")
    return info.as_experiment()
