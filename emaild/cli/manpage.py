"""emaild(1), generated from the click command tree: ``python -m emaild.cli.manpage``.

The page is written from the same help texts ``--help`` prints, so it cannot
drift from the CLI; ``docs/emaild.1`` is its output, checked by a test and
installed as ``share/man/man1/emaild.1``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import click

from emaild.cli import cli

EXIT_STATUS = [
    ("0", "done."),
    ("1", "emaild status only: something needs attention (listed under Attention)."),
    ("2", "a usage mistake: unknown command or option, bad value, missing argument."),
    ("65", "unusable input (empty, not a message, over the size limit): an MTA bounces it."),
    ("66", "a named file, case or entry does not exist."),
    (
        "75",
        "try again later: storage unavailable, or (emaild ingest) any local, fixable "
        "trouble; an MTA keeps the mail and retries.",
    ),
    ("78", "configuration error: fix the configuration."),
]


def _esc(text: str) -> str:
    """Text safe in roff: backslashes, and a leading dot or quote would be requests."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line) if line[:1] in (".", "'") else line for line in text.splitlines()]
    return "\n".join(lines)


def _walk(group: click.Group, path: str) -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        assert command is not None
        if command.hidden:
            continue
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from _walk(command, f"{path} {name}")


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def render() -> str:
    """The whole page as roff."""
    ctx = click.Context(cli, info_name="emaild")
    out = [
        '.TH EMAILD 1 "" "emaild" "User Commands"',
        ".SH NAME",
        "emaild \\- turn support email into cases",
        ".SH SYNOPSIS",
        ".B emaild",
        "[\\fB\\-\\-config\\fR \\fIFILE\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        _esc(
            "emaild receives support email over SMTP/LMTP, IMAP or a pipe from the MTA and "
            "turns each message into a case: routed, run through the rules, threaded, "
            "stored, and answered where appropriate. --config FILE (or EMAILD_CONFIG) names "
            "the configuration and is accepted before or after any command; without one "
            "emaild runs on built-in defaults, with the rules and templates shipped in the "
            "package."
        ),
        ".SH COMMANDS",
    ]
    for path, command in _walk(cli, "emaild"):
        sub = click.Context(command, info_name=path.split()[-1], parent=ctx)
        pieces = command.collect_usage_pieces(sub)
        out += [".SS " + _esc(" ".join([path, *pieces]))]
        out += [f"{_esc(p)}\n.PP" for p in _paragraphs(command.help or "")]
        for param in command.params:
            record = param.get_help_record(sub)
            if record is None or not isinstance(param, click.Option):
                continue
            out += [".TP", f"\\fB{_esc(record[0])}\\fR", _esc(" ".join(record[1].split()))]
    out += [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS:
        out += [".TP", f"\\fB{code}\\fR", _esc(meaning)]
    out += [
        ".SH ENVIRONMENT",
        _esc(
            "EMAILD_CONFIG, EMAILD_STATE_DIR, EMAILD_DATABASE_URL, EMAILD_RULES_DIR, "
            "EMAILD_TEMPLATES_DIR, EMAILD_SMTP_LISTEN, EMAILD_LMTP_LISTEN, EMAILD_SMTP_RELAY, "
            "EMAILD_IMAP_PASSWORD: see the README."
        ),
        ".SH FILES",
        ".TP",
        "\\fI/etc/emaild/emaild.toml\\fR",
        _esc("the configuration (every key documented in config/emaild.toml)."),
        ".TP",
        "\\fI/var/lib/emaild\\fR",
        _esc("the state directory: database, blobs, token secret; private (0700)."),
        ".SH SEE ALSO",
        "postfix(1), pipe(8), systemd.socket(5)",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
