"""Secrets never reach a file (http/redact.py): echoed, percent-encoded, or cut in the middle of a message."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote, quote_plus

import orjson
import pytest
from helpers import (
    API,
    ECHOED_SECRET,
    LONG_SECRET,
    FakeClock,
    run_options,
    write,
)

from bulkpatch.engine.run import Run
from bulkpatch.http.redact import MASK, Redactor
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


TOKEN = "tok+en/with=odd é chars"
SHAPES = [
    TOKEN,
    quote(TOKEN, safe=""),
    quote(TOKEN),  # "/" left as it is
    quote(TOKEN, safe="/=+"),
    quote(TOKEN, safe="").lower(),
    quote_plus(TOKEN),
    quote_plus(TOKEN, safe="/"),
    TOKEN.replace("/", "\\/"),  # JSON's escaped slash
    base64.b64encode(TOKEN.encode()).decode(),
    base64.urlsafe_b64encode(TOKEN.encode()).decode().rstrip("="),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_a_secret_is_masked_in_each_shape(shape: str) -> None:
    redact = Redactor([TOKEN])
    masked = redact(f"denied: {shape}!")
    assert masked in (f"denied: {MASK}!", f"denied: {MASK}=!", f"denied: {MASK}==!")  # padding may stay
    assert TOKEN not in masked and shape.rstrip("=") not in masked


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "Token", "SSWS", "ApiKey"])
def test_a_header_value_masks_its_bare_credential(scheme: str) -> None:
    redact = Redactor([f"{scheme} s3cr3t/T0k+n"])
    for shape in ("s3cr3t/T0k+n", quote("s3cr3t/T0k+n"), quote("s3cr3t/T0k+n", safe="")):
        assert redact(f"token {shape} has no access") == f"token {MASK} has no access"


def test_a_basic_credential_masks_what_it_decodes_to() -> None:
    pair = base64.b64encode(b"svc-user:pa55/w0rd").decode()
    redact = Redactor([f"Basic {pair}"])
    assert redact(f"bad {pair}") == f"bad {MASK}"
    assert redact("user svc-user:pa55/w0rd refused") == f"user {MASK} refused"
    assert redact("password pa55%2Fw0rd refused") == f"password {MASK} refused"


def test_plain_text_and_short_values_are_left_alone() -> None:
    redact = Redactor(["ab", None, "", "Bearer  x"])
    assert redact("ab Bearer x") == "ab Bearer x"
    assert Redactor()("anything") == "anything"
    assert "s3cr3t" not in repr(Redactor(["my-s3cr3t"]))


async def test_an_authorization_header_echoed_bare_reaches_no_ledger_nor_event(tmp_path: Path) -> None:
    token = "T0ken+/=abc"
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\nw2,b\nw3,c\n")
    echoes = {"w1": token, "w2": quote(token), "w3": base64.b64encode(token.encode()).decode()}

    def handler(request: SentRequest) -> Response:
        echoed = echoes[request.url.rsplit("/", 1)[1]]
        return Response(503, None, orjson.dumps({"error": {"message": f"credential {echoed} is revoked"}}))

    events: list[tuple[str, dict[str, object]]] = []
    options = RunOptions(
        input=str(source),
        base_url="https://api.test",
        headers={"Authorization": f"Bearer {token}"},
        max_attempts=2,
    )
    run = Run(
        options,
        transport=MockTransport(handler),
        sleep=FakeClock().sleep,
        events=lambda e, f: events.append((e, f)),
    )
    await run.execute()
    ledger = Path(f"{source}.ledger.jsonl").read_text()
    for echoed in echoes.values():
        assert echoed not in ledger
        assert echoed not in repr(events)
    assert ledger.count(f"credential {MASK} is revoked") == 3


def test_parameter_values_of_a_header_are_masked_each() -> None:
    redact = Redactor(["sid=c00kie-v4l; lang=en", 'Digest username="svc", response="6629fae49393a053"'])
    assert redact("session c00kie-v4l expired") == f"session {MASK} expired"
    assert redact("response 6629fae49393a053 wrong for svc") == f"response {MASK} wrong for {MASK}"
    assert redact("lang en") == "lang en"  # too short to mask
