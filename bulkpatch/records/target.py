"""A target: what keys are applied *to*, as the memory names it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """What a key is applied *to*: method, base URL, path template, extra headers, credentials.

    Headers and credentials enter only as digests keyed with the memory's own salt (``who``),
    never in clear: two tenants' tokens are two targets, and the file holds no secret.
    """

    method: str
    base_url: str
    path_template: str
    #: the extra headers (-H), name → value
    headers: Mapping[str, str]
    #: "client <id>" for OAuth client credentials, the static token itself, or ""
    credential: str = ""
    #: True when ``credential`` is a secret (a token), shown only as a keyed digest
    secret: bool = False

    def text(self, salt: bytes) -> str:
        out = f"{self.method.upper()} {self.base_url.rstrip('/')}{self.path_template}"
        if self.headers:
            pairs = sorted(f"{n.lower()}:{v}" for n, v in self.headers.items())
            out += f" headers:{_keyed(chr(10).join(pairs), salt)}"
        if self.credential:
            out += f" as:token-{_keyed(self.credential, salt)}" if self.secret else f" as:{self.credential}"
        return out


def _keyed(text: str, salt: bytes) -> str:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), key=salt, digest_size=8)
    return digest.hexdigest()
