"""Values given as options, parsed and checked: URLs, ``-H`` headers, ``--shard``.

Each refuses a bad value with one ``ConfigError`` that names the option and never echoes a
secret (a header's value, a URL's user and password).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from yarl import URL

from bulkpatch.errors import ConfigError

__all__ = ["CONTROL", "Headers", "check_url", "parse_header", "parse_headers", "parse_shard", "safe_url"]

#: what ``headers=`` takes: a mapping, or ``'Name: value'`` strings, or ``(name, value)`` pairs
Headers = Mapping[str, str] | Iterable[str | tuple[str, str]]

CONTROL = re.compile(r"[\x00-\x1f\x7f]").search
_DIGITS = re.compile(r"\s*[0-9]{1,9}\s*").fullmatch
#: what stands before the last "@" of an authority: user and password, never to be echoed
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?/*)[^/?#]*@")


def check_url(option: str, url: str) -> str:
    """Refuse anything but an absolute http(s) URL with a valid host name, a valid port, and no
    credentials, query or fragment; return it in ASCII (an IDN host in punycode). The URL is echoed
    in the error only with any credentials masked."""
    shown = safe_url(url)
    if CONTROL(url) or " " in url.strip():
        raise ConfigError(f"{option} must be a URL without spaces or control characters")
    if "@" in url.split("?")[0].split("#")[0]:
        raise ConfigError(f"{option} must not carry credentials ({shown}); use the environment variables")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{option} is not a valid URL ({shown}): {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{option} must be an http:// or https:// URL, got {shown!r}")
    if port == 0:
        raise ConfigError(f"{option} has port 0 ({shown})")
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise ConfigError(f"{option} must not have a ?query or #fragment ({shown}); put paths in --path")
    return _ascii_url(option, url, shown)


def _ascii_url(option: str, url: str, shown: str) -> str:
    """``url`` as the client sends it; a host name that the IDNA codec refuses (an empty label as
    in ``a..b``, a label over 63 characters, an ``xn--`` label that is not punycode) would end
    the first request in a UnicodeError: refuse it now."""
    try:
        encoded = URL(url.strip())
        host = encoded.raw_host or ""
        if not encoded.is_absolute() or ":" in host:  # an IPv6 address: no labels to check
            return url
        host.encode("idna")  # what the resolver does
        URL(str(encoded), encoded=True).host  # what the client does  # noqa: B018
    except (UnicodeError, ValueError):
        raise ConfigError(
            f"{option} has an invalid host name ({shown}): each dot-separated part must be 1 to 63"
            " characters, and one starting xn-- valid punycode"
        ) from None
    return url if url.isascii() else str(encoded)


def safe_url(url: str) -> str:
    """``url`` with anything that may be a user name or password replaced by ``…``."""
    return _USERINFO.sub(lambda m: m.group(1) + "…@", url)


def parse_shard(text: str, environ: dict[str, str] | None = None) -> tuple[int, int]:
    """``"K/N"`` → (K, N); ``"N"`` alone takes K from ``JOB_COMPLETION_INDEX`` (a Kubernetes
    Indexed Job sets it in each pod)."""
    k_text, sep, n_text = text.partition("/")
    if not sep:
        n_text = text
    if not _DIGITS(n_text) or (sep and not _DIGITS(k_text)):
        raise ConfigError(f"--shard takes K/N (e.g. 0/4) or N, got {text!r}")
    if not sep:
        k_text = (environ or {}).get("JOB_COMPLETION_INDEX", "")
        if not k_text:
            raise ConfigError(
                "--shard N needs JOB_COMPLETION_INDEX (a Kubernetes Indexed Job); else --shard K/N"
            )
        if not _DIGITS(k_text):
            raise ConfigError(
                f"JOB_COMPLETION_INDEX must be a number (the shard K of --shard N), got {k_text!r}"
            )
    return int(k_text), int(n_text)


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` → ``("Name", "value")``."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n"):
        # The value may be a secret: never echo it.
        raise ConfigError("-H takes 'Name: value' (a header name, a colon, then the value)")
    if "\r" in value or "\n" in value:
        raise ConfigError(f"-H {name}: the value must be one line")
    return name, value.strip()


def parse_headers(headers: Headers) -> dict[str, str]:
    """``headers=`` as a dict, from a mapping, ``'Name: value'`` strings or ``(name, value)`` pairs."""
    if isinstance(headers, Mapping):
        pairs: Iterable[object] = headers.items()
    elif isinstance(headers, (str, bytes)) or not isinstance(headers, Iterable):
        raise ConfigError(_HEADERS_TAKE + f", not {type(headers).__name__}")
    else:
        pairs = headers
    parsed: dict[str, str] = {}
    for item in pairs:
        if isinstance(item, str):
            name, value = parse_header(item)
        elif isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
            name, value = parse_header(f"{item[0]}: {item[1]}")
        else:
            # The item may hold a secret: name its type, never its value.
            raise ConfigError(_HEADERS_TAKE + f"; one item is a {type(item).__name__}")
        parsed[name] = value
    return parsed


_HEADERS_TAKE = "headers= takes a mapping, 'Name: value' strings or (name, value) pairs of strings"
