"""Turn one input record into one HTTP request: the URL path from a template, the body from the rest.

The path template's ``{field}`` placeholders are filled from the record and percent-encoded as one
path segment each (``/``, ``?``, ``#`` and dot segments cannot escape it); those fields are not
sent in the body. CSV columns with dotted names nest (``attributes.hostname``), empty CSV cells are
left out, and the body is then checked against the schema.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from bulkpatch.errors import ConfigError
from bulkpatch.rows.columns import ANNOTATION_COLUMNS, ANNOTATION_KEY, Column, read_header
from bulkpatch.rows.exact import INT_HIGH, INT_LOW, LOWEST, inexact, is_text, shown, writable
from bulkpatch.rows.reader import Format, Record
from bulkpatch.rows.schema import WORKLOAD_FIELDS, Schema, validator_for

#: methods whose requests carry no body
BODYLESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+").fullmatch


@dataclass(slots=True)
class Request:
    """One row, ready to send."""

    row: int
    line: int
    #: the path fields' values joined by ``/``: the row's identity in the ledger and reports
    key: str
    #: the encoded path, to be joined to the base URL
    path: str
    #: the JSON body, or None for a method without one
    body: bytes | None
    #: fingerprint of method, URL and body (see ``resume.fingerprint``); 0 until the run sets it
    fp: int = 0


@dataclass(slots=True)
class Rejected:
    """A record that will not be sent, and why."""

    row: int
    line: int
    key: str
    #: ``"invalid"`` (cannot be sent as it is) or ``"skipped"`` (nothing to send)
    status: str
    reason: str


class PathTemplate:
    """A path such as ``/workloads/{workload_id}`` with placeholders filled per row."""

    def __init__(self, template: str) -> None:
        if not template.startswith("/"):
            raise ConfigError(f"--path must start with '/', got {template!r}")
        self.template = template
        self._parts: list[tuple[str, str | None]] = []
        try:
            for literal, field, spec, conversion in string.Formatter().parse(template):
                if field is not None and (spec or conversion or not field.isidentifier()):
                    raise ConfigError(f"--path placeholder {{{field}}} is not a plain field name")
                self._parts.append((literal, field))
        except ValueError as exc:
            raise ConfigError(f"--path {template!r} is not a valid template: {exc}") from None
        self.fields: tuple[str, ...] = tuple(f for _, f in self._parts if f is not None)
        if len(set(self.fields)) != len(self.fields):
            raise ConfigError(f"--path {template!r} names a placeholder twice")
        # The common one-placeholder template renders as prefix + value + suffix.
        self._around: tuple[str, str] | None = None
        if len(self.fields) == 1:
            at = next(i for i, (_, f) in enumerate(self._parts) if f is not None)
            self._around = (
                "".join(lit for lit, _ in self._parts[: at + 1]),
                "".join(lit for lit, _ in self._parts[at + 1 :]),
            )

    def render(self, values: list[str]) -> str:
        """Fill the placeholders, in template order, with ``values`` (encoded here)."""
        if self._around is not None:
            return self._around[0] + encode_segment(values[0]) + self._around[1]
        out = []
        at = 0
        for literal, field in self._parts:
            out.append(literal)
            if field is not None:
                out.append(encode_segment(values[at]))
                at += 1
        return "".join(out)


def encode_segment(value: str) -> str:
    """Percent-encode ``value`` so that it stays exactly one path segment."""
    if _UNRESERVED(value) and value not in (".", ".."):
        return value  # the common case (ids, uuids): nothing to encode
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


class Mapper:
    """Map records of one input to requests, per one template, schema and method."""

    def __init__(
        self,
        template: PathTemplate,
        *,
        schema: Schema = Schema.WORKLOAD,
        method: str = "PATCH",
        fmt: Format = Format.CSV,
        header: list[str] | None = None,
    ) -> None:
        self.template = template
        self.method = method.upper()
        self.format = fmt
        self._validate: Callable[[dict[str, Any]], dict[str, Any]] = validator_for(schema)
        self._placeholders = template.fields
        # Fields never sent in the body: the path fields, and what report --failed-out adds.
        self._path_fields = frozenset((*template.fields, ANNOTATION_KEY))
        # CSV columns whose field is not their header text: "attributes.hostname" nests,
        # "rank:int" sets "rank" -> ("attributes", "hostname"), ("rank",)
        self._nested: dict[str, tuple[str, ...]] = {}
        if header is not None:
            self._read_header(header, schema)

    def _read_header(self, header: list[str], schema: Schema) -> None:
        columns = read_header(header, typed=schema is Schema.ANY)
        placeholders = frozenset(self.template.fields)
        for column in columns:
            if column.type is not None and column.name in placeholders:
                raise ConfigError(f"CSV column {column.header!r} is a --path field: it takes no type")
        names = {column.name for column in columns}
        missing = [f for f in self.template.fields if f not in names]
        if missing:
            raise ConfigError(
                f"--path names {{{missing[0]}}}, but the CSV header has no column {missing[0]!r}"
            )
        if len(names) != len(columns):
            twice = sorted(c.header for c in columns if sum(d.name == c.name for d in columns) > 1)
            raise ConfigError(f"CSV columns {twice[0]!r} and {twice[1]!r} set the same field; keep one")
        self._path_fields = frozenset((*placeholders, *(c for c in header if c in ANNOTATION_COLUMNS)))
        for column in columns:
            if column.name in placeholders:
                continue
            if not all(column.parts):
                raise ConfigError(f"CSV column {column.header!r} has an empty part in its name")
            if len(column.parts) > 1 or column.type is not None:
                self._nested[column.header] = column.parts
        for column in columns:
            if len(column.parts) > 1 and column.parts[0] in names:
                raise ConfigError(
                    f"CSV columns {column.parts[0]!r} and {column.header!r} both set"
                    f" {column.parts[0]!r}; keep one"
                )
        if schema is Schema.WORKLOAD:
            # A misspelt column would make every row invalid: say so once, before sending.
            for column in columns:
                if column.name not in placeholders and column.parts[0] not in WORKLOAD_FIELDS:
                    raise ConfigError(
                        f"CSV column {column.header!r} is not a workload field (allowed: "
                        f"{', '.join(WORKLOAD_FIELDS)}, and the --path placeholders); "
                        "for another API's fields, use --schema any"
                    )
        typed = [column for column in columns if column.type is not None]
        if typed:
            self._validate = _parsing_types(typed, self._validate)

    def check_fields(self, fields: dict[str, Any]) -> None:
        """Refuse a template whose placeholders the (first) record does not have at all."""
        missing = [f for f in self.template.fields if f not in fields]
        if missing:
            raise ConfigError(
                f"--path names {{{missing[0]}}}, but the first record has no field {missing[0]!r}"
            )

    def map(self, record: Record) -> Request | Rejected:
        fields = record.fields
        if fields is None:
            reason = record.error or "unreadable"
            # A transform's message may hold a lone surrogate: the ledger must be able to write it.
            reason = reason if reason.isascii() or is_text(reason) else writable(reason)
            return Rejected(record.row, record.line, "", "invalid", reason)
        placeholders = self._placeholders
        if len(placeholders) == 1:
            # The common template: one id, a non-blank string (the rest take the long way).
            value = fields.get(placeholders[0])
            if type(value) is str and value.strip() and (value.isascii() or is_text(value)):
                return self._request(record, fields, [value], value)
        values: list[str] = []
        problem = None
        for name in placeholders:
            value = fields.get(name)
            if type(value) is not str:
                # Only exact values make a path: a JSON float (1e2, or an integer too large for
                # 64 bits, which the parser turns into one) or a boolean would name another id.
                if type(value) is int and INT_LOW < value < INT_HIGH:
                    value = str(value)
                else:
                    problem = problem or (f"missing {name}" if value is None else f"{name} is {_kind(value)}")
                    value = ""
            elif not value.strip():
                problem = problem or (f"missing {name}" if not value else f"{name} is blank")
            elif not value.isascii() and not is_text(value):
                problem = problem or f"{name} holds a lone surrogate, not UTF-8"
                value = shown(value)  # the key goes to the ledger: it must be writable
            values.append(value)
        key = values[0] if len(values) == 1 else "/".join(values)
        if problem is not None:
            return Rejected(record.row, record.line, key, "invalid", problem)
        return self._request(record, fields, values, key)

    def _request(
        self, record: Record, fields: dict[str, Any], values: list[str], key: str
    ) -> Request | Rejected:
        if self.format is Format.CSV:
            body = self._csv_body(fields)
        else:
            body = {k: v for k, v in fields.items() if k not in self._path_fields}
        path = self.template.render(values)
        if not body:
            if self.method in BODYLESS:
                return Request(record.row, record.line, key, path, None)
            if self.method == "PATCH":
                return Rejected(record.row, record.line, key, "skipped", "no fields to update")
        try:
            body = self._validate(body)
            data = orjson.dumps(body)
        except ValueError as exc:
            return Rejected(record.row, record.line, key, "invalid", str(exc))
        except TypeError as exc:  # orjson's: a set, bytes, a lone surrogate, nesting too deep...
            return Rejected(record.row, record.line, key, "invalid", inexact(body) or f"not JSON: {exc}")
        # A value JSON cannot carry exactly makes its row invalid (exact.py; inlined: once a row).
        if b"null" in data or LOWEST in data:
            problem = inexact(body)
            if problem is not None:
                return Rejected(record.row, record.line, key, "invalid", problem)
        return Request(record.row, record.line, key, path, data)

    def _csv_body(self, fields: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        nested = self._nested
        path_fields = self._path_fields
        for column, value in fields.items():
            if value == "" or column in path_fields:
                continue
            parts = nested.get(column)
            if parts is None:
                body[column] = value
                continue
            node = body
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        return body


def _parsing_types(
    typed: list[Column], validate: Callable[[dict[str, Any]], dict[str, Any]]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``validate``, after the cells of typed columns are parsed into their JSON values.

    Parsing happens in the validation step so that a bad cell makes its row ``invalid``.
    """

    def parse_then_validate(body: dict[str, Any]) -> dict[str, Any]:
        for column in typed:
            node: Any = body
            for part in column.parts[:-1]:
                node = node.get(part)
                if not isinstance(node, dict):
                    break
            else:
                text = node.get(column.parts[-1])
                if isinstance(text, str):
                    node[column.parts[-1]] = column.parse(text)
        return validate(body)

    return parse_then_validate


def _kind(value: object) -> str:
    """How a value that cannot name a path segment reads in a reason."""
    if isinstance(value, bool):
        return "a boolean, not a string or an integer"
    if isinstance(value, float):
        return f"the number {value!r}, not a string or an exact integer"
    if isinstance(value, int):
        return "an integer beyond 64 bits, not a string or an exact integer"
    if isinstance(value, dict | list | tuple):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}, not a string or an integer"
    return f"a {type(value).__name__}, not a string or an integer"
