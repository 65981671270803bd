"""``run --config FILE`` / ``BULKPATCH_CONFIG``: TOML settings under flags and environment."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from helpers import write

from bulkpatch.cli.config import load
from bulkpatch.cli.main import cli
from bulkpatch.cli.run import run
from bulkpatch.errors import ConfigError


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def rows(tmp_path: Path) -> Path:
    return write(tmp_path / "a.csv", "workload_id,name\nw1,x\n")


def target(result: Result) -> str:
    """The URL a dry run would send its first row to."""
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout.splitlines()[1].split()[1]


def test_keys_are_long_option_names_and_become_click_defaults(tmp_path: Path) -> None:
    config = write(
        tmp_path / "job.toml",
        'base-url = "https://api.test"\nrate = 50\nconcurrency = 4\nheader = ["X-Tenant: 7"]\n'
        'retry-failed = "all"\nprogress = false\nstate = "job.state"\n',
    )
    assert load(str(config), run) == {
        "base_url": "https://api.test",
        "rate": 50,
        "concurrency": 4,
        "headers": ["X-Tenant: 7"],
        "retry_failed": "all",
        "progress": False,
        "state": "job.state",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('token = "abc"', "'token' is a secret: set BULKPATCH_TOKEN"),
        ('client-secret = "abc"', "'client-secret' is a secret: set BULKPATCH_CLIENT_SECRET"),
        ('header = ["X-Api-Key: abc"]', "header 'X-Api-Key' looks like a credential"),
        ("bogus = 1", "unknown key 'bogus'"),
        ('rate = "fast"', "'rate' takes a number, not str 'fast'"),
        ("concurrency = 1.5", "'concurrency' takes an integer"),
        ('full = "yes"', "'full' takes true or false"),
        ('header = "X-Tenant: 7"', "'header' takes a list of strings"),
        ("rate = [", "is not valid TOML"),
        ("concurrency = 0", "'concurrency': 0 is not in the range 1<=x<=10000"),
        ('retry-failed = "sometimes"', "'retry-failed': 'sometimes' is not one of 'transient', 'all'"),
    ],
)
def test_secrets_unknown_keys_and_wrong_types_are_refused(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path / "job.toml", text + "\n")
    with pytest.raises(ConfigError, match="config file") as refused:
        load(str(config), run, click.Context(run))
    assert message in str(refused.value)
    assert "abc" not in str(refused.value)  # a refused secret is never echoed


def test_a_refused_file_is_one_line_exit_2(tmp_path: Path) -> None:
    config = write(tmp_path / "job.toml", 'token = "abc"\n')
    result = invoke("run", str(rows(tmp_path)), "--config", str(config))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"bulkpatch: error: config file {config}: 'token' is a secret:"
        " set BULKPATCH_TOKEN instead, never a file"
    ]


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    source = str(rows(tmp_path))
    config = str(write(tmp_path / "job.toml", 'base-url = "https://file.test"\n'))
    assert target(invoke("run", source, "--config", config, "--dry-run")) == (
        "https://file.test/api/workload_management/v5/workloads/w1"
    )
    env = {"BULKPATCH_BASE_URL": "https://env.test"}
    assert target(invoke("run", source, "--config", config, "--dry-run", env=env)).startswith(
        "https://env.test/"
    )
    flag = invoke("run", source, "--config", config, "--base-url", "https://flag.test", "--dry-run", env=env)
    assert target(flag).startswith("https://flag.test/")
    # BULKPATCH_CONFIG names the file when --config does not.
    by_env = invoke("run", source, "--dry-run", env={"BULKPATCH_CONFIG": config})
    assert target(by_env).startswith("https://file.test/")


def test_help_says_the_order_and_the_file_variable() -> None:
    text = " ".join(invoke("run", "--help").output.split())
    assert "[env var: BULKPATCH_CONFIG]" in text
    assert "A flag beats its environment variable, which beats the file, which beats the default" in text
    assert "[env var: BULKPATCH_TOKEN_URL]" in text


def test_a_file_may_ask_for_json_lines_and_its_errors_follow(tmp_path: Path) -> None:
    config = write(tmp_path / "job.toml", 'log-format = "json"\n')
    result = invoke("run", str(rows(tmp_path)), "--config", str(config))  # no --base-url
    assert result.exit_code == 2
    assert result.stderr.startswith('{"ts":') and '"exit_code":2' in result.stderr
