"""Managing webhooks: ``emaild webhook`` (a real subprocess) and ``/api/v1/webhooks``
(a real daemon over HTTP), the SSRF rule for run-time subscriptions, the config
winning on a name, deliveries listed and replayed with the same ``webhook-id``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mailbuilder import build_mail
from webhook_receiver import LOOPBACK, hook_toml, receiver, running, wait_until

from emaild.errors import EX_DATAERR, InputError
from emaild.intake import Envelope
from emaild.webhooks import admin


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # CLI, not storage
def test_cli_add_test_list_remove_and_the_private_target_rule(run_cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "emaild.toml"
    config.write_text("")
    with receiver() as hook:
        refused = run_cli("--config", str(config), "webhook", "add", hook.url)
        assert refused.returncode == EX_DATAERR, refused.stderr
        assert b"private" in refused.stderr and b"allow_private" in refused.stderr

        secret = tmp_path / "secret"
        secret.write_text(hook.secret)
        cfg_secret = tmp_path / "cfg-secret"
        cfg_secret.write_text(hook.secret)
        config.write_text(
            "[webhooks]\nallow_private = true\n"
            f'[[webhook]]\nname = "cfg"\nurl = "{hook.url}"\nsecret_file = "{cfg_secret}"\n'
        )
        base = ("--config", str(config), "webhook")
        added = run_cli(
            *base,
            "add",
            hook.url,
            "--name",
            "crm",
            "--secret-file",
            str(secret),
            "--event",
            "case.created",
            "--json",
        )
        assert added.returncode == 0, added.stderr
        row = json.loads(added.stdout)
        assert row["name"] == "crm" and row["events"] == ["case.created"]
        assert row["secret"] == hook.secret

        clash = run_cli(*base, "add", hook.url, "--name", "cfg")
        assert clash.returncode == EX_DATAERR and b"config wins" in clash.stderr

        tested = run_cli(*base, "test", "crm")
        assert tested.returncode == 0, tested.stderr
        [ping] = hook.received
        assert ping.verified and ping.json["type"] == "webhook.test"

        listed = json.loads(run_cli(*base, "list", "--json").stdout)
        assert {(r["name"], r["source"]) for r in listed} == {
            ("cfg", "config"),
            ("crm", "database"),
        }
        assert all("secret" not in r for r in listed)
        assert run_cli(*base, "remove", "cfg").returncode == EX_DATAERR  # edit the file
        assert run_cli(*base, "remove", "crm").returncode == 0


def test_deliveries_failed_then_replayed_with_the_same_id(make_app: Any, tmp_path: Path) -> None:
    with receiver() as hook:
        app = make_app(
            hook_toml(
                hook.url,
                hook.secret_file(tmp_path),
                extra='events = ["case.created"]',
                retry_base_seconds=60.0,
                retry_max_seconds=60.0,
            ),
            **LOOPBACK,
        )
        hook.answer = 500
        app.pipeline.ingest(build_mail(), Envelope(channel="pipe"))
        with running(app):
            hook.wait_for(lambda got: len(got) == 1)
            wait_until(lambda: admin.deliveries(app.db, failed=True))
            [failed] = admin.deliveries(app.db, failed=True)
            assert failed["status"] == "pending" and failed["last_status"] == 500
            assert failed["attempts"] == 1 and failed["type"] == "case.created"
            hook.answer = 200
            assert admin.replay(app.db, ids=[failed["id"]]) == [failed["id"]]
            hook.wait_delivered(1)
            wait_until(lambda: admin.deliveries(app.db)[0]["status"] == "delivered")
            # a delivered one can be replayed too: the receiver deduplicates by id
            assert admin.replay(app.db, since=app.pipeline.clock().replace(year=2000)) == [
                failed["id"]
            ]
            hook.wait_delivered(2)
        first, second, third = hook.received
        assert first.id == second.id == third.id
        assert all(r.verified for r in hook.received)
        assert admin.deliveries(app.db, failed=True) == []
        with pytest.raises(InputError, match="config file"):
            admin.remove(app.db, "test")  # a [[webhook]]: edit the file


def test_api_manages_webhooks_with_admin_scope_only(make_api: Any) -> None:
    server = make_api("[webhooks]\nallow_private = false\n")
    # A public address given as an IP literal (no DNS); nothing is ever sent to it.
    public = "http://8.8.8.8:9/hook"
    with server.client("admin") as client, server.client("write") as writer:
        assert writer.get("/webhooks").status_code == 403
        refused = client.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"})
        assert refused.status_code == 422 and "allow_private" in refused.json()["detail"]
        assert client.post("/webhooks", json={"url": "ftp://example.com/x"}).status_code == 422
        assert client.get("/webhooks").json() == {"items": []}
        assert client.delete("/webhooks/nope").status_code == 404
        made = client.post(
            "/webhooks", json={"url": public, "name": "crm", "events": ["note.added"]}
        )
        assert made.status_code == 201, made.text
        assert made.json()["secret"].startswith("whsec_")
        assert client.post("/webhooks", json={"url": public, "name": "crm"}).status_code == 409
        [listed] = client.get("/webhooks").json()["items"]
        assert listed["name"] == "crm" and "secret" not in listed
        assert client.get("/webhooks/deliveries").json() == {"items": []}
        assert client.delete("/webhooks/crm").status_code == 204
        assert client.get("/webhooks").json() == {"items": []}


def test_private_addresses_hidden_in_ipv6_are_not_public() -> None:
    import ipaddress

    from emaild.config_webhooks import check_url
    from emaild.webhooks.targets import is_public

    def public(text: str) -> bool:
        return is_public(ipaddress.ip_address(text))

    assert public("93.184.216.34") and public("2606:2800:220:1:248:1893:25c8:1946")
    for hidden in (
        "10.0.0.1",
        "::ffff:10.0.0.1",  # IPv4-mapped
        "64:ff9b::a00:1",  # NAT64 to 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 to 169.254.169.254
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "::127.0.0.1",  # IPv4-compatible
        "fd00::1",
    ):
        assert not public(hidden), hidden
    assert public("64:ff9b::5db8:d822")  # NAT64 to a public address stays public
    with pytest.raises(ValueError, match="not a port number"):
        check_url("http://127.0.0.1:99999/hook")
