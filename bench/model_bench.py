"""``make bench-model``: is each registered model one a lender can defend, on data it has never seen?

Trains the default model families into a temporary registry (seed ``BNPL_TRAIN_SEED``, two years of history), then
generates a fresh year (seed 11, 2026, ``BENCH_MODEL_ROWS`` applications) and measures, for the champion and the
challenger through their compiled scorers:

* calibration: observed/expected defaults per score decile and in Nov–Dec alone, against the generator's true
  probabilities (no sampling noise; must be within 0.90–1.10) and realized outcomes (with clustered 95 % intervals;
  must be within the band up to that noise);
* the season: the mean log-odds change when only the holiday flag changes (the generator adds +0.25);
* age: the largest mean log-odds change when only the age bracket changes (protected: must be < 0.01);
* the policy: the default rate among approved loans against the objective's target (± the rate's clustered 95 %
  interval), the decision mix, and approval rates per age bracket (adverse impact ratio, four-fifths rule);
* reasons: over ``BENCH_MODEL_DECISIONS`` engine decisions, no statement about age, time or calendar, and every
  deny and review with at least one statement.

Prints a table per model and exits 1 when a criterion fails.
"""

from __future__ import annotations

import re
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from analysis.performance import band, customer_codes
from common.settings import Settings
from datagen import generate
from features import featurize_columns
from features.spec import AGE_BRACKETS
from training.calibration import SEASONS, calibration_record, season_index
from training.train import bracket_effects, holiday_effect, objective_of, train_and_register

ROWS = Settings.from_env().bench.bench_model_rows
DECISIONS = Settings.from_env().bench.bench_model_decisions
GENERATOR_HOLIDAY_LOG_ODDS = 0.25
#: Words no applicant-facing statement may use (age, time of day, calendar).
FORBIDDEN = re.compile(
    r"\b(age|aged|older|elderly|young|younger|night|evening|morning|time of day|hour|weekend|weekday|holiday|season"
    r"|month|date|calendar|christmas)\b",
    re.IGNORECASE,
)


class _Scored:
    """A compiled scorer as the sklearn-like object the training helpers score with."""

    def __init__(self, scorer: object) -> None:
        self.scorer = scorer

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.scorer.score_batch(x)  # type: ignore[attr-defined]
        return np.column_stack([1 - p, p])


def _calibrated(true_ratio: float, ratio: float, low: float, high: float) -> bool:
    """Observed/expected within 0.90–1.10: exactly, against the generator's true probabilities; and the realized
    ratio no further outside that band than its sampling noise (its 95 % interval under calibration, around 1,
    shifted to the realized ratio, overlaps the band). At 0.2 % the lowest decile of 2,000,000 rows has ~400
    defaults: a perfectly calibrated model's realized ratio is then 1 ± 0.11, wider than the band itself."""
    half = (high - low) / 2
    return 0.90 <= true_ratio <= 1.10 and ratio - half <= 1.10 and ratio + half >= 0.90


def _reasons_ok(engine: object, data: object, n: int) -> tuple[int, int, int, int]:
    """(decisions, adverse decisions, adverse decisions without a statement, statements naming age/time/calendar)."""
    from schemas.request import parse_request

    adverse = missing = forbidden = 0
    for i in range(n):
        response, _ = engine.decide(parse_request(data.request(i)))  # type: ignore[attr-defined]
        if response.business_decision == "approve":
            continue
        adverse += 1
        statements = [r.statement for r in response.reason_codes if r.statement]
        missing += not statements
        forbidden += sum(bool(FORBIDDEN.search(s)) for s in statements)
    return n, adverse, missing, forbidden


def main() -> int:
    from decision.engine import DecisionEngine
    from decision.models import ModelSet
    from registry import mlflow_client, resolve_alias
    from registry.loader import load_version

    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env().replace(data_dir=Path(tmp), tracking_uri="", artifact_root="")
        report = train_and_register(settings, promote=True)
        objective = objective_of(settings.training)
        print(f"objective: {objective.describe()}", flush=True)
        print(f"generating {ROWS:,} fresh applications (seed 11, 2026) …", flush=True)
        data = generate(ROWS, seed=11, start=datetime(2026, 1, 1, tzinfo=UTC), days=365)
        matrix = featurize_columns(data.columns).matrix
        y = data.will_default
        customers = customer_codes(data.columns["customer_id"])
        seasons = season_index(data.columns["transaction_timestamp"])
        ages = np.asarray(data.columns["customer_age_bracket"], dtype=object)
        client = mlflow_client(settings.registry)
        loaded = {}
        for alias in ("champion", "challenger"):
            version = resolve_alias(client, settings.registry.model_name, alias)
            model = load_version(version)
            loaded[alias] = model
            p = model.scorer.score_batch(matrix)
            record = calibration_record(y, p, customers, seasons)
            print(
                f"\n{alias} v{version.version} ({version.family}, {model.scorer.kind}); thresholds review ≥ "
                f"{model.review:.4f}, deny ≥ {model.deny:.4f}"
            )
            print("  decile       loans     predicted  observed  O/E (95% if calibrated)   O/E vs true p")
            order = np.argsort(p, kind="stable")
            for b, rows in zip(record["deciles"], np.array_split(order, 10), strict=True):
                true_ratio = float(data.true_probability[rows].sum() / p[rows].sum())
                print(
                    f"  {b['label']:<12} {b['loans']:>8,}  {b['expected']:>8.2%}  {b['observed']:>8.2%}  "
                    f"{b['ratio']:.3f} ({b['ratio_low']:.3f}–{b['ratio_high']:.3f})   {true_ratio:.3f}"
                )
                if not _calibrated(true_ratio, b["ratio"], b["ratio_low"], b["ratio_high"]):
                    failures.append(f"{alias} decile {b['label']} O/E {b['ratio']:.3f} (true p {true_ratio:.3f})")
            holiday = seasons == SEASONS.index("holiday")
            hb = band("nov-dec", y[holiday].astype(float), p[holiday], customers[holiday], 0.95)
            true_h = float(data.true_probability[holiday].sum() / p[holiday].sum())
            print(
                f"  Nov–Dec      {hb.loans:>8,}  {hb.expected / hb.loans:>8.2%}  {hb.observed / hb.loans:>8.2%}  "
                f"{hb.ratio:.3f} ({hb.ratio_low:.3f}–{hb.ratio_high:.3f})   {true_h:.3f}"
            )
            if not _calibrated(true_h, hb.ratio, hb.ratio_low, hb.ratio_high):
                failures.append(f"{alias} Nov–Dec O/E {hb.ratio:.3f} (true p {true_h:.3f})")
            print(f"  Hosmer–Lemeshow χ² {record['hosmer_lemeshow']:.1f} (p {record['hl_p_value']:.3g})")

            scored = _Scored(model.scorer)
            sample = matrix[:100_000]
            season_effect = holiday_effect(scored, sample)
            ages_effect = bracket_effects(scored, sample)
            worst_age = max(abs(v) for v in ages_effect.values())
            print(
                f"  holiday flag: {season_effect:+.3f} log-odds (generator {GENERATOR_HOLIDAY_LOG_ODDS:+.2f}); "
                f"age bracket swap: largest |Δ log-odds| {worst_age:.4f}"
            )
            if abs(season_effect - GENERATOR_HOLIDAY_LOG_ODDS) > 0.1:
                failures.append(f"{alias} holiday effect {season_effect:+.3f}")
            if worst_age >= 0.01:
                failures.append(f"{alias} age effect {worst_age:.4f}")

            approved = p < model.review
            denied = p >= model.deny
            ab = band("approved", y[approved].astype(float), p[approved], customers[approved], 0.95)
            rate = ab.observed / ab.loans
            half = (ab.ratio_high - 1) * ab.expected / ab.loans
            print(
                f"  mix approve/review/deny {approved.mean():.1%}/{(~approved & ~denied).mean():.1%}/"
                f"{denied.mean():.1%}; default rate among approved {rate:.3%} (target "
                f"{objective.target_default_rate:.2%} ± {half:.3%})"
            )
            if objective.kind == "default_rate" and abs(rate - objective.target_default_rate) > half:
                failures.append(f"{alias} approved default rate {rate:.3%}")
            by_age = {b: float(approved[ages == b].mean()) for b in AGE_BRACKETS}
            air = min(by_age.values()) / max(by_age.values())
            print(
                "  approval by age: "
                + ", ".join(f"{b} {r:.1%}" for b, r in by_age.items())
                + f"; adverse impact ratio {air:.3f}"
            )
        engine = DecisionEngine(ModelSet(tuple(loaded.values()), None))
        n, adverse, missing, forbidden = _reasons_ok(engine, data, DECISIONS)
        print(
            f"\nreasons over {n:,} engine decisions: {adverse:,} deny/review, {missing} without a statement, "
            f"{forbidden} statements about age, time or calendar"
        )
        if missing or forbidden:
            failures.append("reasons")
        print(f"trained in {report.seconds:.0f}s")
    print("\nall criteria met" if not failures else "\nFAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
