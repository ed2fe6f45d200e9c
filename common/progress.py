"""Human progress lines for long CLI steps (stderr, so reports on stdout stay clean)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def step(label: str) -> Iterator[None]:
    """Print ``label …`` now and ``done in Xs`` when the block ends, so slow steps never look hung."""
    start = time.perf_counter()
    print(f"  • {label} …", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        print(f"    done in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
