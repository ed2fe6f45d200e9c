"""The one place Redis clients are created: every process and tool connects through :func:`connect`.

Timeouts differ by role: the API must never wait long on Redis (its publisher spools instead), a consumer worker
may wait longer for a blocking read. Nothing connects at import or at construction: redis-py connects lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from common.settings import StreamSettings

Role = Literal["api", "worker", "tool"]

#: socket timeout, connect timeout (seconds) per role. A worker's socket timeout must exceed its longest
#: blocking read (``BNPL_CONSUMER_BLOCK_MS``).
TIMEOUTS: Final[dict[str, tuple[float, float]]] = {"api": (2.0, 1.0), "worker": (10.0, 2.0), "tool": (10.0, 2.0)}


def require_url(url: str) -> str:
    """``url``, or a clear error when no Redis is configured."""
    if not url:
        raise SystemExit("set BNPL_REDIS_URL (bnpl serve prints the URL of its embedded redis-server)")
    return url


def connect(url: str, role: Role = "tool", cluster: bool = False) -> Any:
    """An asyncio client for ``url``: ``redis.asyncio.Redis``, or with ``cluster`` a
    ``redis.asyncio.cluster.RedisCluster`` seeded from that node (it discovers the others, follows MOVED/ASK and
    refreshes its slot map after a failover)."""
    from redis.asyncio import Redis

    socket_timeout, connect_timeout = TIMEOUTS[role]
    if cluster:
        from redis.asyncio.cluster import RedisCluster
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # The API retries once (after refreshing the slot map: a failover's new master) and then lets the error
        # reach the publisher, which spools at once; redis-py's default (10 attempts with backoff) would hold the
        # flush for many seconds while a master is down. Workers keep the default: they have nothing to spool.
        retry = {"retry": Retry(NoBackoff(), 1)} if role == "api" else {}
        return RedisCluster.from_url(
            require_url(url), socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout, **retry
        )
    return Redis.from_url(
        require_url(url),
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        health_check_interval=5 if role == "api" else 0,
        **_tool_retry(role, asyncio=True),
    )


def connect_sync(url: str, cluster: bool = False) -> Any:
    """A blocking client (``redis.Redis``, or with ``cluster`` ``redis.cluster.RedisCluster``), for command-line
    tools and reports."""
    import redis
    from redis.cluster import RedisCluster

    socket_timeout, connect_timeout = TIMEOUTS["tool"]
    client_class = RedisCluster if cluster else redis.Redis
    return client_class.from_url(
        require_url(url),
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        **({} if cluster else _tool_retry("tool", asyncio=False)),
    )


def _tool_retry(role: Role, asyncio: bool) -> dict[str, Any]:
    """A command-line tool retries a failed connection once, so an unreachable Redis is reported within about two
    connect timeouts (redis-py's default retries three times with backoff); processes keep the default."""
    if role != "tool":
        return {}
    from redis.backoff import ConstantBackoff

    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry

        return {"retry": AsyncRetry(ConstantBackoff(0.2), 1)}
    from redis.retry import Retry

    return {"retry": Retry(ConstantBackoff(0.2), 1)}


def redis_for(streams: StreamSettings, role: Role = "tool") -> Any:
    """The asyncio client of a deployment's Redis (``BNPL_REDIS_URL``; a cluster client with
    ``BNPL_REDIS_CLUSTER``)."""
    return connect(streams.redis_url, role, cluster=streams.redis_cluster)


def redis_for_sync(streams: StreamSettings) -> Any:
    """The blocking client of a deployment's Redis (command-line tools and reports)."""
    return connect_sync(streams.redis_url, cluster=streams.redis_cluster)


def text(value: Any) -> str:
    """A Redis reply field as text (replies are bytes unless the client decodes them).

    >>> text(b"warehouse"), text("mlflow"), text(3)
    ('warehouse', 'mlflow', '3')
    """
    return value.decode() if isinstance(value, bytes) else str(value)
