"""Agent replies through the API: composed with the case's threading marks, delivered
by the daemon's outbox to a real SMTP sink, the customer's answer threads back; the
closed-case policy after ``close: true``; one reply for one Idempotency-Key."""

from __future__ import annotations

import threading
import time
from typing import Any

from mailbuilder import build_mail, count

from emaild.intake import Envelope, Outcome
from emaild.store.models import Case, Message, OutboxItem


def mail_in(api: Any, raw: bytes) -> int:
    result = api.app.pipeline.ingest(raw, Envelope(channel="pipe"))
    assert result.outcome is Outcome.NEW_CASE, result
    assert result.case_number is not None
    return result.case_number


def settle(relay_sink: Any) -> None:
    """Wait for the new case's auto-response, then forget it."""
    relay_sink.wait_for(1, timeout=30)
    relay_sink.clear()


def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_reply_round_trip_then_close_and_a_late_answer(make_api: Any, relay_sink: Any) -> None:
    api = make_api('[[address]]\naddress = "support@example.com"\nclosed_case = "new_linked"\n')
    number = mail_in(api, build_mail(message_id="<q1@customer.test>", subject="Printer on fire"))
    settle(relay_sink)
    with api.client("write") as c:
        r = c.post(f"/cases/{number}/replies", json={"text": "Unplug it, please."})
        assert r.status_code == 202, r.text
        sent_id = r.json()["message_id"]
        [got] = relay_sink.wait_for(1, timeout=30)
        mail = got.message()
        assert got.rcpt_tos == ("alice@customer.test",)
        assert mail["Message-ID"] == sent_id
        assert api.app.services.signer.case_from_message_id(sent_id) == number
        assert mail["In-Reply-To"] == "<q1@customer.test>"
        assert "<q1@customer.test>" in mail["References"]
        assert api.app.services.signer.subject_numbers(mail["Subject"]) == [number]
        assert "Auto-Submitted" not in mail  # a person's answer, not an auto-reply
        assert "Unplug it" in mail.get_body(("plain",)).get_content()

        def delivered() -> bool:
            case = c.get(f"/cases/{number}").json()
            out = [m for m in case["messages"] if m["message_id"] == sent_id]
            return len(out) == 1 and [d["status"] for d in out[0]["delivery"]] == ["sent"]

        wait_until(delivered)

        # The customer answers the copy the sink received.
        answer = build_mail(
            subject=f"Re: {mail['Subject']}",
            message_id="<a1@customer.test>",
            headers=f"In-Reply-To: {sent_id}\r\nReferences: <q1@customer.test> {sent_id}\r\n",
            body="It is out now.",
        )
        result = api.app.pipeline.ingest(answer, Envelope(channel="pipe"))
        assert (result.outcome, result.case_number) == (Outcome.APPENDED, number)

        r = c.post(f"/cases/{number}/replies", json={"text": "Glad to help.", "close": True})
        assert r.status_code == 202
        closing_id = r.json()["message_id"]
        assert c.get(f"/cases/{number}").json()["status"] == "closed"
        [closing] = relay_sink.wait_for(2, timeout=30)[1:]
        assert closing.message()["In-Reply-To"] == "<a1@customer.test>"
        kinds = [e["kind"] for e in c.get(f"/cases/{number}/events").json()["items"]]
        assert kinds.count("message.sent") >= 1  # the first reply, once the relay took it
        # message.sent of the closing reply lands whenever its delivery does
        kinds = [k for k in kinds if k != "message.sent"]
        assert kinds.count("reply.queued") == 2 and kinds[-1] == "case.status"

    late = build_mail(
        subject=f"Re: {closing.message()['Subject']}",
        message_id="<a2@customer.test>",
        headers=f"In-Reply-To: {closing_id}\r\n",
        body="One more thing.",
    )
    result = api.app.pipeline.ingest(late, Envelope(channel="pipe"))
    assert result.outcome is Outcome.NEW_CASE  # closed_case = new_linked
    with api.client("read") as c:
        follow_up = c.get(f"/cases/{result.case_number}").json()
        assert follow_up["linked_case"] == number
        assert c.get(f"/cases/{number}").json()["links"]["follow_ups"] == [result.case_number]


def test_one_idempotency_key_sent_twice_at_once_queues_one_reply(api: Any, relay_sink: Any) -> None:
    number = mail_in(api, build_mail())
    barrier = threading.Barrier(2)
    answers: list[Any] = []

    def post() -> None:
        with api.client("write") as c:
            barrier.wait()
            answers.append(
                c.post(
                    f"/cases/{number}/replies",
                    json={"text": "Once."},
                    headers={"Idempotency-Key": "reply-1"},
                )
            )

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
    assert answers[0].json() == answers[1].json()
    assert count(api.app, OutboxItem, OutboxItem.kind == "reply") == 1
    assert count(api.app, Message, Message.direction == "out", Message.channel == "api") == 1


def test_reply_failure_paths(api: Any) -> None:
    number = mail_in(api, build_mail())
    with api.client("write") as c:
        assert c.post("/cases/999999/replies", json={"text": "x"}).status_code == 404
        assert c.post(f"/cases/{number}/replies", json={}).status_code == 422
        assert c.post(f"/cases/{number}/replies", json={"text": " "}).status_code == 422
        assert c.post(f"/cases/{number}/replies", json={"text": "x", "to": []}).status_code == 422
        bad = {"text": "x", "attachments": [{"filename": "a", "content_base64": "!!"}]}
        assert c.post(f"/cases/{number}/replies", json=bad).status_code == 422
    assert count(api.app, OutboxItem, OutboxItem.kind == "reply") == 0
    assert count(api.app, Case) == 1


def test_a_reply_to_a_closed_case_reopens_it_as_an_event(api: Any, relay_sink: Any) -> None:
    number = mail_in(api, build_mail(message_id="<q1@customer.test>"))
    with api.client("write") as c:
        closed = c.patch(f"/cases/{number}", json={"status": "closed"})
        tag = closed.headers["etag"]
        answer = build_mail(
            message_id="<a1@customer.test>", headers="In-Reply-To: <q1@customer.test>\r\n"
        )
        result = api.app.pipeline.ingest(answer, Envelope(channel="pipe"))
        assert (result.outcome, result.case_number) == (Outcome.APPENDED, number)
        # message.sent (the auto-response, delivered by the daemon) may come at any time.
        events = [
            e
            for e in c.get(f"/cases/{number}/events").json()["items"]
            if e["kind"] != "message.sent"
        ]
        assert (events[-1]["kind"], events[-1]["actor"], events[-1]["data"]["to"]) == (
            "case.status",
            "mail",
            "open",
        )
        # The agent who saw it closed cannot overwrite the reopening unknowingly.
        stale = c.patch(f"/cases/{number}", json={"owner": "x"}, headers={"If-Match": tag})
        assert stale.status_code == 412


def test_reply_rendered_from_the_shipped_reply_template(api: Any, relay_sink: Any) -> None:
    number = mail_in(api, build_mail(subject="Printer on fire", body="It smokes.\r\nAnd beeps."))
    settle(relay_sink)
    with api.client("write") as c:
        r = c.post(
            f"/cases/{number}/replies",
            json={"text": "Unplug it, please.", "template": "reply"},
        )
        assert r.status_code == 202, r.text
        sent_id = r.json()["message_id"]
    [got] = relay_sink.wait_for(1, timeout=30)
    mail = got.message()
    body = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert body.startswith("Hello Alice,\n\nUnplug it, please.\n"), body
    assert "> It smokes.\n> And beeps.\n" in body  # the customer's message, quoted
    assert mail["Subject"].startswith("Re: Printer on fire")
    assert api.app.services.signer.subject_numbers(mail["Subject"]) == [number]
    assert mail["Message-ID"].endswith("@example.com>")  # the routing address's domain
    with api.client("read") as c:
        messages = c.get(f"/cases/{number}").json()["messages"]
        [out] = [m for m in messages if m["message_id"] == sent_id]
        assert "Unplug it, please." in out["text"]  # the rendered text is what is stored


def test_reply_template_with_html_and_errors(make_api: Any, relay_sink: Any, tmp_path: Any) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "default.txt").write_text("Subject: Got it\n\nGot it.\n")
    (templates / "answer.txt").write_text(
        "Subject: Case {{ case.number }} for {{ customer.address }}\n\n{{ agent.text }}\n"
        "-- {{ agent.name }}\n"
    )
    (templates / "answer.html").write_text("<p>{{ agent.text }}</p>")
    api = make_api(EMAILD_TEMPLATES_DIR=str(templates))
    number = mail_in(api, build_mail())
    settle(relay_sink)
    with api.client("write") as c:
        r = c.post(f"/cases/{number}/replies", json={"text": "a", "template": "nope"})
        assert r.status_code == 422 and "no template 'nope'" in r.text, r.text
        assert "answer" in r.text  # the known ones are named
        r = c.post(f"/cases/{number}/replies", json={"text": "a", "template": "../default"})
        assert r.status_code == 422, r.text  # not a name: refused by the schema
        r = c.post(
            f"/cases/{number}/replies",
            json={"text": "Use <b>this</b> & that.", "template": "answer"},
        )
        assert r.status_code == 202, r.text
    assert count(api.app, OutboxItem, OutboxItem.kind == "reply") == 1
    [got] = relay_sink.wait_for(1, timeout=30)
    mail = got.message()
    assert mail["Subject"].startswith(f"Case {number:08d} for alice@customer.test")
    plain = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert plain.startswith("Use <b>this</b> & that.\n-- ")  # text parts as written
    html = mail.get_body(("html",)).get_content()
    assert "<p>Use &lt;b&gt;this&lt;/b&gt; &amp; that.</p>" in html  # HTML parts escaped
