"""Masking secrets in everything bulkpatch writes: ledger, logs, progress, summaries, errors.

A server may echo a credential back (``403: token abc… has no access``); such text must not carry
it into a file or a terminal. Every known secret — the bearer token, the OAuth client secret and
each token it yields, the ``-H`` values — is replaced by ``***`` in every shape it may come back in:

* as given, and, for a header value such as ``Bearer T`` or ``Basic dXNlcjpwdw==``, the bare
  credential after the scheme (and what a Basic credential decodes to: ``user:pw`` and ``pw``),
  and each value of ``name=value`` parameters (``Cookie: sid=S``, ``Digest response="R"``);
* base64-encoded (standard or URL-safe alphabet, with or without padding);
* percent-encoded with any set of characters left as they are (``quote(s, safe='')``,
  ``quote(s)`` which keeps ``/``, ``quote_plus``, lower-case hex), or with ``/`` escaped as
  ``\\/`` (JSON): each character that is not a letter, digit or ``_.-~`` matches itself or any
  of its encodings, so one pattern covers every mix.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

MASK = "***"
#: values shorter than this are not masked: masking "1" everywhere would garble every message
_SHORTEST = 3
#: ``scheme credentials`` in a header value (RFC 9110's auth-scheme is a token)
_SCHEME = re.compile(r"([A-Za-z0-9!#$%&'*+.^_`|~-]+)[ \t]+(\S.*)", re.DOTALL)
_PARAM = re.compile(r"""[^\s=;,]+=(?:"([^"]*)"|([^\s;,"]+))""")
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


class Redactor:
    """``redact(text)`` returns ``text`` with every registered secret masked."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Register a secret (a header value, a new OAuth token...); later calls mask it, in every
        shape the module's docstring lists."""
        value = (secret or "").strip()
        if len(value) < _SHORTEST:
            return
        values = {value}
        scheme = _SCHEME.fullmatch(value)
        if scheme is not None:
            credentials = scheme.group(2).strip()
            values.add(credentials)
            values.update(_basic(credentials) if scheme.group(1).lower() == "basic" else ())
            value = credentials
        # name=value parameters (a Cookie, Digest's response="…"): each value is a secret too.
        for param in _PARAM.finditer(value):
            values.add(param.group(1) or param.group(2))
        forms = set()
        for one in values:
            forms.add(one)
            forms.update(_base64_forms(one))
        forms = {f for f in forms if len(f) >= _SHORTEST} - self._forms
        if forms:
            self._forms |= forms
            # Longest first, so that a secret that contains another is masked whole.
            ordered = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(_encoded(form) for form in ordered))

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._forms)} secret forms>)"


# A URL in free text: scheme, then anything up to a space or a quote.
_URL = re.compile(r"""(?P<scheme>[A-Za-z][\w+.-]*://)(?P<rest>[^\s'"<>]+)""")


def mask_urls(text: str) -> str:
    """``text`` with each URL's credentials and query masked: ``https://…@host/path?…``.

    For text that leaves the machine (a webhook's summary): a URL in an error message may carry
    a password (``https://user:pw@host``) or a signed query (``?sig=…``).
    """

    def masked(match: re.Match[str]) -> str:
        rest = match["rest"]
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            authority = MASK + "@" + authority.rpartition("@")[2]
        path, question, _ = path.partition("?")
        if not slash:
            authority, question, _ = authority.partition("?")
        return f"{match['scheme']}{authority}{slash}{path}{'?' + MASK if question else ''}"

    return _URL.sub(masked, text)


def _base64_forms(value: str) -> set[str]:
    raw = value.encode("utf-8", "surrogatepass")
    return {
        base64.b64encode(raw).decode("ascii").rstrip("="),
        base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="),
    }


def _basic(credentials: str) -> set[str]:
    """What a Basic credential decodes to: ``user:password``, and the password alone."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return set()
    _, colon, password = decoded.partition(":")
    return {decoded, password} if colon else {decoded}


def _encoded(form: str) -> str:
    """A pattern for ``form`` as written, or with any of its characters percent-encoded (either
    hex case), a space as ``+``, a slash as ``\\/``."""
    out = []
    for char in form:
        if char in _PLAIN:
            out.append(re.escape(char))
            continue
        shapes = [re.escape(char)]
        octets = char.encode("utf-8", "surrogatepass")
        shapes.append("".join(f"%{_either_case(f'{octet:02X}')}" for octet in octets))
        if char == " ":
            shapes.append(r"\+")
        elif char == "/":
            shapes.append(r"\\/")
        out.append(f"(?:{'|'.join(shapes)})")
    return "".join(out)


def _either_case(hex_pair: str) -> str:
    return "".join(f"[{c}{c.lower()}]" if c.isalpha() else c for c in hex_pair)
