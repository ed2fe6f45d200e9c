"""The guardian on real performance analyses of simulated weeks (models from the session registry), plus its
probation and cooldown bookkeeping read from the audit trail."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from analysis.performance import delong, paired_test
from governance.audit import GUARDIAN, ModelEvent
from governance.guardian import GuardianState


def _event(action: str, frm: str, to: str, when: str, alias: str = "champion", actor: str = GUARDIAN) -> ModelEvent:
    return ModelEvent("m", action, actor, alias, frm, to, True, "r", {"analysis_date": when})


def test_probation_and_cooldown_come_from_the_audit_trail():
    week = timedelta(days=7)
    switched = [
        _event("promote", "1", "3", "2026-01-05", actor="ops@host"),
        _event("auto_switch", "3", "4", "2026-03-02"),
        _event("auto_switch", "4", "3", "2026-03-02", alias="challenger"),
    ]
    state = GuardianState.from_history(switched, "champion")
    assert state.last_switch is not None
    assert (state.last_switch.from_version, state.last_switch.to_version) == ("3", "4")
    assert state.on_probation("4", date(2026, 3, 16), week, 3)
    assert state.on_probation("4", date(2026, 3, 23), week, 3)
    assert not state.on_probation("4", date(2026, 3, 30), week, 3)  # three analyses later: probation over
    assert not state.on_probation("3", date(2026, 3, 9), week, 3)  # someone else's champion now
    assert state.cooling_down(date(2026, 3, 29), 28)
    assert not state.cooling_down(date(2026, 3, 30), 28)
    rolled = GuardianState.from_history([*switched, _event("rollback", "4", "3", "2026-03-09")], "champion")
    assert rolled.rolled_back
    assert not rolled.on_probation("3", date(2026, 3, 16), week, 3)
    assert GuardianState.from_history(switched[:1], "champion").last_switch is None  # a person's change
    overruled = GuardianState.from_history(
        [*switched, _event("promote", "4", "3", "2026-03-09", actor="ops")], "champion"
    )
    assert overruled.last_switch is None  # a person's later decision resets probation and cooldown
    assert not overruled.cooling_down(date(2026, 3, 10), 28)


@pytest.mark.parametrize("clustered", [False, True])
def test_clustered_paired_auc_test_holds_its_size_when_customers_repeat(clustered):
    """Two equally good scores on loans of repeating customers (risk shared within a customer): the one-sided
    paired test at α = 0.05 must reject about 5 % of the time. Unclustered, it rejects too often."""
    rng = np.random.default_rng(7)
    rejections, runs = 0, 300
    for _ in range(runs):
        customers = 600
        loans = rng.integers(4, 20, customers)  # repeat customers: 4–19 loans each
        c = np.repeat(np.arange(customers), loans)
        risk = rng.normal(0, 1, customers)
        # Each model mis-ranks a customer by its own customer-level error: errors repeat with the customer.
        err_a, err_b = rng.normal(0, 0.8, customers), rng.normal(0, 0.8, customers)
        y = rng.random(c.size) < 1 / (1 + np.exp(-(1.2 * risk[c] - 1.0)))
        a = risk[c] + err_a[c] + rng.normal(0, 0.1, c.size)
        b = risk[c] + err_b[c] + rng.normal(0, 0.1, c.size)
        t = paired_test(delong(y, np.vstack([a, b]), c if clustered else None))
        rejections += int(t.z > 1.645)
    rate = rejections / runs
    if clustered:
        assert 0.02 <= rate <= 0.09, rate
    else:
        assert rate > 0.10, rate  # the false-switch rate the clustering prevents
