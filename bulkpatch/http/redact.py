"""Masking secrets in everything bulkpatch writes: ledger, logs, progress, summaries, errors.

A server may echo a token back (``403: token Bearer abc… has no access``); such text must not
carry it into a file or a terminal. Every known secret value — the bearer token, the OAuth client
secret and each token it yields, the ``-H`` values — is replaced by ``***`` wherever it appears.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
#: values shorter than this are not masked: masking "1" everywhere would garble every message
_SHORTEST = 3


class Redactor:
    """``redact(text)`` returns ``text`` with every registered secret masked."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Register a secret (a new OAuth token, say); later calls mask it too, also as it reads
        percent-encoded in a URL (``%2B`` for ``+``, ``+`` or ``%20`` for a space)."""
        value = (secret or "").strip()
        if len(value) < _SHORTEST:
            return
        for form in {value, quote(value, safe=""), quote_plus(value, safe=""), quote(value, safe="").lower()}:
            if form not in self._secrets:
                self._secrets.append(form)
        # Longest first, so a secret that contains another is masked whole.
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._secrets)} secrets>)"


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
