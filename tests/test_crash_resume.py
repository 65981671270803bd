"""Kill a real ``bulkpatch run`` process mid-way, then resume it: nothing lost, little re-sent.

The client runs as a subprocess; the mock API runs in this process on 127.0.0.1 and counts every
PATCH per workload, so duplicates are measured at the server.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from helpers import ThreadedMock, spawn_run, write

from bulkpatch.mock import MockConfig
from bulkpatch.mock.store import sample_workloads
from bulkpatch.records.ledger import Status
from bulkpatch.records.resume import LedgerIndex

pytestmark = pytest.mark.slow  # real processes, killed and resumed

ROWS = 6000
CONCURRENCY = 32


def start(source: Path, mock: ThreadedMock, processes: int = 1) -> subprocess.Popen[bytes]:
    return spawn_run(source, mock.url, "--concurrency", str(CONCURRENCY), "--processes", str(processes))


def wait_until(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def fleet(tmp_path: Path) -> tuple[Path, MockConfig]:
    workloads = list(sample_workloads(ROWS))
    seed = tmp_path / "seed.jsonl"
    seed.write_bytes(b"".join(orjson.dumps(w) + b"\n" for w in workloads))
    rows = "".join(f"{w['id']},moved-{i}\n" for i, w in enumerate(workloads))
    source = write(tmp_path / "fleet.csv", "workload_id,name\n" + rows)
    return source, MockConfig(require_auth=False, seed_file=str(seed), latency_ms=2)


def check_all_applied(mock: ThreadedMock, source: Path) -> None:
    for i, w in enumerate(sample_workloads(ROWS)):
        stored = mock.api.store.get(w["id"])
        assert stored is not None and stored["name"] == f"moved-{i}"
    index = LedgerIndex.load(f"{source}.ledger.jsonl")
    assert index.counts()[Status.OK] == ROWS


@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_then_resume_loses_nothing(tmp_path: Path, processes: int) -> None:
    source, config = fleet(tmp_path)
    with ThreadedMock(config) as mock:
        proc = start(source, mock, processes)
        wait_until(lambda: sum(mock.api.counters.patches.values()) >= ROWS * 0.4)
        proc.kill()
        proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        resumed = start(source, mock, processes)
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err.decode()
        check_all_applied(mock, source)
        patches = mock.api.counters.patches
        duplicates = sum(n - 1 for n in patches.values())
        assert len(patches) == ROWS
        # At most the rows in flight at the kill (plus a ledger write in progress) are sent twice.
        assert duplicates <= 4 * CONCURRENCY, duplicates


def test_sigint_drains_exits_130_and_resume_completes(tmp_path: Path) -> None:
    source, config = fleet(tmp_path)
    with ThreadedMock(config) as mock:
        proc = start(source, mock)
        wait_until(lambda: sum(mock.api.counters.patches.values()) >= ROWS * 0.3)
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - stopped_at < 10
        assert proc.returncode == 130, err.decode()
        assert b"Traceback" not in err
        assert b"resume with: bulkpatch run" in out
        done = LedgerIndex.load(f"{source}.ledger.jsonl").counts()[Status.OK]
        assert ROWS * 0.3 <= done < ROWS
        resumed = start(source, mock)
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err.decode()
        check_all_applied(mock, source)
        # A graceful stop records every row it sent: nothing is sent twice.
        assert sum(n - 1 for n in mock.api.counters.patches.values()) == 0
