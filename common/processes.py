"""Starting and stopping the system's own processes (demo, benchmarks): ``bnpl serve`` and friends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.settings import Settings

BIN = Path(sys.executable).parent


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


def run_children(commands: list[tuple[list[str], dict[str, str]]]) -> int:
    """Run one child per (args, extra env) and wait for all; SIGTERM/SIGINT are forwarded to every child
    (each then does its own two-stage shutdown). Returns the worst exit code."""
    children = [
        subprocess.Popen(args, env={**os.environ, **env})  # noqa: S603 - our own command lines
        for args, env in commands
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(child.wait() for child in children)
