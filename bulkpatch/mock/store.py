"""The mock's workloads: an in-memory store with the API's shapes, seeded deterministically.

``sample_workloads(n)`` makes the same realistic fleet every time; the bundled samples and the
demo's migration are derived from it, so the demo's input always matches the mock's store.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import os
import random
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from bulkpatch.errors import ConfigError

WORKLOAD_TYPE = "cti.a.p.wm.workload.v1.0~a.p.wm.aspm.workload.v1.0~vendor.app.device.v1.0"
TENANT_ID = "f1b5e1a2-8c1e-4b7a-9d3e-0c2b7a9f4e11"
CLIENT_ID = "0d4c2f7e-5b1a-4e8f-9a6c-3e2d1b0a9f8e"
OPEN_CONSOLE = (
    "cti.a.ui.item.v1.0~a.ui.ext_p.workload_actions.action.v1.0~vendor.application.open_console.v1.0"
)
_NAMESPACE = uuid.UUID("6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b")
_SITES = ["fra1", "ams2", "lon3", "par1", "waw1"]
_OSES = ["Windows 11 Pro", "Windows Server 2022", "Ubuntu 24.04", "macOS 15", "RHEL 9"]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sample_workloads(count: int, *, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Yield ``count`` realistic workloads, the same ones for the same seed."""
    rng = random.Random(seed)
    for i in range(1, count + 1):
        kind = "LAPTOP" if i % 3 else "SRV"
        yield {
            "id": str(uuid.uuid5(_NAMESPACE, f"{seed}:{i}")),
            "type": WORKLOAD_TYPE,
            "name": f"corp-{kind.lower()}-{i:05d}",
            "attributes": {
                "hostname": f"CORP-{kind}-{i:05d}",
                "mac_address": ":".join(f"{rng.randrange(256):02x}" for _ in range(6)),
                "os": rng.choice(_OSES),
                "site": rng.choice(_SITES),
            },
            "client_id": CLIENT_ID,
            "allowed_actions": [OPEN_CONSOLE],
            "tenant_id": TENANT_ID,
            "external_id": f"cmdb-{100000 + i}",
            "agent_id": None,
            "created_at": "2026-01-05T09:00:00.000000Z",
            "updated_at": "2026-01-05T09:00:00.000000Z",
            "enabled": True,
            "is_auto_created": False,
            "aggregation_status": "ok",
        }


class WorkloadStore:
    """Workloads by id, with the list query's filters, include flags and cursors."""

    def __init__(self, workloads: Iterable[dict[str, Any]] = (), *, persist: str | None = None):
        self._items: dict[str, dict[str, Any]] = {}
        for workload in workloads:
            self._items[str(workload["id"])] = workload
        self._persist = persist
        #: the ids in order, built on the first page after a create or delete: a page then
        #: costs a bisect, not a sort of every id (1M workloads: ~0.4 s a page before)
        self._sorted: list[str] | None = None

    @classmethod
    def from_jsonl(cls, path: str, *, persist: str | None = None) -> WorkloadStore:
        """Load workloads from a JSON Lines file, one object with an ``id`` per line.

        Raises ``ConfigError`` naming the file and line for anything else (a CSV file, say), so
        ``bulkpatch mock --seed-file`` can say what is wrong in one line instead of a traceback.
        """
        try:
            with open(path, "rb") as f:
                lines = enumerate(f, 1)
                items = [_seed_workload(path, number, line) for number, line in lines if line.strip()]
        except OSError as exc:
            raise ConfigError(f"cannot read seed file {path}: {exc.strerror}") from None
        return cls(items, persist=persist)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, workload_id: str) -> dict[str, Any] | None:
        return self._items.get(workload_id)

    def create(self, item: dict[str, Any]) -> None:
        workload = {
            "id": str(item.get("id") or uuid.uuid4()),
            "type": item.get("type", WORKLOAD_TYPE),
            "name": item.get("name", ""),
            "attributes": dict(item.get("attributes") or {}),
            "client_id": item.get("client_id", CLIENT_ID),
            "allowed_actions": list(item.get("allowed_actions") or []),
            "tenant_id": item.get("tenant_id", TENANT_ID),
            "external_id": item.get("external_id"),
            "agent_id": None,
            "created_at": now_rfc3339(),
            "updated_at": now_rfc3339(),
            "enabled": item.get("enabled", True),
            "is_auto_created": False,
            "aggregation_status": "ok",
        }
        if workload["id"] not in self._items:
            self._sorted = None
        self._items[workload["id"]] = workload

    def update(self, workload_id: str, patch: dict[str, Any]) -> bool:
        workload = self._items.get(workload_id)
        if workload is None:
            return False
        for key, value in patch.items():
            if key == "attributes":
                # Undocumented whether the API merges or replaces: the mock merges key by key.
                workload["attributes"] = {**workload["attributes"], **value}
            else:
                workload[key] = value
        workload["updated_at"] = now_rfc3339()
        return True

    def delete(self, ids: Iterable[str]) -> None:
        for workload_id in ids:
            if self._items.pop(workload_id, None) is not None:
                self._sorted = None

    def page(
        self,
        *,
        ids: set[str] | None,
        limit: int,
        after: str | None,
        before: str | None,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """One page in id order, and the cursors to the neighbouring pages."""
        if ids is not None:
            keys = sorted(ids & self._items.keys())
        else:
            if self._sorted is None:
                self._sorted = sorted(self._items)
            keys = self._sorted
        if match is not None:
            # Filters scan: fine for a mock; the sorted index serves the unfiltered listing.
            keys = [k for k in keys if match(self._items[k])]
        if after is not None:
            start = bisect.bisect_right(keys, after)
            chosen = keys[start : start + limit]
            more_after = len(keys) - start > limit
            more_before = True
        elif before is not None:
            end = bisect.bisect_left(keys, before)
            chosen = keys[max(0, end - limit) : end]
            more_before = end > limit
            more_after = True
        else:
            chosen = keys[:limit]
            more_after = len(keys) > limit
            more_before = False
        cursors: dict[str, str] = {}
        if chosen and more_after:
            cursors["after"] = encode_cursor(chosen[-1])
        if chosen and more_before:
            cursors["before"] = encode_cursor(chosen[0])
        return [self._items[k] for k in chosen], cursors

    def save(self) -> None:
        """Write the store to its persistence file, if it has one (atomically)."""
        if not self._persist:
            return
        # Private (0600) like every file bulkpatch writes: the store is a tenant's inventory. A
        # fresh temporary name, so that no file of the user's (``store.jsonl.tmp``) is replaced.
        folder, name = os.path.split(os.path.abspath(self._persist))
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                for workload in self._items.values():
                    f.write(orjson.dumps(workload) + b"\n")
            os.replace(tmp, self._persist)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _seed_workload(path: str, number: int, line: bytes) -> dict[str, Any]:
    where = f"seed file {path}, line {number}"
    if number == 1:
        line = line.removeprefix(b"\xef\xbb\xbf")  # a BOM left by Windows editors
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ConfigError(f"{where}: not JSON (expected JSON Lines: one workload object per line)") from None
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a workload object, got a JSON {type(item).__name__}")
    workload_id = item.get("id")
    if not isinstance(workload_id, str | int) or isinstance(workload_id, bool) or workload_id == "":
        raise ConfigError(f'{where}: the workload has no "id" (a string)')
    # The handlers read these two as an object and an array: fail now rather than on a request.
    for key, kind in (("attributes", dict), ("allowed_actions", list)):
        value = item.setdefault(key, kind())
        if not isinstance(value, kind):
            raise ConfigError(f"{where}: {key!r} must be a JSON {'object' if kind is dict else 'array'}")
    return item


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"k": key})).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The key a cursor points past; raises ``ValueError`` for a cursor the store did not make."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = orjson.loads(base64.urlsafe_b64decode(padded))["k"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("invalid cursor") from None
    if not isinstance(key, str):
        raise ValueError("invalid cursor")
    return key
