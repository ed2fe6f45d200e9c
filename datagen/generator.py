"""Deterministic synthetic BNPL data with a real, learnable signal.

Generative story (all vectorized with numpy, one seed ⇒ identical output):

* **Customers** carry a latent risk ``z ~ N(0, 1)`` shared by all their transactions. Observable attributes are noisy
  views of it: credit-score range, income bracket, verification level, tenure, device trust; their credit limit
  follows credit and income. About 70 % of transactions come from returning customers, who come back for a
  while after their first purchase (about four months on average) and then drift away; every dataset starts a
  year into the business (``history_days``), so any window has the same mix of new and returning customers.
* **Transactions**: hours cluster in business hours (~70 % in 9–17), Nov/Dec and weekends are busier, amounts depend
  on the product category, impulsive customers buy on impulse or in a rush, compare prices for less time and more
  often on untrusted devices, late at night.
* **Default** is Bernoulli with a logit that adds latent risk, affordability (amount vs credit limit and vs monthly
  income, with a threshold), behaviour, device trust × late night, season, instalments and tenure. The upstream
  ``risk_score`` sees only part of this, so the label depends on much more than ``risk_score``.
* **Outcomes** become known 2–6 weeks after the purchase (``outcome_known_at``); defaulters have a first missed
  payment 14, 28 or 42 days after purchase (bi-weekly instalments).

Drift knobs (``datagen.drift``) switch on at an index or a timestamp. Drift randomness comes from its own stream, so
the data before the start is identical to the same seed without drift.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from datagen.drift import ConceptShift, CovariateShift, Drift, NewCategory
from features.spec import (
    AGE_BRACKETS,
    CREDIT_SCORE_RANGES,
    DEVICE_TYPES,
    INCOME_BRACKETS,
    PAYMENT_PROVIDERS,
    PRODUCT_CATEGORIES,
    PRODUCT_RISK_CATEGORIES,
    PURCHASE_CONTEXTS,
    RISK_LEVELS,
    RISK_SCENARIOS,
    VERIFICATION_LEVELS,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Intercept of the default logit, calibrated once so that the base population defaults ≈ 6 %.
DEFAULT_INTERCEPT = -4.9
#: Mean time a customer keeps coming back after their first purchase.
CUSTOMER_LIFETIME_DAYS = 120
CREDIT_LIMITS = np.array([500.0, 1000.0, 1500.0, 2500.0, 5000.0])
INCOME_MONTHLY = np.array([15_000.0, 37_500.0, 62_500.0, 87_500.0, 125_000.0]) / 12
CATEGORY_MEDIAN_AMOUNT = np.array([45.0, 80.0, 220.0, 150.0, 90.0])  # beauty, clothing, electronics, home, sports
PRODUCT_RISK_BY_CATEGORY = np.array(
    [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.4, 0.4], [0.4, 0.4, 0.2], [0.4, 0.45, 0.15]]
)
PROVIDER_WEIGHTS = np.array([0.2, 0.3, 0.35, 0.15])
PROVIDER_EFFECT = {"affirm": 0.0, "afterpay": 0.05, "klarna": 0.0, "sezzle": 0.2}
UNKNOWN_PROVIDER_EFFECT = 0.3
#: Log-odds of default by age bracket (18-24 … 55+): young customers default more. The 55+ bracket carries no
#: penalty by default; a lender may not score elderly applicants worse for their age (Regulation B), and a synthetic
#: world that does would teach every model to. Tests that need an age effect pass ``age_effect``.
AGE_EFFECT = np.array([0.45, 0.1, 0.0, 0.05, 0.0])

REQUEST_FIELDS = (
    "transaction_id",
    "customer_id",
    "amount",
    "transaction_timestamp",
    "customer_credit_score_range",
    "customer_age_bracket",
    "customer_income_bracket",
    "customer_verification_level",
    "customer_tenure_days",
    "device_type",
    "device_is_trusted",
    "product_category",
    "product_risk_category",
    "risk_score",
    "risk_level",
    "risk_scenario",
    "payment_provider",
    "installment_count",
    "payment_credit_limit",
    "price_comparison_time",
    "purchase_context",
)


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _bucket(values: FloatArray, cuts: Sequence[float]) -> IntArray:
    return np.searchsorted(np.asarray(cuts), values).astype(np.int64)


@dataclass(frozen=True, slots=True)
class _Customers:
    """Attributes of one customer population, indexed by customer number within the pool."""

    latent: FloatArray
    credit: IntArray
    income: IntArray
    age: IntArray
    verification: IntArray
    tenure0: IntArray
    device: IntArray
    trust_p: FloatArray
    provider: IntArray
    limit: IntArray
    impulsivity: FloatArray


def _customers(rng: np.random.Generator, n: int, shift: CovariateShift | None = None) -> _Customers:
    income_shift, credit_shift, latent_shift = (
        (shift.income_shift, shift.credit_shift, shift.latent_shift) if shift else (0.0, 0.0, 0.0)
    )
    z = rng.normal(latent_shift, 1.0, n)
    credit = _bucket(-0.9 * z + rng.normal(0, 0.6, n) - credit_shift, [-1.12, -0.136, 0.91])
    income = _bucket(-0.5 * z + rng.normal(0, 0.9, n) + income_shift, [-0.87, -0.05, 0.60, 1.16])
    age = _bucket(-0.3 * z + rng.normal(0, 1.0, n), [-1.08, -0.18, 0.46, 1.08])
    verification = _bucket(-0.6 * z + rng.normal(0, 1.0, n), [-0.98, 0.0])
    tenure0 = np.floor(rng.exponential(400.0 * np.exp(-0.3 * z))).astype(np.int64)
    device = rng.choice(3, size=n, p=[0.35, 0.55, 0.10])
    trust_p = _sigmoid(1.8 - 0.8 * z)
    provider = rng.choice(4, size=n, p=PROVIDER_WEIGHTS)
    standing = 0.55 * credit / 3 + 0.45 * income / 4 + rng.normal(0, 0.12, n)
    limit = _bucket(standing, [0.25, 0.45, 0.62, 0.8])
    impulsivity = _sigmoid(-1.5 + 0.7 * z + rng.normal(0, 0.5, n))
    return _Customers(z, credit, income, age, verification, tenure0, device, trust_p, provider, limit, impulsivity)


def _assign(
    rng: np.random.Generator, n: int, repeat_share: float, existing: int = 0, lifetime: float = 0.0
) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """Customer number per row within a pool of ``existing`` customers (numbers ``0 … existing-1``, oldest first):
    new with probability 1 - repeat_share, else a returning one.

    A returning customer is one acquired a random number of acquisitions ago (exponential with mean ``lifetime``
    acquisitions, i.e. :data:`CUSTOMER_LIFETIME_DAYS` at the current volume): customers come back for a while, then
    drift away, so account ages and repeat rates are the same in any window of a running business."""
    is_new = rng.random(n) >= repeat_share
    if n and not existing:
        is_new[0] = True
    created = existing + np.cumsum(is_new)
    lag = np.floor(rng.exponential(max(lifetime, 1.0), n)).astype(np.int64)
    returning = created - 1 - lag
    # Shortly after a launch few customers exist yet: any of them comes back.
    early = returning < 0
    returning[early] = np.floor(created[early] * rng.random(int(early.sum()))).astype(np.int64)
    return np.where(is_new, created - 1, returning), is_new


def _timestamps(rng: np.random.Generator, n: int, start: datetime, days: int) -> npt.NDArray[np.datetime64]:
    day_index = np.arange(days)
    calendar = np.datetime64(start.replace(tzinfo=None), "D") + day_index
    month = calendar.astype("datetime64[M]").astype(np.int64) % 12 + 1
    weekday = (calendar.astype(np.int64) + 3) % 7
    weight = np.where(month >= 11, 1.3, 1.0) * np.where(weekday >= 5, 1.15, 1.0)
    day = rng.choice(days, size=n, p=weight / weight.sum())
    business = rng.random(n) < 0.7
    other_hours = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 18, 19, 20, 21, 22, 23])
    other_w = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.4, 2.2, 1.8, 1.4])
    hour = np.where(business, rng.integers(9, 18, n), rng.choice(other_hours, size=n, p=other_w / other_w.sum()))
    seconds = day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, n)
    base = np.datetime64(start.replace(tzinfo=None), "s")
    return np.sort(base + seconds.astype("timedelta64[s]"))


def _start_index(drift: Drift, ts: npt.NDArray[np.datetime64]) -> int:
    if drift.start_index is not None:
        return max(0, drift.start_index)
    assert drift.start_time is not None
    when = drift.start_time.astimezone(UTC).replace(tzinfo=None) if drift.start_time.tzinfo else drift.start_time
    return int(np.searchsorted(ts, np.datetime64(when, "s")))


@dataclass(slots=True)
class Dataset:
    """Generated transactions: request columns in the original format, ground truth, and the true probability."""

    columns: dict[str, npt.NDArray[Any]]
    will_default: npt.NDArray[np.bool_]
    days_to_first_missed_payment: IntArray  # -1 when the customer never missed a payment
    outcome_known_at: npt.NDArray[np.str_]
    true_probability: FloatArray
    _rows: dict[str, list[Any]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.will_default)

    def _lists(self) -> dict[str, list[Any]]:
        if not self._rows:
            self._rows.update({k: v.tolist() for k, v in self.columns.items()})
        return self._rows

    def request(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a request body in the original format (plain Python types, JSON-ready)."""
        rows = self._lists()
        return {name: rows[name][i] for name in REQUEST_FIELDS}

    def iter_requests(self) -> Iterator[dict[str, Any]]:
        """Every request body in time order."""
        for i in range(len(self)):
            yield self.request(i)

    def outcome(self, i: int) -> dict[str, Any]:
        """Delayed ground truth of row ``i``: what becomes known ``outcome_known_at``."""
        days = int(self.days_to_first_missed_payment[i])
        return {
            "transaction_id": str(self.columns["transaction_id"][i]),
            "customer_id": str(self.columns["customer_id"][i]),
            "will_default": bool(self.will_default[i]),
            "days_to_first_missed_payment": days if days >= 0 else None,
            "outcome_known_at": str(self.outcome_known_at[i]),
        }

    def slice(self, start: int, stop: int) -> Dataset:
        """Rows ``start:stop`` as a new data set (views, no copies of the columns)."""
        return Dataset(
            {k: v[start:stop] for k, v in self.columns.items()},
            self.will_default[start:stop],
            self.days_to_first_missed_payment[start:stop],
            self.outcome_known_at[start:stop],
            self.true_probability[start:stop],
        )

    def write_requests(self, path: Path) -> None:
        """One request body per line, exactly what an application sends (no ground truth)."""
        with path.open("wb") as fh:
            for i in range(len(self)):
                fh.write(orjson.dumps(self.request(i)) + b"\n")


def generate(
    n: int,
    seed: int = 0,
    *,
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC),
    days: int = 365,
    drifts: Sequence[Drift] = (),
    repeat_share: float = 0.7,
    age_effect: Sequence[float] | None = None,
    history_days: int = 365,
) -> Dataset:
    """Generate ``n`` transactions in time order between ``start`` and ``start + days``.

    The business has been running for ``history_days`` before ``start``: the customers it acquired then (as many as
    the same daily volume would have brought, first seen evenly over that time) are already in the pool, so
    returning customers and account ages look like any later window of a running business (0: a launch).

    >>> data = generate(1_000, seed=3)
    >>> len(data), data.request(0)["customer_id"] == generate(1_000, seed=3).request(0)["customer_id"]
    (1000, True)
    """
    base_seq, drift_seq = np.random.SeedSequence(seed).spawn(2)
    rng, drng = np.random.default_rng(base_seq), np.random.default_rng(drift_seq)
    ts = _timestamps(rng, n, start, days)

    acquired_per_day = (1 - repeat_share) * n / days if days > 0 else 0.0
    existing = round(acquired_per_day * history_days)
    cust_no, _ = _assign(rng, n, repeat_share, existing, acquired_per_day * CUSTOMER_LIFETIME_DAYS)
    pool = _customers(rng, max(int(np.max(cust_no, initial=-1)) + 1, existing))
    first_seen = np.full(len(pool.latent), np.iinfo(np.int64).max)
    if existing:
        history_start = np.datetime64(start.replace(tzinfo=None), "s").astype(np.int64) - history_days * 86_400
        offsets = (np.arange(existing) + rng.random(existing)) / existing * (history_days * 86_400)
        first_seen[:existing] = history_start + offsets.astype(np.int64)
    np.minimum.at(first_seen, cust_no, ts.astype(np.int64))
    attrs = {f: getattr(pool, f)[cust_no] for f in _Customers.__slots__}
    first = first_seen[cust_no]
    cust_ids = np.array([f"cust_{seed}_{k:07d}" for k in cust_no.tolist()], dtype=object)

    for shift in (d for d in drifts if isinstance(d, CovariateShift)):
        begin = _start_index(shift, ts)
        rows = np.flatnonzero(drng.random(n - begin) < shift.share) + begin
        b_no, _ = _assign(
            drng, len(rows), repeat_share, lifetime=acquired_per_day * shift.share * CUSTOMER_LIFETIME_DAYS
        )
        b_pool = _customers(drng, int(np.max(b_no, initial=-1)) + 1, shift)
        b_first = np.full(len(b_pool.latent), np.iinfo(np.int64).max)
        np.minimum.at(b_first, b_no, ts[rows].astype(np.int64))
        for f in attrs:
            attrs[f][rows] = getattr(b_pool, f)[b_no]
        first[rows] = b_first[b_no]
        cust_ids[rows] = [f"cust_{seed}_s{begin}_{k:07d}" for k in b_no.tolist()]

    z = attrs["latent"]
    ts_int = ts.astype(np.int64)
    tenure = attrs["tenure0"] + (ts_int - first) // 86_400
    hour = (ts_int % 86_400) // 3_600
    days_since_epoch = ts_int // 86_400
    weekend = (days_since_epoch + 3) % 7 >= 5
    month = ts.astype("datetime64[M]").astype(np.int64) % 12 + 1
    holiday = month >= 11
    late_night = (hour >= 22) | (hour <= 5)

    category = rng.choice(5, size=n, p=[0.18, 0.30, 0.20, 0.20, 0.12])
    product_risk = (rng.random(n)[:, None] > np.cumsum(PRODUCT_RISK_BY_CATEGORY[category], axis=1)).sum(axis=1)
    amount = np.clip(np.round(CATEGORY_MEDIAN_AMOUNT[category] * np.exp(rng.normal(0, 0.6, n)), 2), 15.0, 2500.0)
    p_impulse = np.clip(0.10 + 0.45 * attrs["impulsivity"] + 0.08 * holiday + 0.05 * late_night, 0, 0.8)
    p_rushed = np.clip(0.04 + 0.25 * attrs["impulsivity"] + 0.10 * late_night, 0, 0.5)
    u = rng.random(n)
    context = np.where(u < p_impulse, 1, np.where(u < p_impulse + p_rushed, 2, 0))
    median_compare = np.array([150.0, 35.0, 15.0])[context]
    compare = np.round(median_compare * np.exp(rng.normal(0, 0.8, n) - 0.2 * z), 1)
    six = rng.random(n) < _sigmoid(-1.6 + 0.004 * (amount - 144.0) + 0.3 * z)
    installments = np.where(six, 6, 4)
    own_device = rng.random(n) < 0.8
    device = np.where(own_device, attrs["device"], rng.integers(0, 3, n))
    trusted = np.where(own_device, rng.random(n) < attrs["trust_p"], rng.random(n) < 0.15)
    provider_idx = np.where(rng.random(n) < 0.85, attrs["provider"], rng.choice(4, size=n, p=PROVIDER_WEIGHTS))
    provider = np.asarray(PAYMENT_PROVIDERS, dtype=object)[provider_idx]
    limit = CREDIT_LIMITS[attrs["limit"]]

    for new_cat in (d for d in drifts if isinstance(d, NewCategory)):
        begin = _start_index(new_cat, ts)
        hit = np.zeros(n, dtype=bool)
        hit[begin:] = drng.random(n - begin) < new_cat.share
        if new_cat.field == "payment_provider":
            provider[hit] = new_cat.value
        else:
            attrs.setdefault("_override_" + new_cat.field, np.full(n, None, dtype=object))[hit] = new_cat.value

    afford = amount / limit
    strain = amount / INCOME_MONTHLY[attrs["income"]]
    provider_effect = np.array([PROVIDER_EFFECT.get(p, UNKNOWN_PROVIDER_EFFECT) for p in provider.tolist()])
    untrusted = ~trusted
    logit = (
        DEFAULT_INTERCEPT
        + 1.05 * z
        + 2.0 * np.maximum(afford - 0.2, 0.0)
        + 1.3 * (afford > 0.45)
        + 6.0 * np.maximum(strain - 0.06, 0.0)
        + 0.6 * (tenure < 30)
        + (AGE_EFFECT if age_effect is None else np.asarray(age_effect, dtype=np.float64))[attrs["age"]]
        + 0.55 * (context == 1)
        + 0.5 * ((context == 1) & (attrs["income"] <= 1))
        + 0.8 * (context == 2)
        + 0.5 * (compare < 30)
        + 0.6 * untrusted
        + 0.9 * (late_night & untrusted)
        + 0.2 * weekend
        + 0.25 * holiday
        + 0.3 * six
        - 0.35 * np.log1p(tenure / 180.0)
        + 0.35 * (attrs["verification"] == 0)
        + 0.25 * (product_risk == 2)
        + provider_effect
    )
    probability = _sigmoid(logit)

    risk_score = np.round(
        _sigmoid(
            -1.0
            + 0.4 * z
            + 0.6 * afford
            + 0.3 * (context == 1)
            + 0.4 * (context == 2)
            + 0.2 * untrusted
            + rng.normal(0, 0.9, n)
        ),
        4,
    )
    risk_level = _bucket(risk_score, [0.3, 0.55, 0.75])
    scenario = np.where(
        (risk_score >= 0.7) | ((context == 2) & untrusted),
        3,
        np.where(afford >= 0.35, 2, np.where(context == 1, 1, 0)),
    )

    columns: dict[str, npt.NDArray[Any]] = {
        "transaction_id": np.array([f"txn_{seed}_{i:08d}" for i in range(n)], dtype=object),
        "customer_id": cust_ids,
        "amount": amount,
        "transaction_timestamp": np.char.add(np.datetime_as_string(ts, unit="s"), "Z").astype(object),
        "customer_credit_score_range": np.asarray(CREDIT_SCORE_RANGES, dtype=object)[attrs["credit"]],
        "customer_age_bracket": np.asarray(AGE_BRACKETS, dtype=object)[attrs["age"]],
        "customer_income_bracket": np.asarray(INCOME_BRACKETS, dtype=object)[attrs["income"]],
        "customer_verification_level": np.asarray(VERIFICATION_LEVELS, dtype=object)[attrs["verification"]],
        "customer_tenure_days": tenure.astype(np.int64),
        "device_type": np.asarray(DEVICE_TYPES, dtype=object)[device],
        "device_is_trusted": trusted.astype(bool),
        "product_category": np.asarray(PRODUCT_CATEGORIES, dtype=object)[category],
        "product_risk_category": np.asarray(PRODUCT_RISK_CATEGORIES, dtype=object)[product_risk],
        "risk_score": risk_score,
        "risk_level": np.asarray(RISK_LEVELS, dtype=object)[risk_level],
        "risk_scenario": np.asarray(RISK_SCENARIOS, dtype=object)[scenario],
        "payment_provider": provider,
        "installment_count": installments.astype(np.int64),
        "payment_credit_limit": limit,
        "price_comparison_time": compare,
        "purchase_context": np.asarray(PURCHASE_CONTEXTS, dtype=object)[context],
    }
    for key in [k for k in attrs if k.startswith("_override_")]:
        name = key.removeprefix("_override_")
        columns[name] = np.where(attrs[key] != None, attrs[key], columns[name])  # noqa: E711

    for concept in (d for d in drifts if isinstance(d, ConceptShift)):
        begin = _start_index(concept, ts)
        segment = np.ones(n, dtype=bool)
        for name, value in concept.segment.items():
            segment &= columns[name] == value
        segment[:begin] = False
        if concept.end_time is not None:
            segment[_start_index(ConceptShift(start_time=concept.end_time), ts) :] = False
        probability = np.where(segment, np.minimum(1.0, probability * concept.factor), probability)

    will_default = rng.random(n) < probability
    missed = np.where(will_default, rng.choice([14, 28, 42], size=n, p=[0.6, 0.28, 0.12]), -1)
    known_days = np.where(will_default, np.minimum(missed + rng.integers(0, 8, n), 42), rng.integers(21, 43, n))
    known_at = ts + (known_days * 86_400).astype("timedelta64[s]")
    return Dataset(
        columns=columns,
        will_default=will_default,
        days_to_first_missed_payment=missed.astype(np.int64),
        outcome_known_at=np.char.add(np.datetime_as_string(known_at, unit="s"), "Z"),
        true_probability=probability,
    )
