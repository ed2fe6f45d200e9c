"""A PATH without ``redis-server``: every other program of the current PATH, linked into one directory."""

from __future__ import annotations

import os
from pathlib import Path

HIDDEN = ("redis-server", "redis-cli", "redis-check-aof", "redis-check-rdb", "redis-benchmark", "redis-sentinel")


def path_without_redis(directory: Path) -> str:
    """A one-directory PATH holding links to every executable on PATH except Redis's own (first one wins)."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        folder = Path(entry)
        if not folder.is_dir():
            continue
        for program in folder.iterdir():
            target = directory / program.name
            if program.name in HIDDEN or target.exists() or target.is_symlink():
                continue
            if program.is_file() and os.access(program, os.X_OK):
                target.symlink_to(program.resolve())
    return str(directory)
