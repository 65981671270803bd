"""Credentials from the environment: the one place the command line reads them.

Secrets never come from flags (they would show in ``ps`` and shell history); the library reads
no environment at all, so the commands pass these on as keywords. An empty variable counts as
unset.
"""

from __future__ import annotations

import os
from typing import TypedDict


class Credentials(TypedDict):
    token: str | None
    client_id: str | None
    client_secret: str | None


def credentials() -> Credentials:
    """``token``, ``client_id`` and ``client_secret`` from ``BULKPATCH_*``, None when unset."""
    return {
        "token": os.environ.get("BULKPATCH_TOKEN") or None,
        "client_id": os.environ.get("BULKPATCH_CLIENT_ID") or None,
        "client_secret": os.environ.get("BULKPATCH_CLIENT_SECRET") or None,
    }
