"""RunOptions (options.py): refused up front, one line, exit 2, before anything is sent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import (
    API,
    ENV,
    bulkpatch_cli,
    fleet_csv,
    run_options,
)

from bulkpatch.errors import ConfigError
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
