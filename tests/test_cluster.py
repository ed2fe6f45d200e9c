"""The decision API on a real Redis Cluster (3 masters + 3 replicas on free ports): events land in hash-tagged
shard streams spread evenly over the masters, each exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from common.keys import decode_entry, slot_of
from common.redis_client import redis_for_sync
from common.redis_server import RedisClusterServers
from datagen import generate
from decision.engine import DecisionEngine
from tests.conftest import api_settings, start_api
from traffic.http import simulate


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster")).start()
    yield servers
    servers.stop()


def _owner(client: RedisCluster, key: str) -> str:
    node = client.get_node_from_key(key)
    return f"{node.host}:{node.port}"


@pytest.mark.parametrize("shards", [1, 6])
async def test_api_publishes_every_decision_once_into_shards_spread_over_the_masters(
    cluster, shards, tmp_path: Path, key_prefix, loaded_models
):
    settings = api_settings(tmp_path, cluster.url, key_prefix, redis_cluster=True, stream_shards=shards)
    api, stop = await start_api(settings, DecisionEngine(loaded_models))
    data = generate(1_000, seed=shards)
    try:
        result = await simulate(api.url("/"), data.iter_requests(), api_key="test-key", connections=8)
    finally:
        await stop()  # the publisher drains on shutdown
    assert result.statuses == Counter({200: 1_000})
    client = redis_for_sync(settings.streams)  # what the CLI tools use: a cluster client here
    assert isinstance(client, RedisCluster)
    try:
        keys = settings.keys
        streams = keys.prediction_streams()
        ids = [decode_entry(f).record_id for s in streams for _, f in client.xrange(s)]
        owners = Counter(_owner(client, s) for s in streams)
        masters = {f"127.0.0.1:{m.port}" for m in cluster.masters()}
    finally:
        client.close()
    assert sorted(ids) == sorted(result.prediction_ids)  # Σ XLEN = 1,000, no id twice
    assert len({slot_of(s) for s in streams}) == shards
    if shards == 6:
        assert set(owners) == masters
        assert set(owners.values()) == {2}  # two shards on each of the three masters
