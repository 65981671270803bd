"""Secrets never reach a file (http/redact.py): echoed, percent-encoded, or cut in the middle of a message."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import orjson
from helpers import (
    API,
    ECHOED_SECRET,
    LONG_SECRET,
    FakeClock,
    run_options,
    write,
)

from bulkpatch.engine.run import Run
from bulkpatch.http.transport import Response
from bulkpatch.options import RunOptions
from bulkpatch.testing import MockTransport, SentRequest


async def test_an_echoed_secret_reaches_no_file(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\nw2,b\nw3,c\n")

    def handler(request: SentRequest) -> Response:
        if request.url.endswith("w1"):
            return Response(204, None, b"")
        if request.url.endswith("w2"):
            envelope = {
                "error": {"code": "forbidden", "message": f"token Bearer {ECHOED_SECRET} has no access"}
            }
            return Response(400, None, orjson.dumps(envelope))
        return Response(500, None, f"bad key {ECHOED_SECRET}-X".encode())

    events: list[tuple[str, dict[str, object]]] = []
    opts = run_options(source, token=ECHOED_SECRET, max_attempts=2, headers={"X-Api-Key": "api-key-0451"})
    r = Run(
        opts,
        transport=MockTransport(handler),
        sleep=FakeClock().sleep,
        events=lambda e, f: events.append((e, f)),
    )
    result = await r.execute()
    ledger = Path(f"{source}.ledger.jsonl").read_text()
    assert ECHOED_SECRET not in ledger and "***" in ledger
    assert ECHOED_SECRET not in repr(events) and events
    assert all(ECHOED_SECRET not in error for error in result.tally.errors)
    assert Path(f"{source}.ledger.jsonl").stat().st_mode & 0o777 == 0o600


async def test_no_part_of_a_secret_survives_the_cut_of_a_long_error_message(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")
    message = "x" * 230 + " token Bearer " + LONG_SECRET + " has no access to this workload"

    def handler(request: SentRequest) -> Response:
        return Response(422, None, orjson.dumps({"error": {"code": "Forbidden", "message": message}}))

    options = RunOptions(input=str(source), base_url=API, token=LONG_SECRET)
    await Run(options, transport=MockTransport(handler)).execute()
    text = Path(f"{source}.ledger.jsonl").read_text()
    assert LONG_SECRET[:12] not in text


async def test_a_token_echoed_percent_encoded_in_location_is_masked(tmp_path: Path) -> None:
    token = "eyJhbGci+Sk/Tq9w=="
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")

    def handler(request: SentRequest) -> Response:
        return Response(302, None, b"", "https://sso.test/login?token=" + quote(token, safe=""))

    await Run(
        RunOptions(input=str(source), base_url=API, token=token), transport=MockTransport(handler)
    ).execute()
    assert quote(token, safe="") not in Path(f"{source}.ledger.jsonl").read_text()
