"""The local spool: an append-only file of event blocks kept while Redis cannot take them, replayed in order.

File format, one block after another::

    #B <seq> <stream> <count> <version>\\n
    <event JSON>\\n   (count lines; JSON never contains a raw newline)

``<version>`` is the events' schema version (files written before it existed have four header words: version 1).

``<path>.offset`` holds the byte offset up to which blocks are confirmed in Redis (written after each replayed
block; replay is idempotent, so a stale offset only re-sends blocks Redis then skips). A block cut short by a crash
is truncated at open. One process owns a spool file (``flock``); a second one fails fast.

The spool holds every event not yet in Redis (ids, requests, scores): its directory is 0700 and its files 0600,
whatever the process umask.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class SpoolLockedError(RuntimeError):
    """Another process owns this spool file, or its directory is not private."""


@dataclass(frozen=True, slots=True)
class SpoolBlock:
    """A block read back from the spool, and the offset just after it."""

    seq: int
    stream: str
    events: list[bytes]
    end: int
    version: int = 1


class Spool:
    """Append-only block file with a confirmed-offset marker."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = path.parent.stat().st_mode
        if mode & (stat.S_ISVTX | stat.S_IWOTH):  # /tmp and the like: never take those over
            raise SpoolLockedError(
                f"{path.parent} is shared (sticky or world-writable); give the spool a directory of its own"
            )
        os.chmod(path.parent, 0o700)  # mkdir's mode is masked by the umask, and the directory may be older
        self.path = path
        self._offset_path = path.with_name(path.name + ".offset")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        self._file: BinaryIO = os.fdopen(fd, "a+b")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise SpoolLockedError(f"{path} is used by another process (is BNPL_INSTANCE_ID unique?)") from None
        self._offset = int(self._offset_path.read_text() or 0) if self._offset_path.exists() else 0
        self._truncate_torn_tail()
        self._size = self._file.seek(0, os.SEEK_END)
        self._unsynced = False
        self.max_seq = max((b.seq for b in self._scan(self._offset)), default=0)

    # --- writing -------------------------------------------------------------------------------------------------
    def append(self, seq: int, stream: str, events: Sequence[bytes], version: int, flush: bool = False) -> None:
        """Buffer one block of events of schema ``version`` at the end of the file. ``flush`` hands it to the
        operating system now (it then survives the process being killed); it is durable after :meth:`sync`."""
        header = f"#B {seq} {stream} {len(events)} {version}\n".encode()
        data = header + b"".join(e + b"\n" for e in events)
        self._file.write(data)
        if flush:
            self._file.flush()
        self._size += len(data)
        self._unsynced = True
        self.max_seq = max(self.max_seq, seq)

    def sync(self) -> None:
        """Flush and fsync appended blocks (blocking: call from a thread on the event loop)."""
        if self._unsynced:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._unsynced = False

    # --- replaying -----------------------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        """True while some block is not confirmed in Redis."""
        return self._offset < self._size

    @property
    def pending_bytes(self) -> int:
        return self._size - self._offset

    def read(self, max_events: int) -> list[SpoolBlock]:
        """Unconfirmed blocks from the start, at least one, until ``max_events`` events are collected."""
        self._file.flush()
        blocks: list[SpoolBlock] = []
        total = 0
        for block in self._scan(self._offset):
            blocks.append(block)
            total += len(block.events)
            if total >= max_events:
                break
        return blocks

    def confirm(self, end: int) -> None:
        """Blocks up to byte ``end`` are in Redis. Truncates the file when everything is confirmed."""
        self._offset = end
        if self._offset >= self._size:
            self._file.flush()
            self._file.truncate(0)
            self._size = self._offset = 0
        tmp = self._offset_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(str(self._offset))
        tmp.replace(self._offset_path)

    def close(self) -> None:
        self.sync()
        self._file.close()

    # --- internals -----------------------------------------------------------------------------------------------
    def _scan(self, start: int) -> Iterator[SpoolBlock]:
        with self.path.open("rb") as reader:
            reader.seek(start)
            while True:
                header = reader.readline()
                if not header.startswith(b"#B ") or not header.endswith(b"\n"):
                    return
                _, seq, stream, count, *version = header.decode().split()
                events = [reader.readline() for _ in range(int(count))]
                if not events or any(not e.endswith(b"\n") for e in events):
                    return  # torn block at the tail
                yield SpoolBlock(
                    int(seq), stream, [e[:-1] for e in events], reader.tell(), int(version[0]) if version else 1
                )

    def _truncate_torn_tail(self) -> None:
        size = self._file.seek(0, os.SEEK_END)
        if self._offset > size:  # offset from an older, truncated file
            self._offset = 0
        good_end = self._offset
        for block in self._scan(self._offset):
            good_end = block.end
        if good_end < size:
            self._file.truncate(good_end)
