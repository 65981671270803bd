"""Every credential is masked in every shape a server may echo it in."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus

import orjson
import pytest
from fakes import FakeClock, FakeTransport, write

from bulkpatch.engine.run import Run
from bulkpatch.http.redact import MASK, Redactor
from bulkpatch.http.transport import Response
from bulkpatch.options import RunOptions

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

    def handler(method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None) -> Response:
        echoed = echoes[url.rsplit("/", 1)[1]]
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
        transport=FakeTransport(handler),
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
