"""The one rule that decides whether a row is sent.

A row is skipped only on proof: **the last request applied (answered 2xx) to its target and key
is this very request, and nothing was recorded for that key since** (no failure, no invalid row,
no request left without an answer). The memory (``records/memory.py``) holds that fact for every
run, whatever the input is called; the ledger only says what *this* input's rows already told
the user. So:

* a row of a key that an earlier row of this run was sent for is sent (the earlier value is live
  now, whatever was proved before);
* ``--full`` sends every row; ``--only-changed`` lets the live value decide;
* a proved row is ``unchanged`` — silently ``already done`` when this ledger says so already;
* a row that this ledger answered 2xx, of a key whose last applied request came from a *later*
  row of this same input (same ledger, same content) with nothing since, is ``already done``:
  that later row will be judged in its turn, so a key with several rows does not flip back and
  forth on every re-run;
* a row this ledger recorded ``failed`` for the same request stays failed unless
  ``--retry-failed`` picks it, or ``--state`` heals failures (it sends every failed key again);
* a row without a key (a POST to a collection) has no memory: only this ledger's record of the
  same request at the same row proves it done, so that a resume never creates it twice.
"""

from __future__ import annotations

from enum import IntEnum

from bulkpatch.records.resume import OK_CODE, UNCHANGED_CODE


class Verdict(IntEnum):
    """What the intake does with a row."""

    #: send it
    SEND = 0
    #: record it ``unchanged``: its request is proved the last one applied
    UNCHANGED = 1
    #: nothing to do or write: this ledger holds the same answer already
    ALREADY = 2


_DONE_CODES = frozenset({OK_CODE, UNCHANGED_CODE})


def decide(
    key: str,
    fp: int,
    row: int,
    memory: tuple[int, bool, int] | None,
    code: int,
    code_fp: int,
    *,
    resend: bool,
    sent_before: bool,
) -> Verdict:
    """The verdict for one sendable row.

    ``memory`` is (fingerprint last applied, voided since, its row when a run of this very
    ledger applied it) for the key, or None when the memory knows nothing of it; ``code`` and
    ``code_fp`` are this ledger's record of the row (0 when none); ``resend`` is True when that
    record is a failure the run sends again (``--retry-failed``, ``--state``), ``sent_before``
    when an earlier row of this run went out for the key.
    """
    if sent_before:
        return Verdict.SEND
    same_in_ledger = code != 0 and code_fp == fp
    if key and memory is not None and not memory[1]:
        if memory[0] == fp:
            return Verdict.ALREADY if same_in_ledger and code in _DONE_CODES else Verdict.UNCHANGED
        if memory[2] > row and same_in_ledger and code == OK_CODE:
            return Verdict.ALREADY  # applied in order before a later row of this input, proved last
    if same_in_ledger:
        if code in _DONE_CODES:
            if not key:
                return Verdict.ALREADY  # no key, no memory: this ledger is the only proof there is
        elif not resend:
            return Verdict.ALREADY  # failed for this very request: it stays failed
    return Verdict.SEND
