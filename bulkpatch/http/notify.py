"""``run --notify URL``: one JSON summary POSTed at the end of a run, for a chat webhook.

Slack's and Teams' incoming webhooks show the ``text`` field; the rest (exit status, counts) is
for anything that parses it. A notification is a courtesy: a webhook that refuses, fails or
hangs (at most ``NOTIFY_TIMEOUT`` seconds) costs one warning line, never the run's outcome. The
request goes through the project's one HTTP client (``transport.py``). A webhook URL is itself a
credential (Slack's carries its secret in the path), so a warning names the host only.
"""

from __future__ import annotations

from typing import Any

import orjson
from yarl import URL

from bulkpatch.errors import ConfigError, TransportError
from bulkpatch.http.transport import AiohttpTransport, Transport

#: seconds a webhook has to answer
NOTIFY_TIMEOUT = 10.0
_UNKNOWN = "the webhook"


def check_webhook(url: str) -> None:
    """Refuse, before anything is sent, a ``--notify`` that is no http(s) URL with a host."""
    if host_of(url) == _UNKNOWN or not url.lower().startswith(("http://", "https://")):
        raise ConfigError("--notify takes an http:// or https:// URL")


def host_of(url: str) -> str:
    """``https://hooks.slack.com``: where a URL points, without its path, query or credentials."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return _UNKNOWN
    if not parsed.scheme or not parsed.host:
        return _UNKNOWN
    port = f":{parsed.explicit_port}" if parsed.explicit_port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


async def post_summary(
    url: str,
    payload: dict[str, Any],
    *,
    answer_within: float = NOTIFY_TIMEOUT,
    transport: Transport | None = None,
) -> str | None:
    """POST ``payload`` as JSON to ``url``; None when the webhook took it, else why not (one line)."""
    own = transport is None
    sender: Transport = transport or AiohttpTransport(limit=1, timeout=answer_within)
    body = orjson.dumps(payload)
    try:
        response = await sender.send("POST", url, body, {"Content-Type": "application/json"})
    except TransportError as exc:
        # aiohttp's messages may quote the URL, and the URL may be the webhook's secret.
        return f"notifying {host_of(url)} failed: {str(exc).replace(url, host_of(url))}"
    finally:
        if own:
            await sender.close()
    if 200 <= response.status < 300:
        return None
    return f"notifying {host_of(url)} failed: HTTP {response.status}"
