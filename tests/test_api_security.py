"""Security of the HTTP API: downloads never render, ids cannot traverse paths, and
CR/LF in reply fields never makes a header of its own."""

from __future__ import annotations

import base64
from typing import Any

from mailbuilder import count

from emaild.intake import Envelope, Outcome
from emaild.store.models import OutboxItem

HTML_MAIL = (
    b"From: Mallory <mallory@customer.test>\r\nTo: support@example.com\r\n"
    b"Subject: See attached\r\nMessage-ID: <html@customer.test>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nHello.\r\n"
    b'--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename="x.html"\r\n\r\n'
    b"<script>alert(document.cookie)</script>\r\n--b--\r\n"
)
DOWNLOAD_HEADERS = ("content-disposition", "x-content-type-options", "content-security-policy")


def mail_in(api: Any, raw: bytes) -> int:
    result = api.app.pipeline.ingest(raw, Envelope(channel="pipe"))
    assert result.outcome is Outcome.NEW_CASE and result.case_number is not None
    return result.case_number


def test_html_attachment_and_raw_message_are_downloads(api: Any) -> None:
    number = mail_in(api, HTML_MAIL)
    with api.client("read") as c:
        [message] = [
            m for m in c.get(f"/cases/{number}").json()["messages"] if m["direction"] == "in"
        ]
        [attachment] = message["attachments"]
        r = c.get(f"/attachments/{attachment['id']}")
        assert r.status_code == 200
        assert b"<script>" in r.content
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"].startswith("attachment;")
        assert 'filename="x.html"' in r.headers["content-disposition"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in r.headers["content-security-policy"]
        raw = c.get(f"/messages/{message['id']}/raw")
        assert raw.status_code == 200 and raw.content == HTML_MAIL
        assert raw.headers["content-disposition"].startswith("attachment;")
        assert all(h in raw.headers for h in DOWNLOAD_HEADERS)
        assert c.get("/attachments/999999").status_code == 404
        assert c.get("/messages/999999/raw").status_code == 404
    with api.client(None) as anon:
        assert anon.get(f"/attachments/{attachment['id']}").status_code == 401


def test_ids_cannot_traverse_paths(api: Any) -> None:
    mail_in(api, HTML_MAIL)
    with api.client("read") as c:
        for path in (
            "/attachments/..%2F..%2F..%2Fetc%2Fpasswd",
            "/attachments/%2e%2e",
            "/messages/1%2F..%2F..%2Fraw",
            "/messages/..%2F1/raw",
            "/attachments/-1",
            "/attachments/1e3",
            "/attachments/99999999999999999999",
            "/cases/1%00",
        ):
            r = c.get(path)
            assert r.status_code in (404, 422), (path, r.status_code)
            assert b"root:" not in r.content
            assert r.headers["content-type"] == "application/problem+json"


def test_cr_lf_in_reply_fields_is_refused_or_neutralised(api: Any, relay_sink: Any) -> None:
    number = mail_in(api, HTML_MAIL)
    relay_sink.wait_for(1, timeout=30)
    relay_sink.clear()
    with api.client("write") as c:
        for field, value in (
            ("to", ["alice@customer.test\r\nBcc: evil@attacker.test"]),
            ("to", ["Eve\r\nBcc: evil@attacker.test <eve@customer.test>"]),
            ("cc", ["bob@customer.test\nX-Injected: 1"]),
            ("to", ["<evil@attacker.test>, <other@attacker.test>"]),
        ):
            r = c.post(f"/cases/{number}/replies", json={"text": "x", field: value})
            assert r.status_code == 422, (field, value, r.text)
        bad_type = {
            "filename": "a.txt",
            "content_type": "text/plain\r\nX-Injected: 1",
            "content_base64": base64.b64encode(b"hi").decode(),
        }
        assert (
            c.post(
                f"/cases/{number}/replies", json={"text": "x", "attachments": [bad_type]}
            ).status_code
            == 422
        )
        assert count(api.app, OutboxItem, OutboxItem.kind == "reply") == 0

        neutralised = {
            "text": "Fine.",
            "subject": "Hi\r\nBcc: evil@attacker.test",
            "attachments": [
                {
                    "filename": "a\r\nX-Injected: 1.txt",
                    "content_type": "text/plain",
                    "content_base64": base64.b64encode(b"hi").decode(),
                }
            ],
        }
        r = c.post(f"/cases/{number}/replies", json=neutralised)
        assert r.status_code == 202, r.text
    [got] = relay_sink.wait_for(1, timeout=30)
    assert got.rcpt_tos == ("mallory@customer.test",)
    mail = got.message()
    assert "Bcc" not in mail and "X-Injected" not in mail
    assert mail["Subject"].startswith("Hi Bcc: evil@attacker.test")
    [part] = list(mail.iter_attachments())
    assert "X-Injected" not in part and part.get_filename() == "a X-Injected: 1.txt"
    assert b"\r\nBcc:" not in got.data and b"\r\nX-Injected:" not in got.data
