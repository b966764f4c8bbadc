"""Verification end to end on loopback, as an admin does it.

``emaild address verify`` runs as a subprocess and sends through a real relay
(``relay_sink``); a ``Forwarder`` plays the mail provider and brings the mail
back to emaild: into the real SMTP listener, or into a real Dovecot mailbox
that ``emaild poll --once`` reads. Both backends (SQLite, PostgreSQL).
"""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forwarder import Forwarder, smtp_to
from smtp_helpers import running_listener
from sqlalchemy import func, select

from emaild.app import App
from emaild.errors import EX_DATAERR
from emaild.store.models import Case, ManagedAddress, Message
from emaild.verification.tokens import VERIFY, TokenSigner

ADDRESS = "help@acme.test"
CUSTOMER = (
    b"From: Carol Customer <carol@customer.test>\r\nTo: help@acme.test\r\n"
    b"Subject: printer on fire\r\nMessage-ID: <fire@customer.test>\r\n"
    b"Date: Sun, 22 Nov 2026 09:00:00 +0000\r\n\r\nIt is on fire.\r\n"
)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def show(run_cli: Any, *args: str) -> dict[str, Any]:
    done = run_cli(*args, "address", "show", ADDRESS, "--json")
    assert done.returncode == 0, done.stderr.decode()
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def cases(app: App) -> list[Case]:
    with app.db.session() as s:
        return list(s.scalars(select(Case).order_by(Case.id)))


def held(app: App) -> int:
    with app.db.session() as s:
        return int(s.scalar(select(func.count(Message.id)).where(Message.state == "held")) or 0)


def verified(app: App) -> bool:
    with app.db.session() as s:
        row = s.get(ManagedAddress, ADDRESS)
        return row is not None and row.verified_at is not None


def send(address: tuple[str, int], raw: bytes, sender: str = "carol@customer.test") -> None:
    with smtplib.SMTP(*address, timeout=30) as client:
        refused = client.sendmail(sender, [ADDRESS], raw)
    assert refused == {}


def test_verify_through_the_smtp_listener(app: App, run_cli: Any, relay_sink: Any) -> None:
    assert run_cli("address", "add", ADDRESS, "--name", "Acme Help").returncode == 0
    app.pipeline.addresses.invalidate()  # the daemon would see it within seconds
    with running_listener(app) as listener:
        # Before verification: accepted (250) and stored, but held.
        send(listener.address, CUSTOMER)
        assert held(app) == 1
        assert cases(app) == []
        assert show(run_cli)["verified"] is False

        with Forwarder(relay_sink, smtp_to(*listener.address)) as forwarder:
            done = run_cli("address", "verify", ADDRESS, env=relay_sink.relay_env)
            assert done.returncode == 0, done.stderr.decode()
            assert b"sent through the relay" in done.stdout
            wait_until(lambda: verified(app))
        assert forwarder.forwarded == 1

    [mail] = relay_sink.received()
    sent = mail.message()
    token = str(sent["X-Emaild-Verify"])
    # One unfolded header line, so scripts find it with grep.
    assert f"\r\nX-Emaild-Verify: {token}\r\n".encode() in mail.data
    assert token.startswith("emaild-verify-")
    assert token in sent.get_body(("plain",)).get_content()
    assert (mail.mail_from, mail.rcpt_tos, str(sent["To"])) == (ADDRESS, (ADDRESS,), ADDRESS)

    info = show(run_cli)
    assert (info["verified"], info["verified_via"], info["held_messages"]) == (True, "smtp", 0)
    # The held mail is now exactly one case; the verification mail is none.
    [case] = cases(app)
    assert case.subject == "printer on fire"
    with app.db.session() as s:
        rows = s.execute(select(Message.message_id, Message.case_id, Message.state)).all()
    states = {mid: (case_id, state) for mid, case_id, state in rows}
    assert states["<fire@customer.test>"] == (case.id, "stored")
    assert states[str(sent["Message-ID"])] == (None, "dropped")
    # Confirming by hand afterwards: the token is spent.
    again = run_cli("address", "confirm", ADDRESS, token)
    assert again.returncode == EX_DATAERR
    assert b"token is already used" in again.stderr


def test_forged_and_expired_tokens_do_not_verify(
    make_app: Any, run_cli: Any, relay_sink: Any, tmp_path: Path
) -> None:
    # Tokens live 2 seconds here, so expiry is real time passing, not a faked clock.
    app = make_app("[verification]\ntoken_ttl_hours = 0.00056\n")
    config = ("--config", str(tmp_path / "emaild.toml"))
    try:
        assert run_cli(*config, "address", "add", ADDRESS).returncode == 0
        app.pipeline.addresses.invalidate()
        with running_listener(app) as listener:
            forged = TokenSigner(b"somebody else's secret, not ours").make(VERIFY, ADDRESS)
            send(
                listener.address,
                (
                    f"From: mallory@evil.test\r\nTo: {ADDRESS}\r\nSubject: verify\r\n"
                    f"Message-ID: <forged@evil.test>\r\nX-Emaild-Verify: {forged}\r\n\r\n"
                    f"{forged}\r\n"
                ).encode(),
                sender="mallory@evil.test",
            )
            assert not verified(app)
            refused = run_cli(*config, "address", "confirm", ADDRESS, forged)
            assert refused.returncode == EX_DATAERR
            assert b"not verified: token is wrong address" in refused.stderr

            done = run_cli(*config, "address", "verify", ADDRESS, env=relay_sink.relay_env)
            assert done.returncode == 0, done.stderr.decode()
            [mail] = relay_sink.wait_for(1)
            time.sleep(2.5)  # the provider sits on it until the token has expired
            with Forwarder(relay_sink, smtp_to(*listener.address)) as forwarder:
                wait_until(lambda: forwarder.forwarded == 1)
        assert not verified(app)
        token = str(mail.message()["X-Emaild-Verify"])
        expired = run_cli(*config, "address", "confirm", ADDRESS, token)
        assert expired.returncode == EX_DATAERR
        assert b"not verified: token is expired" in expired.stderr
        info = show(run_cli, *config)
        assert info["verified"] is False
        # The forged mail is ordinary mail for an unverified address: held. The
        # expired verification mail is recognised as ours: stored, never a case.
        assert info["held_messages"] == 1
        assert cases(app) == []
    finally:
        app.close()


def test_verify_through_imap(dovecot: Any, run_cli: Any, relay_sink: Any, tmp_path: Path) -> None:
    user = dovecot.new_user()
    config_file = tmp_path / "imap.toml"
    config_file.write_text(dovecot.mailbox_toml(user, idle=False), encoding="utf-8")
    config = ("--config", str(config_file))
    assert run_cli(*config, "address", "add", ADDRESS).returncode == 0
    dovecot.append(user, [CUSTOMER])
    polled = run_cli(*config, "poll", "--once", "support")
    assert polled.returncode == 0, polled.stderr.decode()
    before = show(run_cli, *config)
    assert (before["verified"], before["held_messages"]) == (False, 1)

    done = run_cli(*config, "address", "verify", ADDRESS, env=relay_sink.relay_env)
    assert done.returncode == 0, done.stderr.decode()
    # The provider delivers the verification mail into the mailbox emaild polls.
    with Forwarder(relay_sink, lambda mail: dovecot.append(user, [mail.data])) as forwarder:
        wait_until(lambda: forwarder.forwarded == 1)
    polled = run_cli(*config, "poll", "--once", "support")
    assert polled.returncode == 0, polled.stderr.decode()

    after = show(run_cli, *config)
    assert (after["verified"], after["verified_via"], after["held_messages"]) == (True, "imap", 0)
    listed = run_cli(*config, "cases", "list", "--json")
    assert [c["subject"] for c in json.loads(listed.stdout)] == ["printer on fire"]
