"""Starting, stopping and supervising the system's own processes: ``bnpl serve`` and ``bnpl consume`` with
``--workers N``, the demo and the benchmarks."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.settings import Settings

BIN = Path(sys.executable).parent
log = logging.getLogger(__name__)


def bnpl_command(settings: Settings, *args: str) -> list[str]:
    """``bnpl <args>`` for a child process, with this process's data dir and tracking URI (flags win over env)."""
    return [
        sys.executable,
        "-m",
        "bnpl_cli.main",
        "--data-dir",
        str(settings.data_dir),
        "--tracking-uri",
        settings.registry.tracking_uri,
        *args,
    ]


def wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 90.0) -> None:
    """Wait until ``url`` answers 200, failing early if ``proc`` exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback only
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {seconds:.0f}s")


def start(args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a child process with the venv's bin first on PATH, output to ``log_path``."""
    full_env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **env}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(  # noqa: S603 - our own executables, argument lists (no shell)
            args,
            env=full_env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM (graceful: the API flushes its events), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass(slots=True)
class Child:
    """One supervised child process: its slot, the current process, how often it was restarted."""

    slot: int
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float | None = None  # when a dead child is due to be started again

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env={**os.environ, **env})  # noqa: S603 - our own command lines


def supervise(
    commands: list[tuple[list[str], dict[str, str]]],
    beat: Callable[[list[Child]], None] | None = None,
    poll_s: float = 0.2,
    max_backoff_s: float = 30.0,
) -> int:
    """Run one child per (args, extra env) and keep them running: a child that exits is restarted with backoff
    (1 s doubling to ``max_backoff_s``, reset once a child has run for a minute) and logged. ``beat`` is called
    about every second with the children (health reporting). SIGTERM/SIGINT are forwarded to every child (each
    does its own two-stage shutdown) and stop restarts. Returns the worst exit code once all have exited."""
    children = [Child(i, args, env, _spawn(args, env)) for i, (args, env) in enumerate(commands)]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.alive:
                child.proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    last_beat = 0.0
    while True:
        now = time.monotonic()
        for child in children:
            if child.alive or stopping:
                continue
            if child.restart_at is None:
                code = child.proc.returncode
                lived = now - child.started_at
                backoff = 1.0 if lived > 60 else min(max_backoff_s, 2.0 ** min(child.restarts, 5))
                child.restart_at = now + backoff
                log.error(
                    "worker %d (pid %d) exited with %d after %.0fs; restarting in %.0fs (restart %d)",
                    child.slot,
                    child.proc.pid,
                    code,
                    lived,
                    backoff,
                    child.restarts + 1,
                )
            elif now >= child.restart_at:
                child.proc = _spawn(child.args, child.env)
                child.restarts += 1
                child.started_at, child.restart_at = now, None
                log.warning("worker %d restarted as pid %d", child.slot, child.proc.pid)
        if beat is not None and now - last_beat >= 1.0:
            last_beat = now
            try:
                beat(children)
            except Exception:  # reporting must never stop supervising
                log.exception("supervisor health report failed")
        if stopping and not any(child.alive for child in children):
            return max([child.proc.returncode for child in children] + [0])
        time.sleep(poll_s)
