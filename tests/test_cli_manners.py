"""CLI manners: --config after any command, one exit status (2) for usage
mistakes, help texts that read as plain text."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from emaild.cli import cli

# reST/Sphinx markup that click prints verbatim.
MARKUP = re.compile(r"``|:(func|class|meth|mod|ref|attr):`|^\.\. ", re.MULTILINE)


def commands(group: click.Group = cli, path: str = "emaild") -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        assert command is not None
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} {name}")


def test_every_command_takes_config_and_every_option_has_plain_help() -> None:
    seen = list(commands())
    assert len(seen) > 30  # the whole tree, groups and their commands
    for path, command in seen:
        names = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert "--config" in names, f"{path}: no --config"
        text = "\n".join([command.help or "", command.short_help or ""])
        assert not MARKUP.search(text), f"{path}: markup in help: {text!r}"
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{path} {param.opts[0]}: no help"
                assert not MARKUP.search(param.help), f"{path} {param.opts[0]}: {param.help!r}"


def test_config_after_the_subcommand(run_cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[[address]]\naddress = 'help@acme.test'\n")
    for args in (
        ("status", "--json", "--config", str(config)),
        ("--config", str(config), "status", "--json"),
    ):
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr.decode()
        assert [a["address"] for a in json.loads(done.stdout)["addresses"]] == ["help@acme.test"]
    nested = run_cli("address", "list", "--json", "--config", str(config))
    assert nested.returncode == 0, nested.stderr.decode()
    assert "help@acme.test" in nested.stdout.decode()
    missing = run_cli("check", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 78
    assert b"nope.toml" in missing.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("cases", "list", "--status", "bogus"), b"Invalid value for '--status'"),
        (("outbox", "list", "--status", "bogus"), b"Invalid value for '--status'"),
        (("outbox", "retry"), b"name item ids or use --all"),
        (("quarantine", "retry"), b"name entry ids or use --all"),
        (("run", "--log-level", "loud"), b"Invalid value for '--log-level'"),
        (("status", "--no-such-option"), b"No such option"),
        (("cases", "show"), b"Missing argument"),
    ],
)
def test_usage_mistakes_exit_2_with_clicks_message(
    run_cli: Any, args: tuple[str, ...], says: bytes
) -> None:
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr.decode()
    assert says in done.stderr
    assert b"Usage: emaild " in done.stderr


def test_commands_load_lazily_and_the_table_names_every_command() -> None:
    # Importing the CLI and asking its version loads no database or config code...
    probe = (
        "import sys; from emaild.cli import cli; "
        "heavy = [m for m in ('sqlalchemy', 'pydantic', 'emaild.config', 'emaild.app') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    # ...and loading every module registers exactly the commands the table lists.
    from emaild.cli import COMMANDS, LazyGroup

    group = LazyGroup()
    for module in set(COMMANDS.values()):
        importlib.import_module(f"emaild.cli.{module}").register(group)
    assert sorted(group.commands) == sorted(COMMANDS)


def test_version_is_the_installed_distributions() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "emaild", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"emaild, version {importlib.metadata.version('emaild')}"
