"""Consumer-test helpers: the load tools' events on a stream, and waiting for a group to drain."""

from consumers.status import wait_drained as wait_group_drained
from traffic.events import add_events, make_events

__all__ = ["add_events", "make_events", "wait_group_drained"]
