"""The mock's rate limit, announced in its answers as real APIs announce theirs.

Three forms, so that the demo and the tests see each one a client meets: the IETF httpapi
draft's ``RateLimit``/``RateLimit-Policy`` structured fields, the draft's older separate
``RateLimit-Limit``/``-Remaining``/``-Reset``, and ``X-RateLimit-*`` whose reset is a Unix time
(GitHub's). The window is a fixed one-second window on the Unix clock's seconds, so a Unix-time
reset is exact and a delta-seconds reset is, as the drafts make it, a whole number.
"""

from __future__ import annotations

#: the header forms ``MockConfig.announce_rate_limit`` takes
ANNOUNCE_FORMS = ("ietf", "legacy", "x")


def quota_headers(form: str, limit: int, remaining: int, now: float) -> dict[str, str]:
    """The headers that announce ``remaining`` of ``limit`` in the window of Unix second ``now``."""
    reset = 1  # whole delta seconds to the window's end (rounded up, as the drafts say)
    if form == "ietf":
        return {
            "RateLimit": f"limit={limit}, remaining={remaining}, reset={reset}",
            "RateLimit-Policy": f"{limit};w=1",
        }
    if form == "legacy":
        return {
            "RateLimit-Limit": f"{limit}, {limit};w=1",
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(reset),
        }
    if form == "x":
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(now) + 1),
        }
    raise ValueError(f"announce_rate_limit must be one of {', '.join(ANNOUNCE_FORMS)}, got {form!r}")
