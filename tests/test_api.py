"""The HTTP API against the real daemon on a loopback port, on SQLite and PostgreSQL:
auth, case list/detail/patch, notes, events, idempotency and the ETag race."""

from __future__ import annotations

import ssl
import threading
from typing import Any

import httpx
import pytest
from mailbuilder import build_mail, count

from emaild.intake import Envelope, Outcome
from emaild.store.models import CaseEvent, IdempotencyKey

PROBLEM = "application/problem+json"


def mail_in(api: Any, n: int, **kwargs: Any) -> int:
    raw = build_mail(message_id=f"<q{n}@customer.test>", subject=f"Question {n}", **kwargs)
    result = api.app.pipeline.ingest(raw, Envelope(channel="pipe"))
    assert result.outcome is Outcome.NEW_CASE
    assert result.case_number is not None
    return result.case_number


def test_auth_no_token_wrong_token_wrong_scope(api: Any) -> None:
    number = mail_in(api, 1)
    with api.client(None) as anon:
        assert anon.get("/health").json() == {"status": "ok"}  # the one open endpoint
        for method, path in (("GET", "/cases"), ("GET", f"/cases/{number}"), ("GET", "/status")):
            r = anon.request(method, path)
            assert r.status_code == 401
            assert r.headers["content-type"] == PROBLEM
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["status"] == 401
        bad = anon.get("/cases", headers={"Authorization": "Bearer emaild_forged"})
        assert bad.status_code == 401
        basic = anon.get("/cases", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert basic.status_code == 401
    with api.client("read") as reader:
        assert reader.get("/cases").status_code == 200
        r = reader.patch(f"/cases/{number}", json={"status": "closed"})
        assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
        assert reader.post(f"/cases/{number}/notes", json={"text": "x"}).status_code == 403
        assert reader.post(f"/cases/{number}/replies", json={"text": "x"}).status_code == 403
    with api.client("write") as writer:  # a token for another action: retry is admin
        assert writer.post("/quarantine/1/retry").status_code == 403
    assert count(api.app, CaseEvent, CaseEvent.kind == "case.status") == 0


def test_list_filters_and_keyset_pages(api: Any) -> None:
    numbers = [mail_in(api, n) for n in range(5)]
    with api.client("write") as c:
        c.patch(f"/cases/{numbers[1]}", json={"status": "pending", "tags": ["vip", "billing"]})
        c.patch(f"/cases/{numbers[3]}", json={"owner": "bob", "priority": "High"})
        page = c.get("/cases", params={"limit": 2}).json()
        assert [i["number"] for i in page["items"]] == numbers[::-1][:2]
        assert set(page["items"][0]) >= {"number", "subject", "status", "priority", "origin"}
        seen = [i["number"] for i in page["items"]]
        while page["next"]:
            page = c.get("/cases", params={"limit": 2, "cursor": page["next"]}).json()
            seen += [i["number"] for i in page["items"]]
        assert seen == numbers[::-1]

        def only(**params: Any) -> list[int]:
            r = c.get("/cases", params=params)
            assert r.status_code == 200, r.text
            return [i["number"] for i in r.json()["items"]]

        assert only(status="pending") == [numbers[1]]
        assert only(tag="vip") == [numbers[1]]
        assert only(tag="vi") == []  # a whole tag, not a substring
        assert only(owner="bob", priority="High") == [numbers[3]]
        assert only(q="question 2") == [numbers[2]]
        assert only(q="100%") == []
        assert only(customer="ALICE@customer.test") == numbers[::-1]
        assert only(routing_address="nobody@example.com") == []
        assert only(updated_since="2999-01-01T00:00:00Z") == []
        assert c.get("/cases", params={"cursor": "garbage"}).status_code == 422
        assert c.get("/cases", params={"status": "bogus"}).status_code == 422
        assert c.get("/cases", params={"limit": 0}).status_code == 422


def test_detail_patch_etag_and_events(api: Any) -> None:
    number = mail_in(api, 1)
    with api.client("write") as c:
        r = c.get(f"/cases/{number}")
        assert r.status_code == 200
        case = r.json()
        # (The auto-response joins the case as an outbound message once the outbox sends it.)
        [m] = [x for x in case["messages"] if x["direction"] == "in"]
        assert (m["direction"], m["message_id"]) == ("in", "<q1@customer.test>")
        assert m["decision_trace"] and case["participants"][0]["address"] == "alice@customer.test"
        assert case["links"] == {"linked_case": None, "follow_ups": []}
        tag = r.headers["etag"]

        r = c.patch(
            f"/cases/{number}", json={"status": "open", "owner": "ann"}, headers={"If-Match": tag}
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "open" and r.json()["owner"] == "ann"
        assert r.headers["etag"] != tag
        stale = c.patch(f"/cases/{number}", json={"status": "closed"}, headers={"If-Match": tag})
        assert stale.status_code == 412 and stale.headers["content-type"] == PROBLEM
        assert c.get(f"/cases/{number}").json()["status"] == "open"

        assert c.patch(f"/cases/{number}", json={"status": "gone"}).status_code == 422
        assert c.patch(f"/cases/{number}", json={"color": "red"}).status_code == 422
        assert c.patch("/cases/999999", json={"status": "open"}).status_code == 404
        assert c.get("/cases/999999").status_code == 404
        assert c.get("/cases/abc").status_code == 422

        note = c.post(f"/cases/{number}/notes", json={"text": "called the customer"})
        assert note.status_code == 201
        assert c.post("/cases/999999/notes", json={"text": "x"}).status_code == 404
        assert c.post(f"/cases/{number}/notes", json={"text": ""}).status_code == 422

        events = c.get(f"/cases/{number}/events").json()["items"]
        # message.sent (the outbox's relay took the auto-response) lands whenever the
        # delivery does: not part of this sequence.
        events = [e for e in events if e["kind"] != "message.sent"]
        assert [(e["kind"], e["actor"]) for e in events] == [
            ("case.created", "mail"),
            ("message.received", "mail"),
            ("case.status", "write"),
            ("case.assigned", "write"),
            ("note.added", "write"),
        ]
        assert events[2]["data"] == {"field": "status", "from": "new", "to": "open"}
        assert c.get("/cases/999999/events").status_code == 404


def test_two_patches_with_one_etag_one_wins(api: Any) -> None:
    number = mail_in(api, 1)
    with api.client("write") as c:
        tag = c.get(f"/cases/{number}").headers["etag"]
    barrier = threading.Barrier(2)
    codes: list[int] = []

    def patch(owner: str) -> None:
        with api.client("write") as c:
            barrier.wait()
            r = c.patch(f"/cases/{number}", json={"owner": owner}, headers={"If-Match": tag})
            codes.append(r.status_code)

    threads = [threading.Thread(target=patch, args=(o,)) for o in ("ann", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(codes) == [200, 412]
    assert count(api.app, CaseEvent, CaseEvent.kind == "case.assigned") == 1


def test_idempotency_key_replays_and_refuses_another_body(api: Any) -> None:
    number = mail_in(api, 1)
    with api.client("write") as c:
        key = {"Idempotency-Key": "note-1"}
        first = c.post(f"/cases/{number}/notes", json={"text": "once"}, headers=key)
        again = c.post(f"/cases/{number}/notes", json={"text": "once"}, headers=key)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        assert again.headers["idempotent-replayed"] == "true"
        other = c.post(f"/cases/{number}/notes", json={"text": "twice"}, headers=key)
        assert other.status_code == 422
    assert count(api.app, CaseEvent, CaseEvent.kind == "note.added") == 1
    with api.client("admin") as admin:  # keys are per token: another caller's is its own
        r = admin.post(f"/cases/{number}/notes", json={"text": "once"}, headers=key)
        assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    assert count(api.app, IdempotencyKey) == 2


def test_post_cases_goes_through_the_pipeline_once_per_key(api: Any) -> None:
    body = {"from_address": "crm@partner.test", "subject": "From the CRM", "text": "Hi"}
    with api.client("write") as c:
        key = {"Idempotency-Key": "crm-42"}
        first = c.post("/cases", json=body, headers=key)
        assert first.status_code == 201, first.text
        again = c.post("/cases", json=body, headers=key)
        assert again.status_code == 200 and again.json()["number"] == first.json()["number"]
        case = c.get(f"/cases/{first.json()['number']}").json()
        assert case["messages"][0]["channel"] == "api"
        assert case["customer"] == "crm@partner.test"
        assert c.post("/cases", json={**body, "from_address": "not an address"}).status_code == 422
        assert c.post("/cases", json={**body, "to": "other@else.test"}).status_code == 422
        assert c.post("/cases", json={"subject": "x"}).status_code == 422


def test_body_over_the_limit_is_413(make_api: Any) -> None:
    api = make_api("[http]\nmax_body_bytes = 2000\n")
    number = mail_in(api, 1)
    with api.client("write") as c:
        r = c.post(f"/cases/{number}/notes", json={"text": "x" * 5000})
        assert r.status_code == 413 and r.headers["content-type"] == PROBLEM

        def chunks() -> Any:  # no Content-Length: counted as it streams
            yield b'{"text": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}'

        r = c.post(
            f"/cases/{number}/notes", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413
    assert count(api.app, CaseEvent, CaseEvent.kind == "note.added") == 0


def test_quarantine_addresses_status_openapi(api: Any) -> None:
    raw = b"From: x@customer.test\r\nTo: support@example.com\r\nSubject: q\r\n\r\nbody\r\n"
    from emaild import quarantine
    from emaild.quarantine import Held

    sha, size = api.app.blobs.put(raw)
    held = Held(
        channel="pipe", reason="error", stage="test", error="boom", raw_sha256=sha, raw_size=size
    )
    entry = quarantine.record(api.app.db, held, api.app.pipeline.clock())
    with api.client("read") as reader:
        items = reader.get("/quarantine").json()["items"]
        assert [i["id"] for i in items] == [entry]
        assert reader.get("/quarantine", params={"status": "nonsense"}).status_code == 422
        assert reader.post(f"/quarantine/{entry}/retry").status_code == 403
        addresses = reader.get("/addresses").json()["items"]
        assert addresses[0]["address"] == "support@example.com"
        status = reader.get("/status").json()
        assert "outbox" in status
        spec = reader.get("/openapi.json").json()
        assert "/api/v1/cases/{number}/replies" in spec["paths"]
        assert reader.get("/docs").status_code == 200
    with api.client("admin") as admin:
        assert admin.post("/quarantine/999999/retry").status_code == 404
        r = admin.post(f"/quarantine/{entry}/retry")
        assert r.status_code == 200, r.text
        assert r.json()["outcome"] == "new_case"
        assert admin.post(f"/quarantine/{entry}/retry").status_code == 409


def test_every_error_is_a_problem_document(api: Any) -> None:
    with api.client("write") as c:
        for r in (
            c.get("/cases/0"),
            c.get("/nowhere"),
            c.patch("/cases/1", content=b"{not json", headers={"Content-Type": "application/json"}),
        ):
            assert r.headers["content-type"] == PROBLEM, r.text
            assert {"type", "title", "status"} <= set(r.json())


def test_https_when_tls_files_are_set(make_api: Any, relay_certificate: Any) -> None:
    cert, key = relay_certificate
    api = make_api(f'[http]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    url = api.base.replace("http://", "https://") + "/api/v1/cases"
    headers = {"Authorization": f"Bearer {api.tokens['read']}"}
    trust = ssl.create_default_context(cafile=str(cert))
    assert httpx.get(url, headers=headers, verify=trust, timeout=10).status_code == 200
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets nowhere
        httpx.get(api.base + "/api/v1/health", timeout=5)
