"""Every Redis key name and the shard count, in one place.

With ``shards == 1`` keys are plain (``bnpl:predictions``). With more shards (Redis Cluster) each stream is split by
customer_id and every key of a shard carries the same hash tag, so a stream and its publish markers live in one slot:
``bnpl:predictions:{3}`` and ``bnpl:predictions:{3}:pub:<block>``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one deployment (``prefix`` separates deployments sharing a Redis)."""

    prefix: str = "bnpl"
    shards: int = 1

    def _shard_suffix(self, shard: int) -> str:
        return "" if self.shards == 1 else f":{{{shard}}}"

    def shard_of(self, customer_id: str) -> int:
        """Stable shard of a customer (crc32, identical in every process)."""
        return 0 if self.shards == 1 else zlib.crc32(customer_id.encode()) % self.shards

    def predictions(self, shard: int = 0) -> str:
        """The prediction-event stream of ``shard``."""
        return f"{self.prefix}:predictions{self._shard_suffix(shard)}"

    def prediction_streams(self) -> list[str]:
        """Every prediction-event stream (one per shard)."""
        return [self.predictions(s) for s in range(self.shards)]

    def publish_marker(self, stream: str, block_id: str) -> str:
        """Marker proving a block of events was appended to ``stream`` (same slot as the stream)."""
        return f"{stream}:pub:{block_id}"

    def alerts(self) -> str:
        """The alert stream: every alert, for audit and for the alert sender."""
        return f"{self.prefix}:alerts"

    def dead_letter(self, stream: str) -> str:
        """Dead-letter stream for entries of ``stream`` that failed too often."""
        return f"{stream}:dead"
