"""How the publisher reads a failed Redis write: every failure spools the block; the class decides the log line.

* **retryable in place**: the server is down, restarting, loading, full (``OOM`` under ``noeviction``), read-only
  (a replica after failover), or a cluster is re-sharding (``TRYAGAIN``, ``CLUSTERDOWN``). Writes resume by themselves
  once Redis takes them again. Under ``OOM`` or ``READONLY`` Redis refuses a script's first write, so a block is
  written whole or not at all.
* **misconfigured**: the client talks to the wrong thing: a cluster node redirects (``MOVED``/``ASK``), keys span
  slots (``CROSSSLOT``), the user lacks permissions, the password is wrong. Logged loudly; blocks still spool and
  retry, so fixing the configuration and restarting loses nothing.
* **unexpected**: anything else (a bug, a script error); logged with its traceback, spooled, retried.
"""

from __future__ import annotations

from typing import Final, Literal

from redis import exceptions as redis_errors

Kind = Literal["retryable", "misconfigured", "unexpected"]

MISCONFIGURED: Final = (
    redis_errors.MovedError,
    redis_errors.AskError,
    redis_errors.ClusterCrossSlotError,
    redis_errors.NoPermissionError,
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
)
RETRYABLE: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.MasterDownError,
    OSError,
)
#: Reply prefixes that mean "retry later" or "wrong setup" when redis-py has no class for them.
_RETRYABLE_REPLIES: Final = ("OOM", "READONLY", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "BUSY")
_MISCONFIGURED_REPLIES: Final = ("MOVED", "ASK", "CROSSSLOT", "NOPERM", "WRONGPASS", "NOAUTH", "WRONGTYPE")


def classify(exc: BaseException) -> Kind:
    """The kind of a failed write.

    >>> classify(redis_errors.OutOfMemoryError("OOM command not allowed")), classify(redis_errors.MovedError("1 a:1"))
    ('retryable', 'misconfigured')
    >>> classify(redis_errors.ResponseError("CROSSSLOT Keys in request don't hash to the same slot"))
    'misconfigured'
    """
    if isinstance(exc, MISCONFIGURED):
        return "misconfigured"
    if isinstance(exc, RETRYABLE):
        return "retryable"
    if isinstance(exc, redis_errors.ResponseError):
        reply = str(exc).lstrip()
        if reply.startswith(_MISCONFIGURED_REPLIES):
            return "misconfigured"
        if reply.startswith(_RETRYABLE_REPLIES):
            return "retryable"
    return "unexpected"
