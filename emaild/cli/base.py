"""What every subcommand shares: the lazily opened app and error mapping."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from emaild.errors import EmaildError

if TYPE_CHECKING:  # imported when a command opens it: ``--version`` and ``--help`` stay fast
    from emaild.app import App
    from emaild.config import Config


class Context:
    """Lazily loaded config and app, shared by the subcommands of one invocation."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._app: App | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from emaild.config import config_path_from, load_config

            self._config = load_config(config_path_from(self.config_path, os.environ))
            from emaild import logs

            logs.configure(self._config.logging.level, self._config.logging.format)
        return self._config

    def quiet(self, verbose: bool = False) -> None:
        """Log only errors: an MTA reading a pipe command's stderr wants one clear line."""
        if not verbose:
            from emaild import logs

            logs.configure("error", self.config.logging.format)

    def app(self) -> App:
        if self._app is None:
            from emaild.app import App

            self._app = App.open(self.config)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


class EmaildGroup(click.Group):
    """Maps ``EmaildError`` to one clear line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EmaildError as exc:
            click.echo(f"emaild: {exc}", err=True)
            sys.exit(exc.exit_code)
        finally:
            obj = ctx.obj
            if isinstance(obj, Context):
                obj.close()


pass_ctx = click.make_pass_decorator(Context)


def _late_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        obj = ctx.find_object(Context)
        if obj is not None:
            obj.config_path = value


def add_config_option(command: click.Command) -> None:
    """Accept ``--config`` after the subcommand too (``emaild check --config X``).

    The last ``--config`` given wins; it only sets the path the lazily loaded
    config is read from, so it must come before anything opens the app.
    """
    if not any(p.name == "late_config" for p in command.params):
        command.params.append(
            click.Option(
                ["--config", "late_config"],
                type=click.Path(dir_okay=False, path_type=str),
                default=None,
                expose_value=False,
                callback=_late_config,
                help="Config file (same as 'emaild --config').",
            )
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_config_option(sub)


def read_input(path: str) -> bytes:
    """Bytes from FILE or ``-`` (stdin)."""
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()
