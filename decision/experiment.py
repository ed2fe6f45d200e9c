"""Deterministic, server-side A/B assignment: hash(salt, customer_id) → bucket → arm.

blake2b is used (not Python's ``hash``, which is salted per process), so the same customer lands in the same arm in
every process, replica and restart, for as long as the experiment's salt and allocation stay the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Experiment:
    """An active experiment: arms are registry aliases with traffic shares summing to 1."""

    experiment_id: str
    name: str
    salt: str
    allocation: tuple[tuple[str, float], ...]
    #: Registry alias deciding for each arm; an arm without an entry is itself an alias.
    arm_models: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        total = sum(share for _, share in self.allocation)
        if not self.allocation or abs(total - 1.0) > 1e-6 or any(s < 0 for _, s in self.allocation):
            raise ValueError(f"traffic allocation must be non-negative and sum to 1, got {self.allocation}")

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(arm for arm, _ in self.allocation)

    def model_for(self, arm: str) -> str:
        """The registry alias that decides for ``arm``."""
        return dict(self.arm_models).get(arm, arm)

    def bucket(self, customer_id: str) -> int:
        """Stable bucket 0 … 9,999 of a customer in this experiment."""
        digest = hashlib.blake2b(f"{self.salt}:{customer_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % BUCKETS

    def assign(self, customer_id: str) -> str:
        """The arm of ``customer_id``.

        >>> Experiment("1", "x", "salt", (("champion", 0.5), ("challenger", 0.5))).assign("cust_1")
        'champion'
        """
        point = self.bucket(customer_id) / BUCKETS
        cumulative = 0.0
        for arm, share in self.allocation:
            cumulative += share
            if point < cumulative:
                return arm
        return self.allocation[-1][0]


def parse_arm_models(text: str) -> tuple[tuple[str, str], ...]:
    """Parse ``"control=champion,treatment=challenger"``.

    >>> parse_arm_models("control=champion, treatment=challenger")
    (('control', 'champion'), ('treatment', 'challenger'))
    """
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        arm, _, alias = part.partition("=")
        if not arm or not alias:
            raise ValueError(f"expected arm=alias pairs, got {text!r}")
        pairs.append((arm.strip(), alias.strip()))
    return tuple(pairs)


def parse_allocation(text: str) -> tuple[tuple[str, float], ...]:
    """Parse ``"champion:0.7,challenger:0.3"``.

    >>> parse_allocation("champion:0.7, challenger:0.3")
    (('champion', 0.7), ('challenger', 0.3))
    """
    pairs = []
    for part in text.split(","):
        arm, _, share = part.strip().partition(":")
        if not arm or not share:
            raise ValueError(f"expected arm:share pairs, got {text!r}")
        pairs.append((arm.strip(), float(share)))
    return tuple(pairs)
