"""Consumer-test helpers (shared with the benchmarks in ``producers.synthetic``)."""

from producers.synthetic import add_events, make_events, wait_group_drained

__all__ = ["add_events", "make_events", "wait_group_drained"]
