"""RunOptions (options.py): refused up front, one line, exit 2, before anything is sent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import (
    API,
    ENV,
    bulkpatch_cli,
    fleet_csv,
    run_options,
    write,
)

from bulkpatch.cli.main import cli
from bulkpatch.errors import ConfigError
from bulkpatch.option_values import parse_shard
from bulkpatch.options import RunOptions
from bulkpatch.records.resume import RetryFailed


def test_authorization_from_two_places_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="-H Authorization and BULKPATCH_TOKEN"):
        run_options(tmp_path / "in.csv", token="t0k", headers={"authorization": "Bearer other"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base-url", "http://127.0.0.1:99999"], "not a valid URL"),
        (["--base-url", "http://127.0.0.1:abc"], "not a valid URL"),
        (["--base-url", "http://[::1"], "not a valid URL"),
        (["--base-url", "http://h/?q=1"], "?query or #fragment"),
        (["--base-url", "http://h/#top"], "?query or #fragment"),
        (["--base-url", "ftp://u:PW@h"], "must not carry credentials"),
        (["--base-url", "u:PW@host"], "must not carry credentials"),
        (["--base-url", "http://h", "--timeout", "nan"], "--timeout must be"),
        (["--base-url", "http://h", "--rate", "nan"], "--rate must be"),
        (["--base-url", "http://h", "--rate", "inf"], "--rate must be"),
    ],
)
@pytest.mark.slow
def test_bad_configuration_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    source = fleet_csv(tmp_path, 3, "piped")
    done = bulkpatch_cli("run", str(source), *args)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert "PW" not in err
    assert not Path(f"{source}.ledger.jsonl").exists()


@pytest.mark.parametrize("token", ["abc\ndef", "   ", "tab\there"])
@pytest.mark.slow
def test_a_malformed_token_is_refused_up_front(tmp_path: Path, token: str) -> None:
    source = fleet_csv(tmp_path, 3, "piped")
    done = bulkpatch_cli(
        "run", str(source), "--base-url", "http://127.0.0.1:9", env={**ENV, "BULKPATCH_TOKEN": token}
    )
    assert done.returncode == 2 and b"BULKPATCH_TOKEN must be one line" in done.stderr
    assert token.encode() not in done.stderr or not token.strip()


def test_state_and_shards_need_a_key() -> None:
    with pytest.raises(ConfigError, match=r"need a --path with a \{field\}"):
        RunOptions(input="x.csv", base_url=API, path="/things", state="s.db")


def test_the_library_takes_the_command_lines_spellings() -> None:
    opts = RunOptions(input="x.csv", base_url=API, retry_failed="transient", shard="1/4")  # type: ignore[arg-type]
    assert opts.retry_failed is RetryFailed.TRANSIENT and opts.shard == (1, 4)
    with pytest.raises(ConfigError, match="'sometimes' is not a valid RetryFailed"):
        RunOptions(input="x.csv", base_url=API, retry_failed="sometimes")  # type: ignore[arg-type]


def test_a_pipe_without_a_ledger_is_refused_like_stdin() -> None:
    read, write_end = os.pipe()
    try:
        with pytest.raises(ConfigError, match=r"a pipe.*needs --ledger"):
            RunOptions(input=f"/dev/fd/{read}", base_url=API, format="csv")
    finally:
        os.close(read)
        os.close(write_end)


BAD_HOSTS = [
    "https://eu2-cloud..acronis.com",
    "https://" + "a" * 64 + ".example.com",
    "http://xn--/",
    "http://xn--zz.example.com/api",
    "http://.example.com",
    "https://ünï..example.com",
]


@pytest.mark.parametrize("url", BAD_HOSTS)
def test_a_host_name_the_idna_codec_refuses_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"--base-url has an invalid host name"):
        RunOptions(input="x.csv", base_url=url)
    with pytest.raises(ConfigError, match=r"--token-url has an invalid host name"):
        RunOptions(input="x.csv", base_url="https://api.test", token_url=url)


def test_an_idn_host_is_sent_in_punycode_and_ascii_urls_stay_as_given() -> None:
    assert RunOptions(input="x.csv", base_url="https://bücher.example/ä").base_url == (
        "https://xn--bcher-kva.example/%C3%A4"
    )
    for url in ("https://eu2-cloud.acronis.com", "http://[::1]:8080", "https://a.example./api/"):
        assert RunOptions(input="x.csv", base_url=url).base_url == url


@pytest.mark.parametrize("command", ["run", "export", "plan", "verify"])
def test_commands_refuse_a_bad_host_in_one_line(tmp_path: Path, command: str) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")
    args = [command, "-o", str(tmp_path / "out.csv")] if command == "export" else [command, str(source)]
    for url in BAD_HOSTS[:3]:
        result = CliRunner().invoke(cli, [*args, "--base-url", url], catch_exceptions=False)
        assert result.exit_code == 2, result.output
        assert "invalid host name" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("text", ["abc", "4/x", "x/4", "1/", "/4", "1.5/4", "0x2/4", "-1/4", "4 4"])
def test_a_shard_that_is_not_numbers_says_so(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--shard takes K/N \(e\.g\. 0/4\) or N, got"):
        parse_shard(text, {})


@pytest.mark.parametrize("index", ["abc", "1.0", "-1", "x1"])
def test_a_job_completion_index_that_is_not_a_number_is_named(index: str) -> None:
    with pytest.raises(ConfigError, match=rf"JOB_COMPLETION_INDEX must be a number .*got {index!r}"):
        parse_shard("4", {"JOB_COMPLETION_INDEX": index})
    assert parse_shard(" 4 ", {"JOB_COMPLETION_INDEX": "3\n"}) == (3, 4)
