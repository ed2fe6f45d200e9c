"""Per-instance block sequence numbers, reserved on disk ahead of use so a restart never reuses one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

SEQ_RESERVATION: Final = 1_000_000


class SeqAllocator:
    """Hands out increasing block numbers; ``<spool>.seq`` holds the ceiling reserved so far (fsync'd)."""

    def __init__(self, path: Path, floor: int) -> None:
        self._path = path
        reserved = int(path.read_text()) if path.exists() else 0
        self._next = max(reserved, floor) + 1
        self._ceiling = 0
        self._reserve()

    def _reserve(self) -> None:
        self._ceiling = self._next + SEQ_RESERVATION
        tmp = self._path.with_suffix(".seqtmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(str(self._ceiling))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self._path)

    def raise_floor(self, floor: int) -> None:
        """Never hand out ``floor`` or anything below it (Redis has seen it)."""
        if floor >= self._next:
            self._next = floor + 1
            if self._next >= self._ceiling:
                self._reserve()

    def take(self) -> int:
        if self._next >= self._ceiling:
            self._reserve()
        seq = self._next
        self._next += 1
        return seq
