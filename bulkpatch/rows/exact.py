"""Request bodies as JSON, or the one-line reason a value in them has no exact JSON form.

orjson writes NaN and ±infinity as ``null`` (which clears the field on an API that follows JSON
Merge Patch) and raises on a set, bytes, a ``Decimal``, an integer outside 64 bits, a key that is
not a string or text holding a lone surrogate. Rows come from pandas (NaN in every empty cell),
from code and from typed CSV cells (``tags:json`` holding ``"\\ud800"`` or ``1e999``): such a
value must make its own row ``invalid``, naming the field, and never change into another value
nor stop the run. The common body costs one serialisation and two substring searches; only a body
that failed or that may hide such a value is walked to find the field. JSON Lines integers beyond
64 bits, which orjson reads as rounded floats, are read again exactly so that they are refused too.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

#: integers JSON readers of 64 bits take exactly: INT_LOW < n < INT_HIGH (the issue's bound:
#: -2**63 itself is refused too, as some readers negate it)
INT_LOW, INT_HIGH = -(2**63), 2**64
# What a body that serialised must be searched for: NaN/inf came out as null, or the lowest int.
#: the lowest 64-bit integer as orjson writes it
LOWEST = str(INT_LOW).encode()
_SHOWN = 40
# orjson reads an integer beyond 64 bits as an inexact float: a JSON Lines line with a run of 19
# digits is read again by the standard parser, whose integers are exact (the mapper then refuses
# them). Found as 19 zeros once every digit reads 0: a C pass a line, 4x quicker than a regex.
_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN = b"0" * 19


def dumps_exact(body: dict[str, Any]) -> bytes:
    """``body`` as JSON bytes; ``ValueError`` names the first field JSON cannot carry exactly."""
    try:
        out = orjson.dumps(body)
    except TypeError as exc:  # orjson.JSONEncodeError
        raise ValueError(inexact(body) or f"not JSON: {exc}") from None
    if b"null" in out or LOWEST in out:
        problem = inexact(body)
        if problem is not None:
            raise ValueError(problem)
    return out


def inexact(value: Any, where: str = "") -> str | None:
    """Why ``value`` (found at ``where``) has no exact JSON form, or None when it has one."""
    if isinstance(value, str):
        if value.isascii() or is_text(value):
            return None
        return f"{_at(where)}text holds a lone surrogate ({shown(value)}), not UTF-8"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if INT_LOW < value < INT_HIGH:
            return None
        # A very long one is not spelled out (str() refuses past 4,300 digits).
        spelt = f": {value}" if value.bit_length() <= 128 else f" ({value.bit_length():,} bits)"
        return f"{_at(where)}integer out of range (beyond 64 bits){spelt}"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{_at(where)}{value!r} is not a JSON number"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{_at(where)}key {_clip(repr(key))} is not a string"
            name = f"{where}.{shown(key)}" if where else shown(key)
            if not is_text(key):
                return f"{name}: the field name holds a lone surrogate, not UTF-8"
            problem = inexact(item, name)
            if problem is not None:
                return problem
        return None
    if isinstance(value, list | tuple):
        for at, item in enumerate(value):
            problem = inexact(item, f"{where}[{at}]")
            if problem is not None:
                return problem
        return None
    try:  # what orjson writes exactly as text: a datetime, a UUID, an enum, a dataclass
        orjson.dumps(value)
    except TypeError:
        return f"{_at(where)}a {type(value).__name__} is not a JSON value"
    return None


def is_text(value: str) -> bool:
    """False for a string holding a lone surrogate (it cannot be encoded as UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def writable(value: str) -> str:
    """``value`` as it can be written anywhere: lone surrogates spelt ``\\udXXX``."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def shown(value: str) -> str:
    """``writable(value)``, clipped for a message."""
    return _clip(writable(value))


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def may_hold_long_ints(line: bytes) -> bool:
    """Whether a JSON text has a run of 19 digits (an integer orjson may have read inexactly)."""
    return _NINETEEN in line.translate(_AS_ZEROS)


def with_exact_ints(line: bytes, value: dict[str, Any]) -> dict[str, Any]:
    """``line`` parsed with its integers exact; ``value`` (orjson's reading) if that fails."""
    try:
        exact = json.loads(line, parse_int=_int)
    except ValueError:
        return value
    return exact if type(exact) is dict else value


def _int(text: str) -> int:
    # Past Python's 4,300-digit limit for int(): the same leading digits and length (refused all
    # the same, as beyond 64 bits).
    if len(text) <= 4000:
        return int(text)
    return int(text[:40]) * int(10 ** (len(text) - 40))
