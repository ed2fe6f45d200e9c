"""Model cards: one per registered version, generated from what the registry holds about it (version tags, the
decision policy file, the training run's metrics and parameters), stored as artifacts of its training run
(``model_card/model_card.md`` and ``.html``) and printed by ``bnpl models --card VERSION``.

Every figure that also appears in the registry is printed from the registry's own value (the same string), so the
card cannot disagree with ``bnpl models``.
"""

from __future__ import annotations

import html
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from features import FEATURE_NAMES
from registry.store import POLICY_FILE, RegisteredVersion, get_version, read_extra_file

CARD_DIR: Final = "model_card"
CARD_MD: Final = "model_card.md"
CARD_HTML: Final = "model_card.html"
INTENDED_USE: Final = (
    "Scores the probability that a buy-now-pay-later instalment plan defaults, at checkout, for the threshold "
    "policy threshold-v1 (approve / manual review / deny). Decisions it drives are credit decisions: every adverse "
    "one carries specific reasons, and a person reviews the manual-review band."
)
LIMITATIONS: Final = (
    "Trained on synthetic applications (the project's generator), not on a lender's book: figures describe that "
    "data. Outcomes are known only for funded loans, so monitoring sees the approved population only. A concept "
    "shift (defaults changing while inputs do not) is invisible to drift detection; performance monitoring finds "
    "it once the affected loans mature. Not for applicants outside the feature ranges of the reference profile, "
    "nor for any use but BNPL checkout credit."
)


@dataclass(slots=True)
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)


@dataclass(slots=True)
class Card:
    title: str
    sections: list[Section]

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for s in self.sections:
            out += [f"## {s.title}", ""]
            for p in s.paragraphs:
                out += [p, ""]
            for headers, rows in s.tables:
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "---|" * len(headers))
                out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
                out.append("")
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for s in self.sections:
            body.append(f"<h2>{e(s.title)}</h2>")
            body += [f"<p>{e(p)}</p>" for p in s.paragraphs]
            for headers, rows in s.tables:
                head = "".join(f"<th>{e(h)}</th>" for h in headers)
                cells = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        style = (
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
            "table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.2rem .5rem;"
            "text-align:left}th{background:#f3f3f3}"
        )
        return (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(self.title)}</title>'
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
        )


def _pct(value: Any) -> str:
    return "?" if value is None else f"{float(value):.2%}"


def build_card(
    version: RegisteredVersion, policy: dict[str, Any], metrics: dict[str, float], params: dict[str, str]
) -> Card:
    """The card of ``version`` from its registry record, policy file and training run."""
    tags = version.tags
    protected = [p for p in tags.get("protected_fields", "").split(",") if p]
    calibration = policy.get("calibration") or {}
    holdout = calibration.get("holdout") or {}
    objective = policy.get("objective") or {}
    expected = policy.get("expected") or {}
    thresholds = policy.get("thresholds") or {}
    described = tags.get("data_description") or f"synthetic BNPL applications, seed {params.get('train_seed', '?')}"
    sections = [
        Section(
            "Summary",
            [
                f"Registered model {version.name}, version {version.version} ({version.family}); decision policy "
                f"{tags.get('decision_policy', '?')}; feature spec version {tags.get('feature_spec_version', '?')}.",
            ],
        ),
        Section("Intended use", [INTENDED_USE]),
        Section(
            "Data",
            [
                f"{described}; time windows: {tags.get('data_window', 'not recorded')}.",
                "Split by time at month boundaries: the fit window trains, the validation window calibrates and "
                "(with the holdout's scores) sets thresholds, the holdout measures.",
            ],
        ),
        Section(
            "Features",
            [
                f"{len(FEATURE_NAMES)} features: {', '.join(FEATURE_NAMES)}.",
                "Protected characteristics excluded from learning (their columns are neutralized when fitting; they "
                f"stay in events for fairness monitoring): {', '.join(protected) or 'none'}.",
            ],
        ),
        Section(
            "Holdout metrics",
            tables=[
                (
                    ["metric", "value", "95% interval"],
                    [
                        [
                            "AUC",
                            tags.get("holdout_auc", "?"),
                            _interval(metrics, "holdout_auc_ci_low", "holdout_auc_ci_high"),
                        ],
                        ["AUC among approved", tags.get("holdout_auc_approved", "?"), ""],
                        ["log loss", _num(metrics.get("holdout_log_loss")), ""],
                        ["Brier score", _num(metrics.get("holdout_brier")), ""],
                        ["approved default rate", _pct(metrics.get("holdout_approved_default_rate")), ""],
                    ],
                )
            ],
        ),
        Section(
            "Calibration",
            [
                f"Method: {tags.get('calibration', '?')}. Hosmer–Lemeshow χ² on the holdout "
                f"{_num(holdout.get('hosmer_lemeshow'))} (p {_num(holdout.get('hl_p_value'))}). Observed vs predicted "
                "defaults per holdout score decile and season; the range is where a calibrated model's ratio falls "
                "95% of the time at that sample size (customers as clusters).",
            ],
            [
                (
                    ["decile / season", "loans", "predicted", "observed", "O/E", "calibrated range"],
                    [
                        [
                            b["label"],
                            f"{b['loans']:,}",
                            f"{b['expected']:.2%}",
                            f"{b['observed']:.2%}",
                            f"{b['ratio']:.3f}",
                            f"{b['ratio_low']:.3f}–{b['ratio_high']:.3f}",
                        ]
                        for b in (*holdout.get("deciles", []), *holdout.get("seasons", []))
                    ],
                )
            ],
        ),
        Section(
            "Thresholds and objective",
            [
                f"Objective: {tags.get('policy_objective', objective.get('description', '?'))}.",
                f"Manual review at score ≥ {tags.get('threshold_review', thresholds.get('review'))}, deny at ≥ "
                f"{tags.get('threshold_deny', thresholds.get('deny'))}. Expected on the policy period: approve "
                f"{_pct(tags.get('expected_approve_rate'))}, default rate among approved "
                f"{_pct(tags.get('expected_approved_default_rate'))}, review {_pct(expected.get('review_rate'))}, "
                f"deny {_pct(expected.get('deny_rate'))}.",
            ],
        ),
        Section(
            "Fairness",
            [
                f"Adverse impact ratio on the holdout (lowest age-bracket approval rate over the highest; the "
                f"four-fifths rule asks ≥ 0.8): {tags.get('holdout_adverse_impact_ratio', 'not recorded')}.",
                "Mean change in log-odds when only the age bracket changes (0 when age is protected):",
            ],
            [
                (
                    ["age bracket", "log-odds vs overall"],
                    [
                        [k.removeprefix("age_log_odds_"), f"{v:+.4f}"]
                        for k, v in sorted(metrics.items())
                        if k.startswith("age_log_odds_")
                    ],
                )
            ],
        ),
        Section("Limitations", [LIMITATIONS]),
        Section(
            "Lineage",
            tables=[
                (
                    ["item", "value"],
                    [
                        ["training run", tags.get("training_run_id", version.run_id)],
                        ["model source", version.source],
                        ["data seed", params.get("train_seed", "?")],
                        ["code commit", tags.get("code_commit", "not recorded")],
                        ["family parameters", ", ".join(f"{k}={v}" for k, v in sorted(params.items()))],
                    ],
                )
            ],
        ),
    ]
    return Card(f"Model card: {version.name} v{version.version} ({version.family})", sections)


def _num(value: Any) -> str:
    return "?" if value is None else f"{float(value):.4g}"


def _interval(metrics: dict[str, float], low: str, high: str) -> str:
    if low not in metrics or high not in metrics:
        return "?"
    return f"{metrics[low]:.4f} – {metrics[high]:.4f}"


def publish_card(client: Any, model_name: str, version: str) -> Card:
    """Generate the card of ``version`` and store it (Markdown + HTML) with its training run."""
    registered = get_version(client, model_name, version)
    run = client.get_run(registered.run_id)
    card = build_card(
        registered, read_extra_file(registered, POLICY_FILE), dict(run.data.metrics), dict(run.data.params)
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in ((CARD_MD, card.markdown()), (CARD_HTML, card.html())):
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            client.log_artifact(registered.run_id, str(path), CARD_DIR)
    client.set_model_version_tag(model_name, version, "model_card", f"runs:/{registered.run_id}/{CARD_DIR}/{CARD_MD}")
    return card


def read_card(client: Any, model_name: str, version: str, html: bool = False) -> str:
    """The stored card of ``version`` (Markdown, or HTML)."""
    import mlflow

    registered = get_version(client, model_name, version)
    name = CARD_HTML if html else CARD_MD
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{registered.run_id}/{CARD_DIR}/{name}")
    except Exception as exc:
        raise LookupError(f"v{version} has no model card (registered before cards existed?): {exc}") from None
    return Path(local).read_text(encoding="utf-8")
