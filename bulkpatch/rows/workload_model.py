"""The Workload Management v5 PATCH body as a pydantic type: the reference for ``schema.py``.

``schema.py`` checks every body by hand (a valid row never imports pydantic, which cost a third of
the engine's import time) and asks this type only about a body it would refuse, so that the
reasons a user reads are pydantic's, field by field. ``bulkpatch.WorkloadPatch`` is this type.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BeforeValidator, ConfigDict, StrictBool, TypeAdapter
from typing_extensions import TypedDict

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def bool_from_text(value: object) -> object:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected true/false/1/0/yes/no, got {value!r}")
    return value


def list_from_text(value: object) -> object:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                raise ValueError("not a valid JSON array") from None
        return [item.strip() for item in text.split(";") if item.strip()]
    return value


def object_from_text(value: object) -> object:
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
    attributes: Annotated[dict[str, Any], BeforeValidator(object_from_text)]
    client_id: str
    allowed_actions: Annotated[list[str], BeforeValidator(list_from_text)]
    enabled: Annotated[StrictBool, BeforeValidator(bool_from_text)]


WORKLOAD = TypeAdapter(WorkloadPatch)
