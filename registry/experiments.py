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
    return ExperimentInfo(str(exp.experiment_id), str(exp.name), dict(exp.tags))


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


def create_experiment(client: Any, settings: RegistrySettings, spec: ExperimentSpec) -> ExperimentInfo:
    """Create (or update, while not active) experiment ``spec.name`` as a draft."""
    allocation = parse_allocation(spec.allocation)
    arm_models = parse_arm_models(spec.arm_models)
    experiment_id = ensure_experiment(client, settings, spec.name)
    Experiment(experiment_id, spec.name, experiment_id, allocation, arm_models)  # validates before any change
    unknown_arms = {arm for arm, _ in arm_models} - {arm for arm, _ in allocation}
    if unknown_arms:
        raise ValueError(f"arm_models names arms not in the allocation: {sorted(unknown_arms)}")
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
        raise ValueError(f"{spec.name} is active: pause it before changing its configuration")
    for key, value in tags.items():
        client.set_experiment_tag(experiment_id, key, value)
    if current is None:
        client.set_experiment_tag(experiment_id, STATUS_TAG, "draft")
    return get_experiment(client, settings.model_name, spec.name)


def set_status(client: Any, settings: RegistrySettings, name: str, status: str) -> ExperimentInfo:
    """Move an experiment to ``status``; activating it pauses the model's other active experiment."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")
    info = get_experiment(client, settings.model_name, name)
    if info.status == "stopped" and status != "stopped":
        raise ValueError(f"{name} is stopped; create a new experiment instead")
    if status == "active":
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
