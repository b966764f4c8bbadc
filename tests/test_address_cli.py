"""``emaild address`` as an admin runs it: a subprocess on this test's storage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emaild.errors import EX_DATAERR

CONFIG = """
[[address]]
address = "support@example.com"
name = "Example Support"
"""

CUSTOMER_MAIL = (
    b"From: Carol <carol@customer.test>\r\nTo: billing@acme.test\r\nSubject: invoice\r\n"
    b"Message-ID: <inv1@customer.test>\r\n\r\nWhere is my invoice?\r\n"
)


def show(run_cli: Any, address: str, *env_args: str) -> dict[str, Any]:
    done = run_cli(*env_args, "address", "show", address, "--json")
    assert done.returncode == 0, done.stderr.decode()
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_add_show_list_disable_enable_remove(run_cli: Any) -> None:
    done = run_cli(
        "address",
        "add",
        "Billing@Acme.test",
        "--name",
        "Acme Billing",
        "--origin",
        "Web",
        "--priority",
        "High",
        "--alias",
        "invoices@acme.test",
        "--tag",
        "billing",
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"added billing@acme.test (unverified" in done.stdout

    info = show(run_cli, "invoices@acme.test")  # found by its alias too
    assert info["address"] == "billing@acme.test"
    assert info["verified"] is False
    assert info["source"] == "database"
    assert info["enabled"] is True
    settings = info["settings"]
    assert (settings["name"], settings["origin"], settings["priority"]) == (
        "Acme Billing",
        "Web",
        "High",
    )
    assert settings["aliases"] == ["invoices@acme.test"]
    assert settings["tags"] == ["billing"]

    listed = run_cli("address", "list")
    assert listed.returncode == 0
    lines = listed.stdout.decode().splitlines()
    assert lines[0].split() == [
        "ADDRESS",
        "SOURCE",
        "ENABLED",
        "VERIFIED",
        "HELD",
        "NAME",
        "/",
        "PROBLEM",
    ]
    assert lines[1].split()[:5] == ["billing@acme.test", "database", "yes", "no", "0"]

    assert run_cli("address", "disable", "billing@acme.test").returncode == 0
    assert show(run_cli, "billing@acme.test")["enabled"] is False
    assert run_cli("address", "enable", "billing@acme.test").returncode == 0
    assert show(run_cli, "billing@acme.test")["enabled"] is True

    removed = run_cli("address", "remove", "billing@acme.test")
    assert removed.returncode == 0, removed.stderr.decode()
    gone = run_cli("address", "show", "billing@acme.test", "--json")
    assert gone.returncode == EX_DATAERR
    assert b"no routing address billing@acme.test" in gone.stderr


def test_config_addresses_win_and_count_as_verified(run_cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "emaild.toml"
    config.write_text(CONFIG)
    info = show(run_cli, "support@example.com", "--config", str(config))
    assert (info["source"], info["verified"], info["verified_via"]) == ("config", True, "config")

    clash = run_cli("--config", str(config), "address", "add", "support@example.com")
    assert clash.returncode == EX_DATAERR
    assert b"declared in" in clash.stderr and b"edit the file instead" in clash.stderr
    for verb in ("disable", "remove"):
        refused = run_cli("--config", str(config), "address", verb, "support@example.com")
        assert refused.returncode == EX_DATAERR
        assert b"change it there" in refused.stderr
    verify = run_cli("--config", str(config), "address", "verify", "support@example.com")
    assert verify.returncode == EX_DATAERR
    assert b"counts as verified" in verify.stderr


def test_bad_settings_are_refused_with_the_key_named(run_cli: Any) -> None:
    bad = run_cli("address", "add", "not-an-address")
    assert bad.returncode == EX_DATAERR
    assert b"address: not an email address" in bad.stderr
    bad = run_cli("address", "add", "x@acme.test", "--priority", "Whenever")
    assert bad.returncode == 2  # click's usage error names the choices
    assert b"'Whenever' is not one of" in bad.stderr
    bad = run_cli("address", "add", "x@acme.test", "--reopen-days", "-1")
    assert bad.returncode == EX_DATAERR
    assert b"reopen_days: Input should be greater than or equal to 0" in bad.stderr
    twice = [run_cli("address", "add", "x@acme.test") for _ in range(2)]
    assert twice[0].returncode == 0
    assert twice[1].returncode == EX_DATAERR and b"already exists" in twice[1].stderr


def test_remove_refuses_while_mail_is_held(run_cli: Any) -> None:
    assert run_cli("address", "add", "billing@acme.test").returncode == 0
    stored = run_cli("ingest", input=CUSTOMER_MAIL)
    assert stored.returncode == 0
    assert b"held: routing address billing@acme.test is not verified yet" in stored.stderr
    assert show(run_cli, "billing@acme.test")["held_messages"] == 1
    refused = run_cli("address", "remove", "billing@acme.test")
    assert refused.returncode == EX_DATAERR
    assert b"1 message(s) are held for billing@acme.test" in refused.stderr
    forced = run_cli("address", "remove", "billing@acme.test", "--force")
    assert forced.returncode == 0
    assert b"1 message(s) stay held" in forced.stdout


def test_a_disabled_address_is_refused_by_the_listener(app: Any, run_cli: Any) -> None:
    import smtplib

    from smtp_helpers import running_listener

    from emaild.channels.smtp.replies import DISABLED_REJECT, DISABLED_TEMPFAIL

    added = run_cli("address", "add", "billing@acme.test", "--disabled-action", "reject")
    assert added.returncode == 0
    assert run_cli("address", "disable", "billing@acme.test").returncode == 0
    app.pipeline.addresses.invalidate()  # the daemon would see it within seconds
    with running_listener(app) as listener, smtplib.SMTP(*listener.address) as client:
        client.ehlo()
        client.mail("carol@customer.test")
        code, text = client.rcpt("billing@acme.test")
        assert f"{code} {text.decode()}" == DISABLED_REJECT
        client.rset()
        run_cli("address", "add", "sales@acme.test", "--disabled")
        app.pipeline.addresses.invalidate()
        client.mail("carol@customer.test")
        code, text = client.rcpt("sales@acme.test")
        assert f"{code} {text.decode()}" == DISABLED_TEMPFAIL
