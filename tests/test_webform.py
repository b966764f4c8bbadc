"""Web-to-Case over plain HTTP: the interface, the case it opens, its trace and answer.

A real daemon (HTTP, outbox, SMTP sink) on loopback; the challenge is solved
with the ``altcha`` library as any client would.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from smtp_helpers import free_port
from sqlalchemy import select
from webform_helpers import JSON, fields, form_toml, solve, solved

from emaild.store.models import Attachment, Case, Message

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _client(server: Any) -> httpx.Client:
    return httpx.Client(base_url=server.base, timeout=30)


def test_defaults_challenge_json_answer_trace_and_acknowledgement(
    make_api: Any, relay_sink: Any
) -> None:
    # Only name and address: every other setting is a default (fill time, origin, template).
    server = make_api('[[webform]]\nname = "contact"\naddress = "support@example.com"\n')
    with _client(server) as client:
        challenge = client.get("/web-to-case/contact/challenge")
        assert challenge.status_code == 200
        assert challenge.headers["cache-control"] == "no-store"
        body = challenge.json()
        assert set(body) == {"parameters", "signature"}
        assert body["parameters"]["data"]["form"] == "contact"
        payload = solve(body)
        time.sleep(2.05)  # the default minimum fill time
        own = {"Origin": server.base, **JSON}
        answer = client.post(
            "/web-to-case/contact", data={**fields(), "altcha": payload}, headers=own
        )
    assert answer.status_code == 201, answer.text
    data = answer.json()
    assert data["status"] == "received" and isinstance(data["case"], int)
    with server.app.db.session() as session:
        case = session.get(Case, data["case"])
        assert case is not None and case.origin == "Web" and case.customer == "ann@customer.test"
        mine = select(Message).where(Message.case_id == case.id, Message.direction == "in")
        message = session.scalars(mine).one()
        assert message.channel == "web"
        raw = server.app.blobs.read(message.raw_sha256)
        trace = message.decision_trace
    assert raw.startswith(b"From: Ann Example <ann@customer.test>")
    web = next(d for d in trace if d["decision"] == "web form")
    assert web["challenge"] == "pass" and web["honeypot"] == "empty"
    assert web["origin"] == server.base and web["daily_cap"] == "ok"
    assert web["fill_seconds"] >= 2
    chosen = next(d for d in trace if d["decision"] == "case fields")
    assert chosen["origin"] == "Web" and chosen["set_by"]["origin"] == "web form contact"
    # The default acknowledgement reaches the SMTP sink.
    mail = relay_sink.wait_for(1, timeout=20)[0]
    assert mail.rcpt_tos == ("ann@customer.test",)
    assert f"[Case #{data['case']:08d}]" in str(mail.message()["Subject"])


def test_without_a_valid_challenge_no_case_opens(make_api: Any) -> None:
    server = make_api(form_toml())
    with _client(server) as client:
        missing = client.post("/web-to-case/contact", data=fields(), headers=JSON)
        bogus = client.post(
            "/web-to-case/contact", data={**fields(), "altcha": "e30="}, headers=JSON
        )
        garbage = client.post(
            "/web-to-case/contact", data={**fields(), "altcha": "%%%"}, headers=JSON
        )
        # A solution that is not one: another derived key.
        good = json.loads(base64.b64decode(solved(client)))
        good["solution"]["derivedKey"] = "00" * 32
        tampered = base64.b64encode(json.dumps(good).encode()).decode()
        wrong = client.post(
            "/web-to-case/contact", data={**fields(), "altcha": tampered}, headers=JSON
        )
        page = client.post("/web-to-case/contact", data=fields())
    for answer in (missing, bogus, garbage, wrong):
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert "challenge" in answer.json()["detail"]
    assert page.status_code == 400 and "text/html" in page.headers["content-type"]
    assert "challenge" in page.text
    with server.app.db.session() as session:
        assert session.scalars(select(Case)).first() is None


def test_attachment_fields_tags_and_json_variant(make_api: Any) -> None:
    server = make_api(
        form_toml(
            'priority = "High"\ntags = ["web"]\n'
            '[[webform.fields]]\nname = "order"\nmaps_to = "tag"\n'
            '[[webform.fields]]\nname = "area"\nmaps_to = "category"\n'
            'options = ["Billing", "Hardware"]\n'
        )
    )
    blob = bytes(range(256)) * 40 + b"\r\n.\r\nend"
    with _client(server) as client:
        answer = client.post(
            "/web-to-case/contact",
            data={**fields(order="A-17", area="Hardware"), "altcha": solved(client)},
            files=[("attachment", ("log.bin", blob, "application/octet-stream"))],
            headers=JSON,
        )
        assert answer.status_code == 201, answer.text
        as_json = client.post(
            "/web-to-case/contact",
            json={**fields(subject="JSON please"), "altcha": solved(client)},
            headers=JSON,
        )
        assert as_json.status_code == 201, as_json.text
        bad_choice = client.post(
            "/web-to-case/contact",
            data={**fields(area="Nope"), "altcha": solved(client)},
            headers=JSON,
        )
        assert bad_choice.status_code == 422 and "area" in bad_choice.json()["detail"]
        for email in ("not an address", "jörg@example.com", "a@b@c.test"):
            bad = client.post(
                "/web-to-case/contact",
                data={**fields(email=email), "altcha": solved(client)},
                headers=JSON,
            )
            assert bad.status_code == 422 and "email" in bad.json()["detail"], bad.text
    with server.app.db.session() as session:
        case = session.get(Case, answer.json()["case"])
        assert case is not None
        assert (case.priority, case.category) == ("High", "Hardware")
        assert set(case.tags) >= {"web", "order:A-17"}
        [attachment] = session.scalars(select(Attachment)).all()
        assert attachment.filename == "log.bin"
        assert server.app.blobs.read(attachment.sha256) == blob
        other = session.get(Case, as_json.json()["case"])
        assert other is not None and other.subject == "JSON please"


def test_double_submit_is_one_case_and_hidden_record_information(make_api: Any) -> None:
    server = make_api(form_toml("hide_record_information = true"))
    with _client(server) as client:
        data = {**fields(), "altcha": solved(client), "nonce": "page-nonce-0001"}
        first = client.post("/web-to-case/contact", data=data, headers=JSON)
        again = client.post("/web-to-case/contact", data=data, headers=JSON)
        browser = client.post("/web-to-case/contact", data=data)
    assert first.status_code == 201 and first.json() == {"status": "received"}
    assert again.status_code == 200 and again.json() == {"status": "received"}
    assert browser.status_code == 303
    assert browser.headers["location"] == "/web-to-case/contact/thanks"
    with server.app.db.session() as session:
        assert len(session.scalars(select(Case)).all()) == 1
        inbound = select(Message).where(Message.direction == "in")
        assert len(session.scalars(inbound).all()) == 1


def test_page_thanks_static_and_csp(make_api: Any) -> None:
    server = make_api(form_toml())
    with _client(server) as client:
        page = client.get("/web-to-case/contact")
        script = client.get("/web-to-case/static/webform.js")
        missing = client.get("/web-to-case/nope")
        answer = client.post("/web-to-case/contact", data={**fields(), "altcha": solved(client)})
        thanks = client.get(answer.headers["location"])
        forged = client.get("/web-to-case/contact/thanks?ref=99.x.y")
    assert page.status_code == 200 and "<form" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text and " style=" not in page.text
    assert script.status_code == 200 and "crypto.subtle.digest" in script.text
    assert missing.status_code == 404
    assert answer.status_code == 303
    assert "Your case number is 1." in thanks.text
    assert "case number" not in forged.text


def test_webform_html_prints_the_form(run_cli: Any, tmp_path: Any) -> None:
    config = tmp_path / "web.toml"
    config.write_text(
        form_toml('[[webform.fields]]\nname = "order"\nlabel = "Order number"\n'),
        encoding="utf-8",
    )
    done = run_cli(
        "--config",
        str(config),
        "webform",
        "html",
        "contact",
        "--base-url",
        "https://help.example.com",
    )
    assert done.returncode == 0, done.stderr
    html = done.stdout.decode()
    assert "<form" in html and 'action="https://help.example.com/web-to-case/contact"' in html
    assert '<label for="ewf-order">Order number</label>' in html
    assert 'autocomplete="email"' in html and "<script>" not in html
    checked = run_cli("--config", str(config), "check")
    assert checked.returncode == 0, checked.stderr
    assert b"web forms: /web-to-case/contact -> support@example.com" in checked.stdout
    unknown = run_cli("--config", str(config), "web", "html", "nope")
    assert unknown.returncode == 64 and b"contact" in unknown.stderr


def test_forged_web_header_in_mail_is_ignored(make_app: Any) -> None:
    app = make_app()
    raw = (
        b"From: mallory@evil.test\r\nTo: support@example.com\r\nSubject: hi\r\n"
        b"Message-ID: <forged@evil.test>\r\n"
        b'X-Emaild-Web: {"defences": {}, "fields": {"origin": "Web", "priority": "Urgent"},'
        b' "form": "contact", "sig": "00"}\r\n\r\nbody\r\n'
    )
    from emaild.intake import Envelope

    result = app.pipeline.ingest(
        raw,
        Envelope(channel="smtp", mail_from="mallory@evil.test", rcpt_to=("support@example.com",)),
    )
    assert result.case_number is not None, result
    with app.db.session() as session:
        case = session.get(Case, result.case_number)
        assert case is not None and (case.origin, case.priority) == ("Email", "Medium")
    assert any(d["decision"] == "web form header ignored" for d in result.trace)


def test_confirm_email_opens_the_case_only_from_the_mailed_link(
    make_api: Any, relay_sink: Any
) -> None:
    port = free_port()
    server = make_api(
        form_toml("confirm_email = true") + f'[web]\npublic_url = "http://127.0.0.1:{port}"\n',
        EMAILD_HTTP_LISTEN=f"127.0.0.1:{port}",
    )
    with _client(server) as client:
        answer = client.post(
            "/web-to-case/contact", data={**fields(), "altcha": solved(client)}, headers=JSON
        )
        assert answer.status_code == 202 and answer.json() == {
            "status": "received",
            "confirm": True,
        }
        with server.app.db.session() as session:
            assert session.scalars(select(Case)).first() is None
        mail = relay_sink.wait_for(1, timeout=20)[0]
        assert mail.rcpt_tos == ("ann@customer.test",)
        body = mail.message().get_content()
        url = next(w for w in body.split() if "/confirm?" in w)
        assert url.startswith(server.base)
        forged = client.get(url.replace("token=", "token=0"))
        shown = client.get(url)  # what a link scanner fetches: a button, no case
        with server.app.db.session() as session:
            assert session.scalars(select(Case)).first() is None
        assert shown.status_code == 200 and '<form method="post"' in shown.text
        opened = client.post(url)
        again = client.post(url)
        forged_post = client.post(url.replace("token=", "token=0"))
    assert forged.status_code == 400 and forged_post.status_code == 400
    assert opened.status_code == 200 and "Your case number is 1." in opened.text
    assert "Your case number is 1." in again.text  # the same answer, no second case
    with server.app.db.session() as session:
        [case] = session.scalars(select(Case)).all()
        assert case.origin == "Web"
    # Then the acknowledgement, like any new case.
    ack = relay_sink.wait_for(2, timeout=20)[1]
    assert "[Case #00000001]" in str(ack.message()["Subject"])


def test_confirm_email_needs_a_public_url(make_config: Any) -> None:
    from emaild.errors import ConfigError

    with pytest.raises(ConfigError, match=r"public_url.*Host") as caught:
        make_config(form_toml("confirm_email = true"))
    assert caught.value.key == "webform.0.confirm_email"
