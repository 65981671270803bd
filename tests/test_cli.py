"""The command line, in-process with click's CliRunner, against the mock on 127.0.0.1."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result
from helpers import ThreadedMock, write

from bulkpatch.cli.main import cli
from bulkpatch.mock import MockConfig
from bulkpatch.mock.store import sample_workloads

TOKEN = "static-token-4f9a1c"
SECRET = "client-secret-9b2e77"


@pytest.fixture
def mock() -> Iterator[ThreadedMock]:
    config = MockConfig(workloads=40, static_tokens=(TOKEN,), client_id="cid", client_secret=SECRET)
    with ThreadedMock(config) as server:
        yield server


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def ids(n: int) -> list[str]:
    return [w["id"] for w in sample_workloads(n)]


def migration(tmp_path: Path, n: int, extra: str = "") -> Path:
    rows = "".join(f"{wid},renamed-{i},fra2,{'yes' if i % 2 else 'no'}\n" for i, wid in enumerate(ids(n)))
    return write(tmp_path / "m.csv", "workload_id,name,attributes.site,enabled\n" + rows + extra)


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert "Traceback" not in (result.stderr or "")


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "report", "mock", "demo"):
        assert f"  {command} " in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "m.csv", "--concurrency", "0"], "Invalid value for '--concurrency'"),
        (["run", "m.csv", "--nope"], "No such option '--nope'"),
        (["run", "m.csv"], "--base-url (or BULKPATCH_BASE_URL) is required"),
        (["run", "m.csv", "--base-url", "ftp://x"], "must be an http:// or https:// URL"),
        (["run", "m.csv", "--base-url", "http://127.0.0.1:9", "--path", "/w/{id}"], "no column 'id'"),
        (["run", "nope.csv", "--base-url", "http://127.0.0.1:9"], "cannot open input"),
        (["run", "m.csv", "--base-url", "http://127.0.0.1:9", "-H", "Authorization Bearer x"], "-H takes"),
        (["report", "missing.ledger.jsonl"], "no ledger at"),
        (["run", "m.csv", "--processes", "0"], "Invalid value for '--processes'"),
        (["run", "m.csv", "--base-url", "http://127.0.0.1:9", "-H", "X-A: \udcff"], "not UTF-8 text"),
        (
            ["run", "m.csv", "--base-url", "http://127.0.0.1:9", "--processes", "5", "--concurrency", "4"],
            "--processes 5 is more than --concurrency 4",
        ),
    ],
)
def test_usage_errors_are_one_line_exit_2_and_send_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    migration(tmp_path, 3)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Bearer x" not in result.stderr
    no_traceback(result)
    assert not (tmp_path / "m.csv.ledger.jsonl").exists()


def test_undecodable_secrets_are_refused_without_echoing_them(tmp_path: Path) -> None:
    source = migration(tmp_path, 1)
    result = invoke(
        "run", str(source), "--base-url", "http://127.0.0.1:9", env={"BULKPATCH_TOKEN": "tok\udcff"}
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == "bulkpatch: error: BULKPATCH_TOKEN holds bytes that are not UTF-8 text"


def test_run_applies_every_row_then_resume_sends_nothing(tmp_path: Path, mock: ThreadedMock) -> None:
    source = migration(tmp_path, 40)
    env = {"BULKPATCH_TOKEN": TOKEN, "BULKPATCH_BASE_URL": mock.url}
    result = invoke("run", str(source), "--no-progress", env=env)
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and TOKEN not in result.output
    for i, wid in enumerate(ids(40)):
        workload = mock.api.store.get(wid)
        assert workload is not None
        assert workload["name"] == f"renamed-{i}"
        assert workload["attributes"]["site"] == "fra2"
        assert workload["enabled"] is bool(i % 2)
    report = invoke("report", f"{source}.ledger.jsonl", "--json")
    data = orjson.loads(report.output)
    assert (data["total"], data["ok"], data["failed"], data["invalid"]) == (40, 40, 0, 0)
    assert data["by_http_status"] == {"204": 40}
    sent = mock.api.counters.requests
    again = invoke("run", str(source), "--no-progress", env=env)
    assert again.exit_code == 0
    assert mock.api.counters.requests == sent
    assert TOKEN not in (tmp_path / "m.csv.ledger.jsonl").read_text()


def test_bad_rows_are_recorded_invalid_with_line_numbers(tmp_path: Path, mock: ThreadedMock) -> None:
    source = migration(tmp_path, 5, extra=",no-id,x,yes\nbad-enabled,n,x,maybe\nunknown-id,n,x,yes\n")
    env = {"BULKPATCH_TOKEN": TOKEN}
    result = invoke("run", str(source), "--base-url", mock.url, "-q", env=env)
    assert result.exit_code == 1
    no_traceback(result)
    report = orjson.loads(invoke("report", f"{source}.ledger.jsonl", "--json").output)
    assert (report["ok"], report["invalid"], report["failed"]) == (5, 2, 1)
    out = tmp_path / "fix.csv"
    written = invoke("report", f"{source}.ledger.jsonl", "--failed-out", str(out))
    assert "wrote 3 rows" in written.output
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "workload_id",
        "name",
        "attributes.site",
        "enabled",
        "_status",
        "_http_status",
        "_error",
        "_row",
    ]
    assert [r[0] for r in rows[1:]] == ["", "bad-enabled", "unknown-id"]
    assert [r[4:] for r in rows[1:]][2][:2] == ["failed", "404"]


def test_client_credentials_secret_never_printed(tmp_path: Path, mock: ThreadedMock) -> None:
    source = migration(tmp_path, 10)
    env = {"BULKPATCH_CLIENT_ID": "cid", "BULKPATCH_CLIENT_SECRET": SECRET, "BULKPATCH_BASE_URL": mock.url}
    log = tmp_path / "events.jsonl"
    result = invoke("run", str(source), "--no-progress", "--log-json", str(log), env=env)
    assert result.exit_code == 0, result.output
    assert mock.api.counters.tokens_issued == 1
    everything = result.output + (tmp_path / "m.csv.ledger.jsonl").read_text() + log.read_text()
    assert SECRET not in everything


def test_wrong_secret_is_exit_2_and_nothing_is_marked_failed(tmp_path: Path, mock: ThreadedMock) -> None:
    source = migration(tmp_path, 10)
    env = {"BULKPATCH_CLIENT_ID": "cid", "BULKPATCH_CLIENT_SECRET": "wrong-" + SECRET}
    result = invoke("run", str(source), "--base-url", mock.url, "--no-progress", env=env)
    assert result.exit_code == 2
    assert "refused the client credentials" in result.stderr
    assert SECRET not in result.output + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    ledger = (tmp_path / "m.csv.ledger.jsonl").read_text()
    assert '"type":"row"' not in ledger
    assert mock.api.counters.requests == 0


def test_dry_run_shows_requests_and_sends_nothing(tmp_path: Path, mock: ThreadedMock) -> None:
    source = migration(tmp_path, 3)
    result = invoke("run", str(source), "--base-url", mock.url, "--dry-run")
    assert result.exit_code == 0
    assert "3 would be sent" in result.output
    assert f"PATCH {mock.url}/api/workload_management/v5/workloads/{ids(1)[0]}" in result.output
    assert mock.api.counters.requests == 0


def test_hostile_ids_stay_inside_one_segment(tmp_path: Path) -> None:
    seen: list[str] = []
    from aiohttp import web

    config = MockConfig(require_auth=False)
    with ThreadedMock(config) as mock:

        async def record(request: web.Request) -> web.Response:
            seen.append(request.raw_path)
            return web.Response(status=204)

        # Everything under /x/ lands here, whatever the depth.
        mock.api.app.router._frozen = False
        mock.api.app.router.add_route("*", "/x/{tail:.*}", record)
        source = write(tmp_path / "h.jsonl", '{"id": "../../admin"}\n{"id": "a/b?c=1#f"}\n{"id": ".."}\n')
        options = ["--path", "/x/{id}/items", "--schema", "any", "--method", "DELETE", "-q"]
        result = invoke("run", str(source), "--base-url", mock.url, *options)
    assert result.exit_code == 0, result.output
    assert sorted(seen) == sorted(
        ["/x/..%2F..%2Fadmin/items", "/x/a%2Fb%3Fc%3D1%23f/items", "/x/%2E%2E/items"]
    )


@pytest.mark.slow
def test_demo_exits_0_and_verifies(tmp_path: Path) -> None:
    result = invoke("demo", "--workdir", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "verified through GET: all 1000 workloads carry the new values" in result.output
    assert "demo-secret" not in result.output
    # The paths the summary prints still exist afterwards (issue 14: they were in a deleted folder).
    ledger = next(
        line.split("ledger: ", 1)[1] for line in result.output.splitlines() if line.startswith("ledger: ")
    )
    assert Path(ledger).is_file() and f"kept in {tmp_path}" in result.output


def test_stdin_input_needs_a_ledger_and_then_runs(tmp_path: Path, mock: ThreadedMock) -> None:
    lines = "".join(f'{{"workload_id": "{wid}", "name": "from-stdin"}}\n' for wid in ids(5))
    env = {"BULKPATCH_TOKEN": TOKEN, "BULKPATCH_BASE_URL": mock.url}
    refused = CliRunner().invoke(cli, ["run", "-", "--format", "jsonl"], input=lines, env=env)
    assert refused.exit_code == 2 and "needs --ledger" in refused.stderr
    ledger = str(tmp_path / "stdin.ledger.jsonl")
    args = ["run", "-", "--format", "jsonl", "--ledger", ledger, "-q"]
    result = CliRunner().invoke(cli, args, input=lines, env=env)
    assert result.exit_code == 0, result.output
    assert all(mock.api.store.get(wid)["name"] == "from-stdin" for wid in ids(5))  # type: ignore[index]


@pytest.mark.slow  # a subprocess
def test_the_command_line_starts_without_the_engine() -> None:
    """Issue 14: --help and --version took 1.2 s importing aiohttp and pydantic they do not use."""
    import subprocess
    import sys

    probe = (
        "import sys, bulkpatch.cli.main;"
        " print(sorted(m for m in ('aiohttp', 'pydantic', 'tenacity') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_report_html_and_markdown_of_a_300_row_run_with_failures(tmp_path: Path) -> None:
    config = MockConfig(workloads=280, static_tokens=(TOKEN,), error_rate=0.05)
    unknown = "".join(f"00000000-0000-0000-0000-{i:012d},gone,x,yes\n" for i in range(15))
    bad = "".join(f"{wid},bad,x,maybe\n" for wid in ids(285)[280:])
    with ThreadedMock(config) as server:
        source = migration(tmp_path, 280, extra=unknown + bad)
        env = {"BULKPATCH_TOKEN": TOKEN, "BULKPATCH_BASE_URL": server.url}
        result = invoke("run", str(source), "--no-progress", "--max-attempts", "2", env=env)
    assert result.exit_code == 1, result.output
    ledger = f"{source}.ledger.jsonl"
    page = tmp_path / "report.html"
    report = invoke("report", ledger, "--html", str(page), "--json")
    assert report.exit_code == 1
    data = orjson.loads(report.output)
    assert data["total"] == 300 and data["invalid"] == 5 and data["failed"] >= 15
    assert data["html"] == str(page)
    assert oct(page.stat().st_mode & 0o777) == "0o600"
    html = page.read_text()
    assert html.count("<svg") == 4 and "<script" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "HTTP 404: NotFound: workload &lt;id&gt; not found" in html and "00000000-0000-0000-0000-" in html
    assert TOKEN not in html
    markdown = invoke("report", ledger, "--markdown")
    assert markdown.exit_code == 1
    assert markdown.output.startswith("### bulkpatch run report\n")
    assert "| invalid | 5 | 1.7% |" in markdown.output and TOKEN not in markdown.output


def test_report_markdown_to_a_file_and_the_notes_to_stderr(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")
    ledger = write(
        tmp_path / "in.csv.ledger.jsonl",
        '{"type":"header","input":{"path":"in.csv"}}\n'
        '{"type":"row","row":1,"line":2,"key":"w1","status":"ok","http_status":204,"attempts":1}\n',
    )
    out = tmp_path / "summary.md"
    result = CliRunner().invoke(cli, ["report", str(ledger), "--markdown", str(out)])
    assert result.exit_code == 0, result.output
    assert "| ok | 1 | 100.0% |" in out.read_text()
    assert f"wrote the markdown report to {out}" in result.output
    assert source.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # "--markdown" takes the next word for its FILE: never a ledger of the chain.
        (["--markdown", "{ledger}", "{ledger}"], "is a file of this report's own chain"),
        (["--markdown", "{other}", "{ledger}"], "is a bulkpatch ledger"),
        (["--html", "{source}", "{ledger}"], "is a file of this report's own chain"),
        (["{ledger}", "--markdown", "--json"], "--json and --markdown both print"),
    ],
)
def test_report_never_writes_over_its_own_files(tmp_path: Path, args: list[str], message: str) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")
    text = f'{{"type":"header","input":{{"path":"{source}"}}}}\n'
    ledger = write(tmp_path / "in.csv.ledger.jsonl", text)
    other = write(tmp_path / "other.ledger.jsonl", text)
    before = {p: p.read_bytes() for p in (source, ledger, other)}
    paths = {"ledger": str(ledger), "other": str(other), "source": str(source)}
    result = CliRunner().invoke(cli, ["report", *(a.format(**paths) for a in args)])
    assert result.exit_code == 2 and message in result.output
    no_traceback(result)
    assert {p: p.read_bytes() for p in before} == before
