"""CSV header columns: which field each one sets, and how its cells become JSON values.

CSV cells are text; an API behind ``--schema any`` may want a number, a boolean, a list or
null. A header may give a column a type (``rank:int``, ``ratio:float``, ``active:bool``,
``tags:json``, ``note:str``) and its cells are then parsed as that type; a column without one
sends its cells as strings, as before. In a typed column the cell ``null`` sends JSON null, which
clears the field on APIs that follow JSON Merge Patch; an empty cell leaves the field out, as in
any column. The columns that ``report --failed-out`` adds (``_status``...) set no field at all,
so that a fixed file can be run again as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bulkpatch.errors import ConfigError
from bulkpatch.rows.exact import INT_HIGH, INT_LOW

#: the CSV columns ``report --failed-out`` adds after the input's own; never sent
ANNOTATION_COLUMNS = ("_status", "_http_status", "_error", "_row")
#: the JSONL key ``report --failed-out`` adds to each record; never sent
ANNOTATION_KEY = "_bulkpatch"
#: the cell that sends JSON null in a typed column
NULL = "null"

_INT = re.compile(r"[+-]?[0-9]+").fullmatch
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?").fullmatch
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_TYPE_LIKE = re.compile(r"[A-Za-z]+").fullmatch


def _to_int(text: str) -> int:
    text = text.strip()
    if not _INT(text):
        raise ValueError(f"expected an integer, got {text!r}")
    value = int(text)
    if not INT_LOW < value < INT_HIGH:
        raise ValueError(f"integer out of range (64 bits), got {text!r}")
    return value


def _to_float(text: str) -> float:
    text = text.strip()
    if not _FLOAT(text):
        raise ValueError(f"expected a number, got {text!r}")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range, got {text!r}")
    return value


def _to_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"expected true/false/1/0/yes/no, got {text!r}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _to_json(text: str) -> Any:
    # The standard parser, not orjson: orjson reads a 30-digit integer as an imprecise float.
    try:
        return json.loads(text, parse_int=_to_int, parse_constant=_reject_constant)
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ValueError(f"expected JSON ({reason}), got {_clip(text)!r}") from None


def _to_str(text: str) -> str:
    return text


TYPES: dict[str, Callable[[str], Any]] = {
    "str": _to_str,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "json": _to_json,
}


@dataclass(frozen=True, slots=True)
class Column:
    """One header column."""

    #: as written in the header, e.g. ``attributes.rank:int``
    header: str
    #: the field it sets, e.g. ``attributes.rank``
    name: str
    #: the name split at dots, e.g. ``("attributes", "rank")``
    parts: tuple[str, ...]
    #: the type after the colon, or None for a plain text column
    type: str | None = None

    def parse(self, text: str) -> Any:
        """The JSON value of a (non-empty) cell; ``ValueError`` names the column and the reason."""
        if self.type is None:
            return text
        if text.strip() == NULL:
            return None
        try:
            return TYPES[self.type](text)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None


def read_header(header: Iterable[str], *, typed: bool) -> list[Column]:
    """The columns of a header that set fields (annotation columns are left out).

    ``typed`` False (the workload schema) refuses a type suffix: that schema has types of its own.
    """
    columns = []
    for text in header:
        if text in ANNOTATION_COLUMNS:
            continue
        name, type_ = text, None
        base, colon, suffix = text.rpartition(":")
        if colon and suffix in TYPES:
            name, type_ = base, suffix
        elif colon and _TYPE_LIKE(suffix):
            raise ConfigError(
                f"CSV column {text!r}: unknown type {suffix!r} (types: {', '.join(TYPES)};"
                f" to keep the colon in the name, write {text + ':str'!r})"
            )
        if type_ is not None and not typed:
            raise ConfigError(f"CSV column {text!r} has a type; column types need --schema any")
        if not name:
            raise ConfigError(f"CSV column {text!r} has a type but no name")
        parts = tuple(name.split("."))
        columns.append(Column(text, name, parts, type_))
    return columns


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
