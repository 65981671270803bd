"""Request-body schemas: the Workload Management v5 PATCH body, or any JSON object.

A workload body is checked by hand, in the fields' order (the order pydantic gives them, so
bodies and their fingerprints are what they were): a valid row costs a few type tests and never
imports pydantic, which was a third of the engine's import time and so of the time to the first
request. A body the check would refuse goes to the pydantic type in ``workload_model.py``, whose
reasons (``name: Input should be a valid string``) the user reads; if pydantic accepts it after
all, its answer is taken.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from bulkpatch.rows.workload_model import WorkloadPatch as WorkloadPatch

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
#: the fields a workload PATCH body may have, in the order a checked body has them
WORKLOAD_FIELDS: tuple[str, ...] = ("name", "attributes", "client_id", "allowed_actions", "enabled")
_FIELD_SET = frozenset(WORKLOAD_FIELDS)


class Schema(StrEnum):
    """How each request body is checked before it is sent."""

    #: the Workload Management v5 PATCH body; unknown fields are an error
    WORKLOAD = "workload"
    #: any JSON object
    ANY = "any"


class _Refused(Exception):
    """The hand check says no: pydantic says why."""


def _text(value: Any) -> str:
    if type(value) is not str:
        raise _Refused
    return value


def _object(value: Any) -> dict[str, Any]:
    if type(value) is str and value.lstrip().startswith("{"):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise _Refused from None
    if type(value) is not dict or not all(type(key) is str for key in value):
        raise _Refused
    return value


def _strings(value: Any) -> list[str]:
    if type(value) is str:
        text = value.strip()
        if text.startswith("["):
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise _Refused from None
        else:
            return [item.strip() for item in text.split(";") if item.strip()]
    if type(value) is not list or not all(type(item) is str for item in value):
        raise _Refused
    return value


def _bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if type(value) is str:
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _Refused


_CHECKS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("name", _text),
    ("attributes", _object),
    ("client_id", _text),
    ("allowed_actions", _strings),
    ("enabled", _bool),
)


def _check_workload(body: dict[str, Any]) -> dict[str, Any]:
    if not _FIELD_SET.issuperset(body):
        return _pydantic_says(body)
    checked: dict[str, Any] = {}
    try:
        for name, check in _CHECKS:
            if name in body:
                checked[name] = check(body[name])
    except _Refused:
        return _pydantic_says(body)
    return checked


def _pydantic_says(body: dict[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    from bulkpatch.rows.workload_model import WORKLOAD

    try:
        return WORKLOAD.validate_python(body)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ValueError(_one_line(exc)) from None


def validator_for(schema: Schema) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Return a function that checks a body and returns it, or raises ``ValueError``."""
    if schema is Schema.ANY:
        return _accept_any
    return _check_workload


def _accept_any(body: dict[str, Any]) -> dict[str, Any]:
    return body


def _one_line(exc: Any) -> str:
    """Summarise a pydantic ``ValidationError`` as ``field: reason; field: reason``."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = f"unknown field (allowed: {', '.join(WORKLOAD_FIELDS)})"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def __getattr__(name: str) -> Any:
    if name == "WorkloadPatch":  # the public type, built on demand: it imports pydantic
        from bulkpatch.rows.workload_model import WorkloadPatch

        return WorkloadPatch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
