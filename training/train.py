"""``bnpl train``: generate data, fit every family on a time split, log to MLflow, register each version with its
model card, and propose the best ones for the aliases; aliases move only with ``--promote``, through the promotion
gate (``governance``), each move audited.

Split by time (rows are in time order) over ``BNPL_TRAIN_DAYS`` of history (two years by default): the first half
fits the models — a full year, so every season, the holiday season included, is learned; the next quarter
(validation) checks each model's probability calibration (``training.calibration``; a map, when needed, is fitted
on held-out folds of the fit year), sets its risk-based thresholds
(``training.thresholds``, from ``BNPL_POLICY_OBJECTIVE``) and is the one reference period of every drift reference;
the last quarter (holdout) is only used for the reported metrics and the calibration record (per score decile and
per season) stored with the version.

Fair lending: the request fields in ``BNPL_PROTECTED_FIELDS`` (age bracket by default) are neutralized before
fitting (their columns set to a constant), so no model can learn from them; they stay in the events for fairness
monitoring. Every version records what it does with age (``age_log_odds_<bracket>``: mean log-odds change when only
the bracket changes, exactly 0 when protected). A family allowed to use age is not registered if it scores an
elderly bracket (``BNPL_ELDERLY_BRACKETS``) worse than any other bracket.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.performance import customer_codes, delong
from common.progress import step
from common.settings import Settings, TrainingSettings
from datagen import Dataset, generate
from datagen.drift import Drift
from features import FEATURE_NAMES, featurize_columns
from features.spec import AGE_BRACKETS, FEATURE_SPEC_VERSION, feature_columns, metric_key
from governance.cards import publish_card
from registry import POLICY_FILE, PROFILE_FILE, ensure_experiment, mlflow_client
from training.calibration import CALIBRATION_TRUSTED_TYPES, calibrate, calibration_record, season_index
from training.metrics import holdout_metrics, paired_auc_difference
from training.models import FAMILIES, Family
from training.profile import build_profile
from training.thresholds import Objective, Thresholds, choose_thresholds, decision_rates, expected_mix

#: Name of the policy that turns a score into a decision with per-version thresholds.
POLICY_NAME = "threshold-v1"
#: Where the time span is cut: fit | validation | holdout.
FIT_SHARE, VALIDATION_SHARE = 0.50, 0.25


@dataclass(frozen=True, slots=True)
class TrainedModel:
    """One registered candidate and how it did."""

    family: str
    version: str
    run_id: str
    metrics: dict[str, float]
    thresholds: Thresholds
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TrainingReport:
    """What a training run produced (printed by the CLI and the demo)."""

    model_name: str
    rows: int
    train_rows: int
    holdout_rows: int
    holdout_start: str
    models: list[TrainedModel]
    #: Champion AUC minus each other model's AUC on the holdout, with a 95 % paired-bootstrap interval.
    auc_margins: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    seconds: float = 0.0
    #: Families that were not registered, and why (the fair-lending check).
    rejected: dict[str, str] = field(default_factory=dict)
    #: Per alias: its holder before training, the best new candidate for it and what the promotion gate says.
    proposals: list[Proposal] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Proposal:
    """What training proposes for one alias (moved only with ``--promote``, and only through the gate)."""

    alias: str
    holder: str | None  # version
    holder_auc: float | None
    candidate: str
    candidate_auc: float
    failed_checks: tuple[str, ...]
    moved: bool = False
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class _Split:
    data: Dataset
    matrix: npt.NDArray[np.float64]

    @property
    def labels(self) -> npt.NDArray[np.bool_]:
        return self.data.will_default


def objective_of(settings: TrainingSettings) -> Objective:
    """The threshold objective the training settings describe."""
    return Objective(
        kind=settings.objective,
        target_default_rate=settings.target_default_rate,
        margin=settings.margin,
        loss_given_default=settings.loss_given_default,
        review_cost=settings.review_cost,
        review_catch=settings.review_catch,
    )


def training_data(settings: TrainingSettings, rows: int | None = None, drifts: Sequence[Drift] = ()) -> Dataset:
    """The synthetic history training fits on (``BNPL_TRAIN_ROWS`` rows over ``BNPL_TRAIN_DAYS`` days); ``drifts``
    model a world that changed (e.g. a retrain after a concept shift: the shift over the whole history)."""
    start = datetime.fromisoformat(settings.train_start).replace(tzinfo=UTC)
    return generate(
        rows or settings.train_rows,
        seed=settings.train_seed,
        start=start,
        days=settings.train_days,
        drifts=list(drifts),
    )


def _month_start(instant: datetime) -> datetime:
    """The first day of the month nearest ``instant`` (periods cut at month boundaries keep seasons whole)."""
    first = instant.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if instant.day < 16:
        return first
    return first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)


def _split(data: Dataset) -> tuple[_Split, _Split, _Split]:
    matrix = featurize_columns(data.columns).matrix
    # ISO-8601 UTC timestamps in time order: the cut instants are found by comparing strings.
    stamps = np.asarray(data.columns["transaction_timestamp"], dtype=str)
    first, last = (datetime.fromisoformat(stamps[i]) for i in (0, -1))
    a, b = (
        int(np.searchsorted(stamps, _month_start(first + (last - first) * share).strftime("%Y-%m-%dT%H:%M:%SZ")))
        for share in (FIT_SHARE, FIT_SHARE + VALIDATION_SHARE)
    )
    n = len(data)
    return (
        _Split(data.slice(0, a), matrix[:a]),
        _Split(data.slice(a, b), matrix[a:b]),
        _Split(data.slice(b, n), matrix[b:]),
    )


def _score(model: Any, matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(model.predict_proba(matrix)[:, 1], dtype=np.float64)


class FairLendingError(ValueError):
    """A candidate that scores an elderly age bracket worse than another: it is not registered."""


def neutralized(matrix: npt.NDArray[np.float64], columns: list[int]) -> npt.NDArray[np.float64]:
    """``matrix`` with ``columns`` replaced by their mean: a model fitted on it cannot learn from them (a constant
    column gets no split in a tree and a zero weight in a linear model), so at scoring time the real value moves
    nothing."""
    if not columns:
        return matrix
    out = matrix.copy()
    out[:, columns] = matrix[:, columns].mean(axis=0)
    return out


def _mean_log_odds(model: Any, rows: npt.NDArray[np.float64], column: int, value: float) -> float:
    """Mean log-odds of ``model`` on ``rows`` with feature ``column`` set to ``value`` for every row (``rows`` is
    changed in place)."""
    rows[:, column] = value
    p = np.clip(_score(model, rows), 1e-12, 1 - 1e-12)
    return float(np.mean(np.log(p / (1 - p))))


def bracket_effects(model: Any, matrix: npt.NDArray[np.float64]) -> dict[str, float]:
    """Mean log-odds change of ``model`` on ``matrix`` when only the age bracket is set to each bracket, relative to
    the middle bracket (35-44): what the model does with age, all else equal."""
    (column,) = feature_columns("customer_age_bracket")
    rows = matrix[: min(len(matrix), 20_000)].copy()
    means = {bracket: _mean_log_odds(model, rows, column, ordinal) for ordinal, bracket in enumerate(AGE_BRACKETS)}
    reference = means[AGE_BRACKETS[2]]
    return {b: m - reference for b, m in means.items()}


def holiday_effect(model: Any, matrix: npt.NDArray[np.float64]) -> float:
    """Mean log-odds change of ``model`` on ``matrix`` when only the holiday-season flag goes from 0 to 1."""
    (column,) = feature_columns("is_holiday_season")
    rows = matrix[: min(len(matrix), 20_000)].copy()
    return _mean_log_odds(model, rows, column, 1.0) - _mean_log_odds(model, rows, column, 0.0)


def check_elderly(family: str, effects: dict[str, float], elderly: tuple[str, ...], tolerance: float = 0.01) -> None:
    """Raise :class:`FairLendingError` when an elderly bracket scores worse (higher log-odds) than any other bracket
    (Regulation B §1002.6(b)(2): an empirically derived system may not assign an elderly applicant's age a negative
    value)."""
    others = [v for b, v in effects.items() if b not in elderly]
    for bracket in elderly:
        if bracket in effects and others and effects[bracket] > min(others) + tolerance:
            raise FairLendingError(
                f"{family} scores age {bracket} {effects[bracket] - min(others):+.3f} log-odds worse than the "
                f"best-treated bracket: not registered (protect the field with BNPL_PROTECTED_FIELDS)"
            )


SPLIT_NAMES = ("fit", "validation", "holdout")


def _window(split: _Split) -> str:
    stamps = split.data.columns["transaction_timestamp"]
    return f"{str(min(stamps))[:10]} – {str(max(stamps))[:10]}"


def _code_commit() -> str:
    """The git commit this code was trained from (``unknown`` outside a git checkout)."""
    import subprocess

    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return found.stdout.strip() or "unknown"


def adverse_impact_ratio(approved: npt.NDArray[np.bool_], brackets: Any) -> float:
    """Lowest approval rate of an age bracket over the highest (the four-fifths rule's ratio).

    >>> adverse_impact_ratio(np.array([True, True, True, False]), ["a", "a", "b", "b"])
    0.5
    """
    groups = np.asarray(brackets).astype(str)
    rates = [float(approved[groups == b].mean()) for b in np.unique(groups)]
    return min(rates) / max(rates) if max(rates) > 0 else float("nan")


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "numpy", "scipy", "skops")]


def _log_datasets(splits: tuple[_Split, _Split, _Split], description: str) -> None:
    """The active run's inputs: each split's feature matrix and labels (MLflow's Datasets column)."""
    import mlflow
    from mlflow.data.numpy_dataset import from_numpy

    for name, split in zip(SPLIT_NAMES, splits, strict=True):
        dataset = from_numpy(split.matrix, targets=split.labels.astype(np.int8), name=f"bnpl-{name} ({_window(split)})")
        mlflow.log_input(dataset, context=name, tags={"description": description[:250]})


def _fit_and_log(
    family: Family,
    splits: tuple[_Split, _Split, _Split],
    settings: Settings,
    experiment_id: str,
    parent_run_id: str,
    data_description: str,
) -> tuple[TrainedModel, npt.NDArray[np.float64]]:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    train, validation, holdout = splits
    model = family.build(settings.training.train_seed)
    protected = [c for name in settings.training.protected_fields for c in feature_columns(name)]
    seed = settings.training.train_seed
    fit_matrix = neutralized(train.matrix, protected)
    fitted = family.build(seed).fit(fit_matrix, train.labels)
    val_customers = customer_codes(validation.data.columns["customer_id"])
    model, choice = calibrate(
        lambda: family.build(seed),
        fitted,
        (fit_matrix, train.labels, customer_codes(train.data.columns["customer_id"])),
        (validation.matrix, validation.labels, val_customers),
    )
    age_effects = bracket_effects(model, holdout.matrix)
    if "customer_age_bracket" not in settings.training.protected_fields:
        check_elderly(family.name, age_effects, settings.training.elderly_brackets)
    val_scores, hold_scores = _score(model, validation.matrix), _score(model, holdout.matrix)
    # The policy period: the most recent year of applications (validation + holdout; scores only, no outcomes). The
    # thresholds, their expected outcome mix and every drift reference come from it, so they describe one period
    # that holds every season.
    policy_scores = np.concatenate([val_scores, hold_scores])
    objective = objective_of(settings.training)
    thresholds = choose_thresholds(policy_scores, objective)
    expected = expected_mix(policy_scores, thresholds, objective)
    rates = decision_rates(hold_scores, holdout.labels, thresholds)
    hold_customers = customer_codes(holdout.data.columns["customer_id"])
    calibration = {
        "method": choice.method,
        "out_of_fold_hosmer_lemeshow": choice.hosmer_lemeshow,
        "out_of_fold_log_loss": choice.log_loss,
        "holdout": calibration_record(
            holdout.labels, hold_scores, hold_customers, season_index(holdout.data.columns["transaction_timestamp"])
        ),
        # In-sample for the calibration map (fitted on these months), out-of-sample for the model.
        "validation_seasons": calibration_record(
            validation.labels,
            val_scores,
            val_customers,
            season_index(validation.data.columns["transaction_timestamp"]),
        )["seasons"],
    }
    metrics = {f"holdout_{k}": v for k, v in holdout_metrics(holdout.labels, hold_scores).items()}
    metrics["train_auc"] = holdout_metrics(train.labels, _score(model, train.matrix))["auc"]
    metrics.update({f"holdout_{k}_rate": v for k, v in asdict(rates).items() if k != "approved_default_rate"})
    metrics["holdout_approved_default_rate"] = rates.approved_default_rate
    # The AUC among the loans this version would approve: what performance monitoring can measure once outcomes
    # arrive (denied applicants never get one), so the reference of its AUC-drop rule.
    approved = hold_scores < thresholds.review
    metrics["holdout_auc_approved"] = holdout_metrics(holdout.labels[approved], hold_scores[approved])["auc"]
    auc_low, auc_high = delong(holdout.labels, hold_scores, hold_customers).ci(0, 0.95)
    metrics["holdout_auc_ci_low"], metrics["holdout_auc_ci_high"] = auc_low, auc_high
    metrics["holdout_adverse_impact_ratio"] = adverse_impact_ratio(
        approved, holdout.data.columns["customer_age_bracket"]
    )
    metrics.update({f"age_log_odds_{metric_key(b)}": v for b, v in age_effects.items()})
    metrics.update({f"expected_{k}": v for k, v in expected.items()})
    metrics["holdout_hosmer_lemeshow"] = calibration["holdout"]["hosmer_lemeshow"]
    metrics["holdout_observed_expected"] = calibration["holdout"]["overall"]["ratio"]
    metrics["holiday_log_odds"] = holiday_effect(model, holdout.matrix)

    reference_columns = {
        k: np.concatenate([validation.data.columns[k], holdout.data.columns[k]]) for k in validation.data.columns
    }
    profile = build_profile(
        np.vstack([validation.matrix, holdout.matrix]),
        reference_columns,
        policy_scores,
        {
            "approve": expected["approve_rate"],
            "review": expected["review_rate"],
            "deny": expected["deny_rate"],
            "approved_default_rate": expected["approve_default_rate"],
        },
        held_out=(holdout.matrix, holdout.data.columns),
    )
    policy = {
        "policy": POLICY_NAME,
        "thresholds": thresholds.as_dict(),
        "score": "default_probability",
        "feature_names": list(FEATURE_NAMES),
        "feature_spec_version": FEATURE_SPEC_VERSION,
        "objective": {**objective.as_dict(), "description": objective.describe()},
        "expected": expected,
        "calibration": calibration,
    }

    with (
        mlflow.start_run(
            experiment_id=experiment_id,
            run_name=family.name,
            nested=True,
            parent_run_id=parent_run_id,
            tags={"family": family.name},
        ) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        mlflow.log_params(
            {
                "family": family.name,
                **family.params,
                "train_seed": settings.training.train_seed,
                "threshold_review": thresholds.review,
                "threshold_deny": thresholds.deny,
                "policy_objective": objective.kind,
                "calibration": choice.method,
            }
        )
        mlflow.log_metrics(metrics)
        _log_datasets(splits, data_description)
        extra = []
        for name, content in ((PROFILE_FILE, profile), (POLICY_FILE, policy)):
            path = Path(tmp) / name
            path.write_text(json.dumps(content, indent=1))
            extra.append(str(path))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=[*family.skops_trusted_types, *CALIBRATION_TRUSTED_TYPES],
            registered_model_name=settings.registry.model_name,
            signature=infer_signature(train.matrix[:100], model.predict_proba(train.matrix[:100])),
            pyfunc_predict_fn="predict_proba",
            pip_requirements=_pip_requirements(),
            extra_files=extra,
        )
        version = str(info.registered_model_version)
    client = mlflow_client(settings.registry)
    for key, value in {
        "family": family.name,
        "threshold_review": repr(thresholds.review),
        "threshold_deny": repr(thresholds.deny),
        "decision_policy": POLICY_NAME,
        "feature_spec_version": str(FEATURE_SPEC_VERSION),
        "holdout_auc": f"{metrics['holdout_auc']:.6f}",
        "holdout_auc_approved": f"{metrics['holdout_auc_approved']:.6f}",
        "holdout_adverse_impact_ratio": f"{metrics['holdout_adverse_impact_ratio']:.6f}",
        "protected_fields": ",".join(settings.training.protected_fields),
        "policy_objective": objective.describe(),
        "calibration": choice.method,
        "expected_approve_rate": f"{expected['approve_rate']:.6f}",
        "expected_approved_default_rate": f"{expected['approve_default_rate']:.6f}",
        "training_run_id": run.info.run_id,
        "data_window": "; ".join(f"{name} {_window(split)}" for name, split in zip(SPLIT_NAMES, splits, strict=True)),
        "code_commit": _code_commit(),
        "data_description": data_description,
    }.items():
        client.set_model_version_tag(settings.registry.model_name, version, key, value)
    client.update_model_version(
        settings.registry.model_name,
        version,
        description=(
            f"{family.name} on {data_description}; holdout AUC {metrics['holdout_auc']:.4f} "
            f"(95% CI {auc_low:.4f}–{auc_high:.4f}), approve below {thresholds.review:.4f}, deny from "
            f"{thresholds.deny:.4f} ({objective.describe()}); calibration {choice.method}; "
            f"training run {run.info.run_id}"
        ),
    )
    client.set_tag(run.info.run_id, "mlflow.runName", f"{family.name} → {settings.registry.model_name} v{version}")
    publish_card(client, settings.registry.model_name, version)
    return TrainedModel(family.name, version, run.info.run_id, metrics, thresholds), hold_scores


def train_and_register(
    settings: Settings,
    families: Sequence[str] = tuple(FAMILIES),
    rows: int | None = None,
    aliases: Sequence[str] = ("champion", "challenger"),
    data: Dataset | None = None,
    promote: bool = False,
    data_description: str = "",
) -> TrainingReport:
    """Train every family and register each as a version; propose the best ones by holdout AUC for ``aliases``
    (in order) and, with ``promote``, move each alias whose proposal passes the promotion gate. ``data_description``
    says what ``data`` is (its model cards print it; default: the synthetic history of the training settings)."""
    import mlflow

    started = time.perf_counter()
    rows = rows or settings.training.train_rows
    client = mlflow_client(settings.registry)
    experiment_id = ensure_experiment(client, settings.registry, settings.training.training_experiment)
    t = settings.training
    data_description = data_description or (
        f"synthetic BNPL applications, seed {t.train_seed}, {t.train_days} days from {t.train_start}"
    )
    with step(f"generating {rows:,} synthetic transactions (seed {settings.training.train_seed}) and features"):
        data = data if data is not None else training_data(settings.training, rows)
        rows = len(data)
        splits = _split(data)
    trained: list[TrainedModel] = []
    rejected: dict[str, str] = {}
    holdout_scores: dict[str, npt.NDArray[np.float64]] = {}
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"training {'+'.join(families)} · {rows:,} rows · seed {settings.training.train_seed} · "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        tags={**settings.run_tags, "kind": "training"},
    ) as parent:
        mlflow.log_params(
            {
                "rows": rows,
                "seed": settings.training.train_seed,
                "train_rows": len(splits[0].data),
                "validation_rows": len(splits[1].data),
                "holdout_rows": len(splits[2].data),
                "holdout_start": str(splits[2].data.columns["transaction_timestamp"][0]),
                "default_rate": round(float(data.will_default.mean()), 5),
            }
        )
        for name in families:
            with step(f"training {name} and registering it in {settings.registry.model_name}"):
                try:
                    model, scores = _fit_and_log(
                        FAMILIES[name], splits, settings, experiment_id, parent.info.run_id, data_description
                    )
                except FairLendingError as exc:
                    rejected[name] = str(exc)
                    print(f"    {exc}", flush=True)
                    continue
            trained.append(model)
            holdout_scores[model.family] = scores
        if not trained:
            raise FairLendingError("no candidate passed the fair-lending check: " + "; ".join(rejected.values()))
        ranked = sorted(trained, key=lambda m: m.metrics["holdout_auc"], reverse=True)
        proposals = _propose(client, settings, aliases, ranked, promote)
        by_version = {p.candidate: p.alias for p in proposals if p.moved}
        trained = [
            TrainedModel(
                m.family,
                m.version,
                m.run_id,
                m.metrics,
                m.thresholds,
                (by_version[m.version],) if m.version in by_version else (),
            )
            for m in trained
        ]
        best = ranked[0]
        labels = splits[2].labels
        margins = {
            m.family: paired_auc_difference(labels, holdout_scores[best.family], holdout_scores[m.family])
            for m in ranked[1:]
        }
        for family, (diff, low, high) in margins.items():
            mlflow.log_metrics(
                {
                    f"auc_margin_{family}": diff,
                    f"auc_margin_{family}_low": low,
                    f"auc_margin_{family}_high": high,
                }
            )
    return TrainingReport(
        model_name=settings.registry.model_name,
        rows=rows,
        train_rows=len(splits[0].data),
        holdout_rows=len(splits[2].data),
        holdout_start=str(splits[2].data.columns["transaction_timestamp"][0]),
        models=trained,
        auc_margins=margins,
        rejected=rejected,
        seconds=time.perf_counter() - started,
        proposals=proposals,
    )


def _propose(
    client: Any, settings: Settings, aliases: Sequence[str], ranked: list[TrainedModel], promote: bool
) -> list[Proposal]:
    """The best new version for each alias in order, judged by the promotion gate against the alias's holder; with
    ``promote`` the ones the gate passes are moved (each with its audit record)."""
    from governance.aliases import GovernanceError, check_promotion
    from governance.aliases import promote as move

    out = []
    for alias, model in zip(aliases, ranked, strict=False):
        change = check_promotion(client, settings, alias, model.version)
        holder = change.holder
        moved, refusal = False, None
        if promote:
            try:
                move(client, settings, alias, model.version, reason="registered and promoted by bnpl train --promote")
                moved = True
            except GovernanceError as exc:
                refusal = str(exc)
        out.append(
            Proposal(
                alias,
                holder.version if holder else None,
                float(holder.tags["holdout_auc"]) if holder and "holdout_auc" in holder.tags else None,
                model.version,
                model.metrics["holdout_auc"],
                tuple(c.name for c in change.gate.failed),
                moved,
                refusal,
            )
        )
    return out
