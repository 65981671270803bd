"""``--config FILE`` (or ``BULKPATCH_CONFIG``): a job's settings for ``run`` in a TOML file.

A nightly job's settings belong in a file under version control rather than in a long command
line in a crontab. The file's keys are ``run``'s long option names (``base-url``, ``rate``,
``state``, ``header`` as a list...); its values become click's ``default_map``, so the order is
click's own: a flag beats its environment variable, which beats the file, which beats the
built-in default. Secrets never come from the file: credential keys, and headers whose name
says they carry one, are refused (exit 2), as are unknown keys and values of the wrong type:
a typo in a nightly job's file must stop it, not be ignored.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import click

from bulkpatch.cli import stderr
from bulkpatch.errors import ConfigError

#: keys that would put a secret in a file: credentials come from the environment only
SECRET_KEYS = {
    "token": "BULKPATCH_TOKEN",
    "client-secret": "BULKPATCH_CLIENT_SECRET",
    "client-id": "BULKPATCH_CLIENT_ID",
    "password": "the environment",
    "secret": "the environment",
}
# A header that carries a credential: Authorization, Cookie, X-Api-Key, X-Auth-Token...
_SECRET_HEADER = re.compile(r"auth|cookie|token|secret|key|pass|session|signature", re.IGNORECASE)
#: options that make no sense in a file: the file itself, and --help
_NOT_IN_FILE = {"config", "help"}
# The longest file read: a settings file is small; a wrong path to a big file must not hang.
_MOST = 1 << 20


def options_by_key(command: click.Command) -> dict[str, click.Option]:
    """The command's options by the name a config file gives them: the long option, no dashes."""
    found: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in param.opts:
                if opt.startswith("--") and opt[2:] not in _NOT_IN_FILE:
                    found[opt[2:]] = param
    return found


def load(path: str, command: click.Command, ctx: click.Context | None = None) -> dict[str, Any]:
    """The file's settings as a ``default_map`` (parameter name → value); ``ConfigError`` if wrong.

    With ``ctx``, values are also checked as click will check them (ranges, choices), so that
    the error names the file rather than a flag nobody typed.
    """
    where = f"config file {path}"
    try:
        with open(path, "rb") as f:
            data = tomllib.loads(f.read(_MOST).decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    options = options_by_key(command)
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("_", "-")
        if name in SECRET_KEYS:
            raise ConfigError(f"{where}: {key!r} is a secret: set {SECRET_KEYS[name]} instead, never a file")
        option = options.get(key)
        if option is None:
            raise ConfigError(
                f"{where}: unknown key {key!r} (keys are the long options of `bulkpatch run`, e.g. base-url)"
            )
        assert option.name is not None
        defaults[option.name] = _checked(where, key, option, value)
        if ctx is not None:
            try:
                option.type_cast_value(ctx, defaults[option.name])
            except click.BadParameter as exc:
                raise ConfigError(f"{where}: {key!r}: {exc.message}") from None
    return defaults


def _checked(where: str, key: str, option: click.Option, value: Any) -> Any:
    """``value`` if its TOML type fits the option (ranges and choices are click's to check)."""
    kind = option.type
    if option.multiple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{where}: {key!r} takes a list of strings, e.g. {key} = ["..."]')
        if key == "header":
            for header in value:
                name = header.partition(":")[0].strip()
                if _SECRET_HEADER.search(name):
                    raise ConfigError(
                        f"{where}: header {name!r} looks like a credential: pass it with -H from an"
                        " environment variable, never from a file"
                    )
        return value
    if isinstance(kind, click.types.BoolParamType):
        expected, ok = "true or false", isinstance(value, bool)
    elif isinstance(kind, click.types.IntParamType):
        expected, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(kind, click.types.FloatParamType):
        expected, ok = "a number", isinstance(value, int | float) and not isinstance(value, bool)
    else:
        expected, ok = "a string", isinstance(value, str)
    if not ok:
        raise ConfigError(f"{where}: {key!r} takes {expected}, not {type(value).__name__} {value!r}")
    return value


def use_config(ctx: click.Context, _param: click.Parameter, path: str | None) -> None:
    """The ``--config`` callback (eager): the file's settings become the command's defaults."""
    if path is None:
        return
    defaults = load(path, ctx.command, ctx)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    if defaults.get("log_format") in ("text", "json") and not stderr.format_named():
        stderr.use_format(defaults["log_format"])
