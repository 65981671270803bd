"""Request-body schemas: the Workload Management v5 PATCH body, or any JSON object.

A body is validated by one compiled pydantic ``TypeAdapter`` per schema, built once: a row costs
one call into pydantic-core, no model instance.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import BeforeValidator, ConfigDict, StrictBool, TypeAdapter, ValidationError
from typing_extensions import TypedDict

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class Schema(StrEnum):
    """How each request body is checked before it is sent."""

    #: the Workload Management v5 PATCH body; unknown fields are an error
    WORKLOAD = "workload"
    #: any JSON object
    ANY = "any"


def _bool_from_text(value: object) -> object:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected true/false/1/0/yes/no, got {value!r}")
    return value


def _list_from_text(value: object) -> object:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                raise ValueError("not a valid JSON array") from None
        return [item.strip() for item in text.split(";") if item.strip()]
    return value


def _object_from_text(value: object) -> object:
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError("not a valid JSON object") from None
    return value


class WorkloadPatch(TypedDict, total=False):
    """The body of ``PATCH /api/workload_management/v5/workloads/{workload_id}``.

    Every field is optional; an omitted field is left unchanged by the API. CSV text is coerced:
    ``enabled`` from true/false/1/0/yes/no, ``allowed_actions`` from a JSON array or a
    ``;``-separated list, ``attributes`` from a JSON object.
    """

    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    name: str
    attributes: Annotated[dict[str, Any], BeforeValidator(_object_from_text)]
    client_id: str
    allowed_actions: Annotated[list[str], BeforeValidator(_list_from_text)]
    enabled: Annotated[StrictBool, BeforeValidator(_bool_from_text)]


_WORKLOAD = TypeAdapter(WorkloadPatch)
#: the fields a workload PATCH body may have
WORKLOAD_FIELDS: tuple[str, ...] = tuple(WorkloadPatch.__annotations__)


def validator_for(schema: Schema) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Return a function that checks a body and returns it, or raises ``ValueError``."""
    if schema is Schema.ANY:
        return _accept_any
    validate = _WORKLOAD.validate_python

    def check_workload(body: dict[str, Any]) -> dict[str, Any]:
        try:
            return validate(body)  # type: ignore[return-value]
        except ValidationError as exc:
            raise ValueError(_one_line(exc)) from None

    return check_workload


def _accept_any(body: dict[str, Any]) -> dict[str, Any]:
    return body


def _one_line(exc: ValidationError) -> str:
    """Summarise a pydantic error as ``field: reason; field: reason``."""
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
