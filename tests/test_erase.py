"""``emaild erase`` and ``emaild export`` (issue 15), on SQLite and PostgreSQL.

After an erasure the address is found nowhere: not in any column of any table
(every row of every table is read back and searched) and not in any file of the
blob store; an attachment someone else also sent survives; the person's cases
keep a tombstone. An export holds their messages byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from mailbuilder import build_mail, build_multipart
from sqlalchemy import inspect, select, text

from emaild.app import App
from emaild.casework.reply import ReplyRequest, queue_reply
from emaild.errors import InputError
from emaild.intake import Envelope, Outcome
from emaild.outbox.queue import suppress
from emaild.privacy.erase import erase
from emaild.privacy.export import collect, mbox_chunks, quote, unquote
from emaild.store.models import (
    Attachment,
    Case,
    CaseEvent,
    CaseParticipant,
    CaseTerm,
    Message,
    OutboxItem,
    QuarantineEntry,
)

ALICE = "alice.erase@customer.test"
SHARED = b"the price list every customer gets\n" * 20
ONLY_HERS = b"a scan only alice sent\n" * 20
# mboxrd quoting has work to do: lines that start with "From " and ">From ".
BODY = "Hello,\r\nFrom here on nothing works.\r\n>From a quote\r\nAlice"


def _ingest(app: App, raw: bytes, **envelope: Any) -> Any:
    return app.pipeline.ingest(raw, Envelope(channel="test", **envelope))


def _history(app: App) -> dict[str, Any]:
    """Alice's case with a reply, Bob's case that Cc's and mentions her, her spam, Carol."""
    mine = build_multipart(
        sender=f"Alice <{ALICE.replace('alice', 'Alice')}>",
        subject="Broken printer",
        message_id="<m1@customer.test>",
        attachments={"prices.txt": SHARED, "scan.txt": ONLY_HERS},
        body=BODY,
    )
    first = _ingest(app, mine, mail_from=ALICE)
    assert first.outcome is Outcome.NEW_CASE, first.trace
    services = app.services
    now = app.pipeline.clock()
    reply = app.db.run(
        lambda s: queue_reply(
            s,
            signer=services.signer,
            blobs=app.blobs,
            own_addresses=services.addresses.own_addresses(),
            from_name="Support",
            number=first.case_number,
            request=ReplyRequest(text="We are on it, Alice."),
            actor="agent",
            now=now,
        )
    )
    bobs = build_multipart(
        sender="Bob <bob@partner.test>",
        subject="Team question for Alice.Erase@customer.test",
        message_id="<m2@partner.test>",
        headers=f"Cc: Alice <{ALICE}>\r\n",
        attachments={"prices.txt": SHARED, "contacts.txt": b"team: ALICE.ERASE@customer.test\n"},
        body="Please also ask ALICE.ERASE@CUSTOMER.TEST about it.",
    )
    second = _ingest(app, bobs, mail_from="bob@partner.test")
    assert second.outcome is Outcome.NEW_CASE, second.trace
    spam = build_mail(
        sender=ALICE, message_id="<spam@customer.test>", headers="X-Spam-Flag: YES\r\n"
    )
    held = _ingest(app, spam, mail_from=ALICE)
    assert held.outcome is Outcome.QUARANTINED, held.trace
    carol = _ingest(app, build_mail(sender="carol@c.test", message_id="<c@c.test>"))
    app.db.run(lambda s: suppress(s, ALICE, "550 5.1.1 gone", now))
    return {
        "mine": mine,
        "spam": spam,
        "first": first,
        "second": second,
        "reply": reply,
        "carol": carol,
    }


def _dump(app: App) -> str:
    """Every column of every row of every table, as text (bytes as latin-1)."""
    out = []
    with app.db.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("latin-1")
                    out.append(json.dumps(value, default=str, ensure_ascii=False))
    return "\n".join(out).lower()


def _blob_files(app: App) -> dict[str, bytes]:
    root = Path(app.config.blob_dir)
    return {p.name: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_export_is_byte_exact(app: App, tmp_path: Path) -> None:
    made = _history(app)
    with app.db.session() as s:
        data = collect(s, ALICE.upper(), app.pipeline.clock())
        reply_raw = s.get(Message, made["reply"].message_row_id)
        assert reply_raw is not None
    mbox = b"".join(mbox_chunks(app.blobs, data))
    assert b"\n>From here on" in mbox and b"\n>>From a quote" in mbox  # quoted
    bodies = re.split(rb"(?m)^From MAILER-DAEMON [^\n]*\n", mbox)[1:]
    listed = [m for m in data["messages"] if m["in_mbox"]] + data["quarantine"]
    assert len(bodies) == len(listed) == 3
    got = [unquote(b)[: item["raw_size"]] for b, item in zip(bodies, listed, strict=True)]
    assert got == [made["mine"], app.blobs.read(reply_raw.raw_sha256), made["spam"]]
    for raw, item in zip(got, listed, strict=True):
        assert hashlib.sha256(raw).hexdigest() == item["raw_sha256"]
    assert [m["direction"] for m in data["messages"]] == ["in", "out"]
    assert {c["number"] for c in data["cases"]} == {
        made["first"].case_number,
        made["second"].case_number,
    }
    assert [a["filename"] for a in data["messages"][0]["attachments"]] == ["prices.txt", "scan.txt"]


def test_erase_leaves_no_trace_and_keeps_shared_blobs(app: App) -> None:
    made = _history(app)
    # An agent's answer to Carol that names Alice: its outbox copy to Carol does too.
    services, now = app.services, app.pipeline.clock()
    app.db.run(
        lambda s: queue_reply(
            s,
            signer=services.signer,
            blobs=app.blobs,
            own_addresses=services.addresses.own_addresses(),
            from_name="Support",
            number=made["carol"].case_number,
            request=ReplyRequest(text=f"Please also write to {ALICE}."),
            actor="agent",
            now=now,
        )
    )
    assert ALICE in _dump(app)
    with app.db.session() as s:
        carol = s.get(Message, made["carol"].message_row_id)
        bobs = s.get(Message, made["second"].message_row_id)
        assert carol is not None and bobs is not None
        carol_sha, bobs_sha = carol.raw_sha256, bobs.raw_sha256
        assert s.scalar(select(OutboxItem.id).where(OutboxItem.rcpt_to == ALICE)) is not None
    with pytest.raises(InputError):
        erase(
            app.db,
            app.blobs,
            "support@example.com",
            actor="cli",
            now=app.pipeline.clock(),
            own_addresses=app.services.addresses.own_addresses(),
        )

    report = erase(
        app.db,
        app.blobs,
        f" <{ALICE.upper()}> ",
        actor="cli",
        now=app.pipeline.clock(),
        own_addresses=app.services.addresses.own_addresses(),
    )

    assert report.messages == 2  # what she sent, and the reply to her alone
    assert report.quarantine_entries == 1 and report.participants == 2
    assert report.outbox_items >= 1
    assert report.cases == sorted([made["first"].case_number, made["second"].case_number])
    # Nowhere in the database...
    assert ALICE not in _dump(app)
    # ...nor in the blob store.
    files = _blob_files(app)
    assert not [name for name, data in files.items() if ALICE.encode() in data.lower()]
    assert hashlib.sha256(ONLY_HERS).hexdigest() not in files
    assert hashlib.sha256(SHARED).hexdigest() in files  # Bob sent it too
    with app.db.session() as s:
        # Carol is untouched; Bob's message stays, its bytes rewritten without her.
        carol = s.get(Message, made["carol"].message_row_id)
        bobs = s.get(Message, made["second"].message_row_id)
        assert carol is not None and carol.raw_sha256 == carol_sha and carol_sha in files
        assert bobs is not None and bobs.raw_sha256 != bobs_sha and bobs_sha not in files
        assert b"erased@erased.invalid" in app.blobs.read(bobs.raw_sha256)
        assert bobs.cc == ["Alice <erased@erased.invalid>"]
        shas = set(s.scalars(select(Attachment.sha256).where(Attachment.message_id == bobs.id)))
        assert hashlib.sha256(SHARED).hexdigest() in shas and all(x in files for x in shas)
        # Her case stays, without her, with a tombstone.
        case = s.get(Case, made["first"].case_number)
        assert case is not None and case.customer == "" and case.customer_name == ""
        assert s.scalar(select(Message.id).where(Message.case_id == case.id)) is None
        tombstones = {
            e.case_id: e.data
            for e in s.scalars(select(CaseEvent).where(CaseEvent.kind == "contact.erased"))
        }
        assert tombstones == {
            made["first"].case_number: {"messages_removed": 2},
            made["second"].case_number: {"messages_removed": 0},
        }
        assert s.scalar(select(QuarantineEntry.id)) is None
        # Bob's subject named her: its topic terms were worked out again.
        terms = set(
            s.scalars(select(CaseTerm.term).where(CaseTerm.case_id == made["second"].case_number))
        )
        assert terms == {"team", "erased", "invalid"}
        parts = set(s.scalars(select(CaseParticipant.address)))
        assert parts == {"bob@partner.test", "carol@c.test"}
    again = erase(app.db, app.blobs, ALICE, actor="cli", now=app.pipeline.clock())
    assert (again.messages, again.rows_rewritten, again.blobs.deleted) == (0, 0, 0)


def test_api_erase_export_and_reports(api: Any) -> None:
    app = api.app
    raw = build_mail(sender="dave@d.test", subject="Printer jammed", message_id="<d@d.test>")
    assert _ingest(app, raw).outcome is Outcome.NEW_CASE
    body = {"contact": "dave@d.test"}
    for scope in ("read", "write"):
        with api.client(scope) as client:
            assert client.post("/privacy/erase", json=body).status_code == 403
            assert client.post("/privacy/export", json=body).status_code == 403
    with api.client("read") as client:
        summary = client.get("/reports/summary", params={"by": "day"})
        assert summary.status_code == 200, summary.text
        assert summary.json()["cases_opened"] == 1
        assert summary.json()["by_origin"] == {"Email": {"opened": 1, "closed": 0}}
        topics = client.get("/reports/topics").json()["topics"]
        assert {t["topic"] for t in topics} == {"printer", "jammed"}
        assert client.get("/reports/summary", params={"by": "moon"}).status_code == 422
        assert client.get("/reports/summary", params={"since": "soon"}).status_code == 422
    with api.client("admin") as client:
        exported = client.post("/privacy/export", json=body).json()
        # (with the auto-response, once the outbox has sent and stored it)
        assert exported["messages"][0]["raw_sha256"] == hashlib.sha256(raw).hexdigest()
        mbox = client.post("/privacy/export/mbox", json=body)
        assert mbox.status_code == 200 and mbox.headers["content-type"] == "application/mbox"
        assert raw in mbox.content
        assert client.post("/privacy/erase", json={"contact": "not an address"}).status_code == 422
        erased = client.post("/privacy/erase", json=body)
        assert erased.status_code == 200 and erased.json()["messages"] >= 1
        assert client.post("/privacy/export", json=body).json()["messages"] == []
    assert "dave@d.test" not in _dump(app)


def test_cli_erase_and_export(app: App, run_cli: Any, tmp_path: Path) -> None:
    made = _history(app)
    out = tmp_path / "alice"
    done = run_cli("export", "--contact", ALICE, "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert (out.with_suffix(".mbox").stat().st_mode & 0o777) == 0o600
    assert quote(made["mine"]) in out.with_suffix(".mbox").read_bytes()
    assert len(json.loads(out.with_suffix(".json").read_text())["messages"]) == 2
    refused = run_cli("erase", "--contact", ALICE)  # no --yes, no terminal
    assert refused.returncode == 2 and b"--yes" in refused.stderr
    assert ALICE in _dump(app)
    done = run_cli("erase", "--contact", ALICE, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["messages"] == 2
    assert ALICE not in _dump(app)


def test_only_the_whole_address_is_erased_never_a_longer_one() -> None:
    from emaild.privacy.scrub import ERASED, address_pattern, redact_bytes, replace_in

    text = (
        "bob@example.org, jimbob@example.org, bob@example.org.uk, <BOB@Example.org>, "
        "x.bob@example.org, bob@example.org."
    )
    got = replace_in({"to": [text]}, address_pattern("bob@example.org"))
    assert got == {
        "to": [
            f"{ERASED}, jimbob@example.org, bob@example.org.uk, <{ERASED}>, "
            f"x.bob@example.org, {ERASED}."
        ]
    }
    assert redact_bytes(text.encode(), "bob@example.org") == got["to"][0].encode()
    assert redact_bytes(b"jimbob@example.org only", "bob@example.org") is None
