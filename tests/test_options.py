"""Run options: a bad URL or --shard is one clear line (ConfigError, exit 2), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import write

from bulkpatch.cli.main import cli
from bulkpatch.errors import ConfigError
from bulkpatch.options import RunOptions, parse_shard

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
