"""Load a :class:`ModelSet` from the MLflow registry (blocking: call it in a worker thread).

For each configured alias: resolve the version, load the sklearn model (skops), compile it, verify the compiled
scorer against ``predict_proba`` on generated requests (falls back to the sklearn scorer if it ever differs), and
warm it up. Versions already loaded are reused, so an alias move loads only the new version.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from common.settings import Settings
from decision.experiment import Experiment
from decision.models import LoadedModel, ModelSet
from decision.scorers import SklearnScorer, compile_model, verify
from registry.experiments import active_experiment
from registry.store import RegisteredVersion, resolve_alias

log = logging.getLogger(__name__)
_SAMPLE: list[npt.NDArray[np.float64]] = []


def _verification_sample() -> npt.NDArray[np.float64]:
    if not _SAMPLE:
        from datagen import NewCategory, generate
        from features import featurize_columns

        data = generate(2_000, seed=2024, drifts=[NewCategory(start_index=1_000, share=0.2)])
        _SAMPLE.append(featurize_columns(data.columns).matrix)
    return _SAMPLE[0]


def registry_pointers(client: Any, settings: Settings) -> tuple[dict[str, RegisteredVersion], Experiment | None]:
    """Current alias → version of every configured alias that exists, and the active experiment."""
    from mlflow.exceptions import MlflowException

    found: dict[str, RegisteredVersion] = {}
    for alias in settings.model_aliases:
        try:
            found[alias] = resolve_alias(client, settings.model_name, alias)
        except MlflowException:
            log.warning("alias %s@%s does not resolve; not loaded", settings.model_name, alias)
    return found, active_experiment(client, settings.model_name)


def load_version(version: RegisteredVersion) -> LoadedModel:
    """Load, compile, verify and warm up one registered version."""
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(version.model_uri)
    sample = _verification_sample()
    scorer = compile_model(model)
    try:
        error = verify(scorer, model, sample)
        log.info(
            "loaded %s v%s (%s, %s scorer, max |Δ| vs sklearn %.2g)",
            version.name,
            version.version,
            version.family,
            scorer.kind,
            error,
        )
    except ValueError:
        log.exception("compiled scorer of v%s disagrees with sklearn; serving it with sklearn", version.version)
        scorer = SklearnScorer(model)
    for row in sample[:200]:  # compile (numba) and warm caches before the first real request
        scorer.score(row)
        scorer.contributions(row)
    return LoadedModel(
        alias=version.alias or "",
        name=version.name,
        version=version.version,
        family=version.family,
        scorer=scorer,
        review=version.threshold_review,
        deny=version.threshold_deny,
    )


def build_model_set(
    pointers: Mapping[str, RegisteredVersion],
    experiment: Experiment | None,
    loaded: Mapping[str, LoadedModel] | None = None,
) -> ModelSet | None:
    """A model set for ``pointers`` (alias order kept), reusing already-loaded versions from ``loaded``."""
    cache = {m.version: m for m in (loaded or {}).values()}
    models = []
    for alias, version in pointers.items():
        model = cache.get(version.version) or load_version(version)
        cache[version.version] = model
        models.append(replace(model, alias=alias))
    if not models:
        return None
    if experiment is not None and not {experiment.model_for(a) for a in experiment.arms} <= {m.alias for m in models}:
        log.error(
            "experiment %s names arms %s but only %s are loaded; champion decides",
            experiment.name,
            experiment.arms,
            [m.alias for m in models],
        )
        experiment = None
    return ModelSet(tuple(models), experiment)
