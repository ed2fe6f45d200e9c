"""The warehouse group's DuckDB writer holds its connection across batches (``BNPL_DUCKDB_HOLD_S``) and still lets
other processes at the file; every event lands once whatever the releases in between."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import msgspec
import orjson

from traffic.events import make_events
from warehouse.duckdb_store import DuckDBWarehouse

#: Another process: count the rows (waiting for the file up to argv[2] seconds while the writer holds it).
READER = (
    "import sys; from pathlib import Path; from warehouse.duckdb_store import DuckDBWarehouse; "
    "store = DuckDBWarehouse(Path(sys.argv[1]), lock_timeout_s=float(sys.argv[2])); "
    "print(store.query('SELECT count(*) FROM prediction_logs')[0][0])"
)


def _read(path: Path, wait_s: float = 30.0, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", READER, str(path), str(wait_s)], capture_output=True, text=True, **kwargs
    )


def _payloads(n: int, seed: int) -> list[bytes]:
    return [orjson.dumps(msgspec.to_builtins(e)) for e in make_events(n, seed=seed)]


def _count(path: Path) -> tuple[int, int]:
    (row,) = DuckDBWarehouse(path).query("SELECT count(*), count(DISTINCT prediction_id) FROM prediction_logs")
    return int(row[0]), int(row[1])


def test_a_holding_writer_lets_another_process_read_while_batches_keep_coming(tmp_path):
    path = tmp_path / "wh.duckdb"
    DuckDBWarehouse(path).ensure_tables()
    writer = DuckDBWarehouse(path, hold_s=0.5)
    batches = [_payloads(50, seed=s) for s in range(40)]
    writer.insert_events(batches[0])  # the file is held from here on
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), "30"], stdout=subprocess.PIPE, text=True)
    for batch in batches[1:]:  # a batch every 50 ms: the writer is never idle, only its hold runs out
        writer.insert_events(batch)
        time.sleep(0.05)
    out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0
    assert 50 <= int(out) <= 2_000  # it got in between two holds, and saw what was committed by then
    writer.close()
    assert _count(path) == (2_000, 2_000)


def test_an_idle_writer_releases_the_file_and_a_redelivered_batch_adds_nothing(tmp_path):
    path = tmp_path / "wh.duckdb"
    DuckDBWarehouse(path).ensure_tables()
    writer = DuckDBWarehouse(path, hold_s=3_600)  # a hold that never runs out: only idleness releases
    batch = _payloads(300, seed=7)
    result, rejected = writer.insert_events(batch)
    assert (result.inserted, rejected) == (300, {})
    writer.release_idle()  # just written: not idle yet, the file stays held
    held = _read(path, wait_s=0.3, check=False)
    assert held.returncode != 0
    assert "lock" in held.stderr.lower()
    time.sleep(1.1)
    writer.release_idle()
    free = _read(path, check=True)
    assert int(free.stdout) == 300
    result, _ = writer.insert_events(batch)  # a redelivery after the release: a fresh connection, no new row
    assert (result.inserted, result.duplicates) == (0, 300)
    writer.close()
    assert _count(path) == (300, 300)
