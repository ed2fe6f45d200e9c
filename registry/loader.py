"""Load a :class:`decision.models.ModelSet` from the MLflow registry (blocking: call it in a worker thread).

For each configured alias: resolve the version, load the sklearn model (skops), compile it, verify the compiled
scorer against ``predict_proba`` (falls back to the sklearn scorer if it ever differs), and warm it up. Versions
already loaded are reused, so an alias move loads only the new version.

The verification sample is drawn from the version's own reference profile (per-feature quantiles and ranges stored
at training time), so serving needs no data generator and checks each model on values of its own training data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from common.settings import RegistrySettings
from decision.experiment import Experiment
from decision.models import LoadedModel, ModelSet
from decision.scorers import SklearnScorer, compile_model, verify
from features.spec import FEATURE_NAMES
from registry.experiments import active_experiment
from registry.store import RegisteredVersion, read_profile, resolve_alias

log = logging.getLogger(__name__)
VERIFICATION_ROWS = 2_000


def verification_sample(profile: dict[str, Any], rows: int = VERIFICATION_ROWS, seed: int = 2024) -> Any:
    """``rows`` feature vectors drawn from a reference profile: per feature, half its observed quantiles and bin
    edges (values the training data had, including split-like points), half uniform over its observed range."""
    rng = np.random.default_rng(seed)
    columns = []
    for name in FEATURE_NAMES:
        summary = profile["features"][name]
        low, high = float(summary["min"]), float(summary["max"])
        points = np.array(sorted({low, high, *summary["quantiles"].values(), *summary["bin_edges"]}), dtype=float)
        observed = rng.choice(points, rows)
        uniform = rng.uniform(low, high, rows)
        columns.append(np.where(rng.random(rows) < 0.5, observed, uniform))
    sample: npt.NDArray[np.float64] = np.ascontiguousarray(np.column_stack(columns))
    return sample


def registry_pointers(
    client: Any, settings: RegistrySettings
) -> tuple[dict[str, RegisteredVersion], Experiment | None, str | None]:
    """Current alias → version of every configured alias that exists, the active experiment, and why that
    experiment cannot be applied (None when it can, or none is active)."""
    from mlflow.exceptions import MlflowException

    found: dict[str, RegisteredVersion] = {}
    for alias in settings.model_aliases:
        try:
            found[alias] = resolve_alias(client, settings.model_name, alias)
        except MlflowException:
            log.warning("alias %s@%s does not resolve; not loaded", settings.model_name, alias)
    try:
        return found, active_experiment(client, settings.model_name), None
    except (ValueError, KeyError) as exc:  # tags edited by hand into something no experiment can be
        return found, None, f"the active experiment's configuration is invalid ({exc}); the champion decides"


def load_version(version: RegisteredVersion) -> LoadedModel:
    """Load, compile, verify and warm up one registered version."""
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(version.model_uri)
    sample = verification_sample(read_profile(version))
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
    problem: str | None = None,
    loaded: Mapping[str, LoadedModel] | None = None,
) -> ModelSet | None:
    """A model set for ``pointers`` (alias order kept), reusing already-loaded versions from ``loaded``. An
    experiment whose arms are not all loaded is not applied: the champion decides, and the set says why."""
    cache = {m.version: m for m in (loaded or {}).values()}
    models = []
    for alias, version in pointers.items():
        model = cache.get(version.version) or load_version(version)
        cache[version.version] = model
        models.append(replace(model, alias=alias))
    if not models:
        return None
    if experiment is not None:
        missing = sorted({experiment.model_for(a) for a in experiment.arms} - {m.alias for m in models})
        if missing:
            problem = (
                f"experiment {experiment.name} decides with alias(es) {', '.join(missing)}, which are not loaded "
                f"(loaded: {', '.join(m.alias for m in models)}); the champion decides"
            )
            experiment = None
    return ModelSet(tuple(models), experiment, problem)
