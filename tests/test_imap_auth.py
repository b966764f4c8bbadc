"""IMAP logins (LOGIN, PLAIN, XOAUTH2 from a command or a file), TLS modes, mailbox
config checks and ``emaild mailbox test``: against the real Dovecot where a server
is involved.
"""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from dovecot import Dovecot, ImapUser

from emaild.channels.imap.auth import Credentials, MailboxProblem, parse_token
from emaild.channels.imap.connection import ImapUnavailable, connect
from emaild.config import MailboxConfig
from emaild.errors import ConfigError

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def box_for(dovecot: Dovecot, user: ImapUser, **settings: Any) -> MailboxConfig:
    data: dict[str, Any] = {
        "name": "support",
        "host": dovecot.host,
        "port": dovecot.port,
        "tls": "plain",
        "user": user.name,
        "idle": False,
    }
    data.update(settings)
    return MailboxConfig.model_validate(data)


def logs_in(box: MailboxConfig, credentials: Credentials | None = None) -> bool:
    client = connect(box, credentials or Credentials(box))
    try:
        return client.select_folder("INBOX")[b"EXISTS"] >= 0
    finally:
        client.logout()


# --- passwords ---------------------------------------------------------------------
@pytest.mark.dovecot
@pytest.mark.parametrize("mechanism", ["login", "plain"])
def test_password_logins(dovecot: Dovecot, mechanism: str) -> None:
    user = dovecot.new_user()
    assert logs_in(box_for(dovecot, user, auth=mechanism, password=user.password))
    with pytest.raises(MailboxProblem, match="refused the password"):
        logs_in(box_for(dovecot, user, auth=mechanism, password="wrong"))


@pytest.mark.dovecot
def test_password_file_is_read_at_each_login(dovecot: Dovecot, tmp_path: Path) -> None:
    user = dovecot.new_user()
    secret = tmp_path / "pass"
    secret.write_text("wrong\n", encoding="utf-8")
    box = box_for(dovecot, user, password_file=str(secret))
    credentials = Credentials(box)
    with pytest.raises(MailboxProblem, match="refused"):
        logs_in(box, credentials)
    secret.write_text(user.password + "\n", encoding="utf-8")  # rotated: no restart needed
    assert logs_in(box, credentials)
    secret.unlink()
    with pytest.raises(MailboxProblem, match="cannot read password_file"):
        logs_in(box, credentials)


# --- XOAUTH2 ------------------------------------------------------------------------
# Dovecot's XOAUTH2 checks the bearer token against the passdb, so the test
# user's password works as its access token.
@pytest.mark.dovecot
def test_xoauth2_token_from_command_with_expiry(dovecot: Dovecot, tmp_path: Path) -> None:
    user = dovecot.new_user()
    calls = tmp_path / "calls"
    script = tmp_path / "token.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, pathlib
            p = pathlib.Path({str(calls)!r})
            p.write_text(p.read_text() + "x" if p.exists() else "x")
            print(json.dumps({{"access_token": {user.password!r}, "expires_in": 3600}}))
            """
        ),
        encoding="utf-8",
    )
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    box = box_for(dovecot, user, auth="xoauth2", oauth_token_command=command, tls="starttls")
    box = box.model_copy(update={"ca_file": dovecot.ca_file})
    credentials = Credentials(box)
    assert logs_in(box, credentials)
    assert logs_in(box, credentials)
    assert calls.read_text() == "x"  # valid for an hour: fetched once, reused
    deadline = credentials.session_deadline()
    assert deadline is not None
    assert timedelta(minutes=50) < deadline - datetime.now(UTC) < timedelta(minutes=56)


@pytest.mark.dovecot
def test_xoauth2_token_file_expired_or_refused_is_loud(dovecot: Dovecot, tmp_path: Path) -> None:
    user = dovecot.new_user()
    token_file = tmp_path / "token.json"
    box = box_for(dovecot, user, auth="xoauth2", oauth_token_file=str(token_file))
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    token_file.write_text(json.dumps({"access_token": user.password, "expires_at": past}))
    with pytest.raises(MailboxProblem, match="expired at"):
        logs_in(box)

    soon = datetime.now(UTC) + timedelta(seconds=60)  # inside the 300 s margin
    token_file.write_text(
        json.dumps({"access_token": user.password, "expires_at": soon.isoformat()})
    )
    with structlog.testing.capture_logs() as logged:
        assert logs_in(box)  # still works, but nobody refreshes it: an error in the log
    assert [e["log_level"] for e in logged if e["event"] == "imap.oauth.token_expiring"] == [
        "error"
    ]

    token_file.write_text("not-the-token\n")
    with pytest.raises(MailboxProblem, match="refused the XOAUTH2 token"):
        logs_in(box)


def test_token_command_failure_is_reported(tmp_path: Path) -> None:
    box = MailboxConfig.model_validate(
        {"name": "gmail", "host": "imap.example.com", "user": "u@example.com"}
        | {
            "auth": "xoauth2",
            "oauth_token_command": f"{sys.executable} -c 'import sys; "
            'sys.stderr.write("refresh token revoked\\n"); sys.exit(3)\'',
        }
    )
    with pytest.raises(MailboxProblem, match="exited with status 3: refresh token revoked"):
        Credentials(box).token()


@pytest.mark.parametrize(
    ("text", "expires"),
    [
        ("ya29.token\n", None),
        ('{"access_token": "t", "expires_in": 3599}', NOW + timedelta(seconds=3599)),
        ('{"access_token": "t", "expires_at": 1740830400}', datetime(2025, 3, 1, 12, tzinfo=UTC)),
        ('{"access_token": "t", "expires_at": "2025-03-01T13:00:00Z"}', NOW + timedelta(hours=1)),
    ],
)
def test_parse_token_formats(text: str, expires: datetime | None) -> None:
    token = parse_token(text, NOW)
    assert token.expires_at == expires
    assert token.value in ("ya29.token", "t")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("{not json", "not valid JSON"),
        ('{"token": "t"}', "access_token"),
        ('{"access_token": "t", "expires_in": "soon"}', "expires_in"),
        ("two words", "whitespace"),
    ],
)
def test_parse_token_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_token(text, NOW)


# --- TLS ----------------------------------------------------------------------------
@pytest.mark.dovecot
def test_implicit_tls_and_starttls_verify_the_certificate(dovecot: Dovecot) -> None:
    if not dovecot.ca_file:
        pytest.fail("openssl is needed to give the test Dovecot a certificate")
    user = dovecot.new_user()
    implicit = box_for(dovecot, user, tls="implicit", port=dovecot.tls_port, password=user.password)
    starttls = box_for(dovecot, user, tls="starttls", password=user.password)
    for box in (implicit, starttls):
        with pytest.raises(ImapUnavailable, match="TLS certificate not trusted"):
            logs_in(box)
        assert logs_in(box.model_copy(update={"ca_file": dovecot.ca_file}))


@pytest.mark.dovecot
def test_unreachable_and_wrong_port_are_transient(dovecot: Dovecot) -> None:
    from dovecot import free_port

    user = dovecot.new_user()
    with pytest.raises(ImapUnavailable, match="connection refused"):
        logs_in(box_for(dovecot, user, port=free_port(), password=user.password))


# --- config ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ('host = "imap.example.com"\ntls = "plain"', "only allowed for a loopback host"),
        ('after_store = "move"', "needs move_to"),
        ('auth = "xoauth2"', "oauth_token_command"),
        ('password = "a"\npassword_file = "b"', "not both"),
        ('name = "has space"', "letters, digits"),
        ("folders = []", "folder names"),
        ("idle_reissue_seconds = 1800", "less than or equal to 1740"),
        ("bogus = 1", "unknown key"),
    ],
)
def test_mailbox_config_mistakes_name_file_line_and_key(
    make_config: Any, lines: str, problem: str
) -> None:
    base = {"name": '"support"', "host": '"127.0.0.1"', "user": '"u"'}
    for line in lines.splitlines():
        base.pop(line.split("=")[0].strip(), None)
    body = "".join(f"{k} = {v}\n" for k, v in base.items()) + lines + "\n"
    with pytest.raises(ConfigError) as caught:
        make_config("[[mailbox]]\n" + body)
    message = str(caught.value)
    assert problem in message
    assert "emaild.toml:" in message and "mailbox" in message


def test_duplicate_mailbox_names_are_refused(make_config: Any) -> None:
    one = '[[mailbox]]\nname = "a"\nhost = "h.example"\nuser = "u"\n'
    with pytest.raises(ConfigError, match="used twice"):
        make_config(one + one)


def test_default_ports_follow_the_tls_mode() -> None:
    base = {"name": "a", "host": "localhost", "user": "u"}
    assert MailboxConfig.model_validate(base).effective_port == 993
    assert MailboxConfig.model_validate(base | {"tls": "starttls"}).effective_port == 143
    assert (
        MailboxConfig.model_validate(base | {"tls": "plain", "port": 1143}).effective_port == 1143
    )


# --- emaild mailbox test ------------------------------------------------------------------
@pytest.mark.dovecot
def test_mailbox_test_command_reports_in_plain_words(dovecot: Dovecot, run_cli: Any) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [b"From: a@b.example\r\nSubject: x\r\n\r\nhi\r\n"] * 2)
    url = f"imap://{user.name}@{dovecot.host}:{dovecot.port}/INBOX"

    good = run_cli("mailbox", "test", "--json", url, env={"EMAILD_IMAP_PASSWORD": user.password})
    assert good.returncode == 0, good.stderr.decode()
    report = json.loads(good.stdout)
    assert report["ok"] and "IDLE" in report["capabilities"]
    assert report["folders"]["INBOX"]["messages"] == 2

    refused = run_cli("mailbox", "test", url, env={"EMAILD_IMAP_PASSWORD": "nope"})
    assert refused.returncode == 78
    assert f"the server refused the password for user {user.name}" in refused.stderr.decode()

    from dovecot import free_port

    down = f"imap://{user.name}@127.0.0.1:{free_port()}/INBOX"
    unreachable = run_cli("mailbox", "test", down, env={"EMAILD_IMAP_PASSWORD": "x"})
    assert unreachable.returncode == 75
    assert "connection refused" in unreachable.stderr.decode()

    missing = run_cli("mailbox", "test", "nosuchbox")
    assert missing.returncode == 78
    assert "no mailbox named 'nosuchbox'" in missing.stderr.decode()


def test_url_with_password_is_refused(run_cli: Any) -> None:
    done = run_cli("poll", "--once", "imap://u:secret@127.0.0.1/INBOX")
    assert done.returncode == 78
    assert "EMAILD_IMAP_PASSWORD" in done.stderr.decode()
    assert b"secret" not in done.stderr
