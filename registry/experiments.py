"""A/B experiments stored as MLflow experiment tags, so the API (which reads them) and MLflow's UI agree.

Tags: ``bnpl.model_name`` (registered model), ``bnpl.status`` (``draft``/``active``/``paused``/``stopped``),
``bnpl.traffic_allocation`` (``champion:0.7,challenger:0.3`` — arms are registry aliases), ``bnpl.salt``
(assignment salt; defaults to the experiment id). At most one active experiment per registered model.
"""

from __future__ import annotations

from typing import Any, Final

from common.settings import Settings
from decision.experiment import Experiment, parse_allocation
from registry.store import ensure_experiment

MODEL_TAG: Final = "bnpl.model_name"
STATUS_TAG: Final = "bnpl.status"
ALLOCATION_TAG: Final = "bnpl.traffic_allocation"
SALT_TAG: Final = "bnpl.salt"


def active_experiment(client: Any, model_name: str) -> Experiment | None:
    """The active experiment of ``model_name``, or None; the most recently created wins if several are active."""
    found = client.search_experiments(
        filter_string=f"tags.`{STATUS_TAG}` = 'active' and tags.`{MODEL_TAG}` = '{model_name}'",
        order_by=["creation_time DESC"],
    )
    if not found:
        return None
    exp = found[0]
    tags = exp.tags
    return Experiment(
        experiment_id=str(exp.experiment_id),
        name=str(exp.name),
        salt=tags.get(SALT_TAG) or str(exp.experiment_id),
        allocation=parse_allocation(tags[ALLOCATION_TAG]),
    )


def start_experiment(client: Any, settings: Settings, name: str, allocation: str) -> Experiment:
    """Create (or reuse) MLflow experiment ``name`` and make it the active one for the model; pause the others."""
    parsed = parse_allocation(allocation)
    experiment_id = ensure_experiment(client, settings, name)
    Experiment(experiment_id, name, experiment_id, parsed)  # validates the allocation before anything changes
    current = active_experiment(client, settings.model_name)
    if current is not None and current.experiment_id != experiment_id:
        client.set_experiment_tag(current.experiment_id, STATUS_TAG, "paused")
    client.set_experiment_tag(experiment_id, MODEL_TAG, settings.model_name)
    client.set_experiment_tag(experiment_id, ALLOCATION_TAG, allocation)
    client.set_experiment_tag(experiment_id, STATUS_TAG, "active")
    started = active_experiment(client, settings.model_name)
    assert started is not None
    return started
