"""Outcomes of funded loans, from the generator's delayed ground truth: what a servicing system would report.

Only funded credit has an outcome: approved decisions, and manual reviews a reviewer approved (each with probability
``review_approval_rate``, drawn per transaction from the seed). Denied applicants never get one.

* a loan that is repaid is ``paid`` when its outcome becomes known (2–6 weeks after the purchase), with the amount;
* a defaulter is ``defaulted`` when the missed payment is known, having repaid the instalments before it, or (25 %)
  ``partially_paid`` with 30–90 % recovered; 40 % of the ``defaulted`` are ``charged_off`` 60 days later — a second
  outcome that supersedes the first, as real servicing data does.

Outcome dates after ``as_of`` are left out: they are not known yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from datagen.generator import Dataset

OUTCOME_FIELDS = ("transaction_id", "customer_id", "outcome", "amount_recovered", "outcome_date", "source")
CHARGE_OFF_DAYS = 60


def funded(decisions: npt.ArrayLike, review_approval_rate: float, seed: int) -> npt.NDArray[np.bool_]:
    """Which decisions were funded: approvals, and manual reviews a reviewer approved (deterministic per seed)."""
    d = np.asarray(decisions, dtype=object)
    draw = np.random.default_rng(np.random.SeedSequence([seed, 1])).random(d.size)
    return np.asarray((d == "approve") | ((d == "manual_review") & (draw < review_approval_rate)))


def funded_outcomes(
    data: Dataset,
    decisions: Mapping[str, str],
    review_approval_rate: float,
    seed: int = 0,
    as_of: datetime | None = None,
    source: str = "synthetic-servicing",
) -> list[dict[str, Any]]:
    """Outcome records (``schemas.outcomes.Outcome`` fields) of the funded loans among ``data``'s transactions, in
    the order they become known (as a servicing feed sends them); ``decisions``: transaction id → business decision
    (transactions without one were not decided: no outcome)."""
    records = list(_records(data, decisions, review_approval_rate, seed, as_of, source))
    records.sort(key=lambda r: r["outcome_date"])
    return records


def ground_truth_outcomes(data: Dataset, seed: int = 0, source: str = "synthetic-ground-truth") -> list[dict[str, Any]]:
    """Outcome records of every transaction in ``data``, as if each were funded (``bnpl generate --outcomes-out``):
    the generator's ground truth in the format ``bnpl outcomes load`` takes, keyed by the request's
    ``transaction_id``, in the order they become known. :func:`funded_outcomes` keeps the funded loans only.

    >>> from datagen.generator import generate
    >>> records = ground_truth_outcomes(generate(200, seed=1), seed=1)
    >>> sorted(records[0]) == sorted(OUTCOME_FIELDS), len({r["transaction_id"] for r in records})
    (True, 200)
    """
    everyone = dict.fromkeys(data.columns["transaction_id"].tolist(), "approve")
    return funded_outcomes(data, everyone, review_approval_rate=0.0, seed=seed, source=source)


def _records(
    data: Dataset,
    decisions: Mapping[str, str],
    review_approval_rate: float,
    seed: int,
    as_of: datetime | None,
    source: str,
) -> Iterator[dict[str, Any]]:
    ids = data.columns["transaction_id"]
    decided = np.array([decisions.get(t, "") for t in ids.tolist()], dtype=object)
    is_funded = funded(decided, review_approval_rate, seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    kind_draw, recovered_draw, charge_draw = rng.random(len(data)), rng.random(len(data)), rng.random(len(data))
    amounts = data.columns["amount"]
    instalments = data.columns["installment_count"]
    limit = np.datetime64(as_of.astimezone(UTC).replace(tzinfo=None), "s") if as_of else None
    known = np.array([np.datetime64(t.removesuffix("Z"), "s") for t in data.outcome_known_at.tolist()])
    for i in np.flatnonzero(is_funded).tolist():
        base = {"transaction_id": str(ids[i]), "customer_id": str(data.columns["customer_id"][i]), "source": source}
        amount = float(amounts[i])
        records: list[tuple[np.datetime64, str, float]] = []
        if not data.will_default[i]:
            records.append((known[i], "paid", amount))
        elif kind_draw[i] < 0.25:
            records.append((known[i], "partially_paid", round(amount * (0.3 + 0.6 * float(recovered_draw[i])), 2)))
        else:
            paid = max(int(data.days_to_first_missed_payment[i]) // 14 - 1, 0)
            recovered = round(amount * paid / int(instalments[i]), 2)
            records.append((known[i], "defaulted", recovered))
            if charge_draw[i] < 0.4:
                records.append((known[i] + np.timedelta64(CHARGE_OFF_DAYS, "D"), "charged_off", recovered))
        for when, outcome, recovered in records:
            if limit is not None and when > limit:
                continue
            yield {**base, "outcome": outcome, "amount_recovered": recovered, "outcome_date": f"{when}Z"}


def write_outcomes(records: Iterable[dict[str, Any]], path: Path) -> int:
    """Write outcome records as JSON lines (``.jsonl``) or CSV (``.csv``); returns how many."""
    n = 0
    with path.open("wb") as fh:
        if path.suffix == ".csv":
            fh.write((",".join(OUTCOME_FIELDS) + "\n").encode())
            for r in records:
                fh.write((",".join(str(r[f]) for f in OUTCOME_FIELDS) + "\n").encode())
                n += 1
        else:
            for r in records:
                fh.write(orjson.dumps(r) + b"\n")
                n += 1
    return n
