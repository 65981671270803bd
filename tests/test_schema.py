"""The workload body check: by hand for speed, and exactly what the pydantic type says."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from bulkpatch.rows.schema import Schema, _one_line, validator_for
from bulkpatch.rows.workload_model import WORKLOAD

BODIES: list[dict[str, Any]] = [
    {"name": "db-01"},
    {"enabled": "true", "name": "x", "attributes": {"b": 1}, "allowed_actions": "a; b;"},
    {"attributes": '{"z": [1, 2]}', "client_id": "c"},
    {"allowed_actions": '["x", "y"]', "enabled": " NO "},
    {"enabled": True, "allowed_actions": []},
    {"name": 5},
    {"name": "x", "colour": "red"},
    {"allowed_actions": [1]},
    {"allowed_actions": "[1"},
    {"attributes": [1]},
    {"attributes": "{nope"},
    {"attributes": "plain text"},
    {"enabled": 1},
    {"enabled": "maybe"},
    {"enabled": None},
]


@pytest.mark.parametrize("body", BODIES)
def test_the_hand_check_says_what_pydantic_says(body: dict[str, Any]) -> None:
    check = validator_for(Schema.WORKLOAD)
    try:
        expected: Any = orjson.dumps(WORKLOAD.validate_python(dict(body)))
    except ValidationError as exc:
        expected = _one_line(exc)
    try:
        got: Any = orjson.dumps(check(dict(body)))  # the bytes sent, so the key order too
    except ValueError as exc:
        got = str(exc)
    assert got == expected


@pytest.mark.slow
def test_a_valid_row_does_not_import_pydantic() -> None:
    code = (
        "import sys; from bulkpatch.rows.schema import Schema, validator_for;"
        " validator_for(Schema.WORKLOAD)({'name': 'x', 'enabled': 'yes'});"
        " assert 'pydantic' not in sys.modules, 'pydantic imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
