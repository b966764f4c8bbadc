"""A 50-message conversation in which mail clients drop In-Reply-To, rewrite
subjects and strip tokens: every message that keeps any evidence lands on the
one case; the ones that keep none, and a stranger quoting the case number, do not.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from threading_mail import ingest, mail, quote, send, signer, thread_index, via

from emaild.app import App
from emaild.pipeline import Outcome
from emaild.store.models import Case, Message

ALICE, BOB, CAROL = "alice@customer.test", "bob@customer.test", "carol@elsewhere.test"
ROOT = bytes.fromhex("01d8b5c3a1f2") + bytes(range(100, 116))  # FILETIME + GUID

# How a client mangles a reply, and the matching step that must still find the case
# ("" = no evidence left: a new case).
EXPECTED_STEP = {
    "full": "in-reply-to",
    "no in-reply-to": "references",
    "subject rewritten": "in-reply-to",
    "tag stripped": "in-reply-to",
    "headers lost, tag kept": "case number",
    "headers and tag lost, token quoted": "body token",
    "outlook, nothing but thread-index": "thread-index",
    # A stranger's reply proves the thread, not that they belong to it (contract 7).
    "stranger replies to a message": "",
    "everything lost": "",
    "stranger quotes the case number": "",
}
ORDINARY = [
    "full",
    "no in-reply-to",
    "subject rewritten",
    "tag stripped",
    "headers lost, tag kept",
    "headers and tag lost, token quoted",
    "outlook, nothing but thread-index",
]
SPECIAL = {
    9: "everything lost",
    21: "stranger quotes the case number",
    30: "everything lost",
    38: "stranger replies to a message",
    44: "everything lost",
}


@dataclass
class Sent:
    number: int
    behaviour: str
    fresh: str
    result: Any


def build_reply(
    i: int,
    behaviour: str,
    *,
    tag: str,
    chain: list[str],
    last_text: str,
    agent_text: str,
    rng: random.Random,
) -> tuple[bytes, str]:
    """Message ``i`` of the conversation as a client with ``behaviour`` sends it."""
    sender = ALICE if i % 2 else BOB
    if behaviour.startswith("stranger"):
        sender = CAROL
    fresh = f"Message {i}: the printer {rng.choice(['smokes', 'beeps', 'jams'])} again."
    subject = f"Re: Printer on fire {tag}"
    in_reply_to, references = chain[-1], chain[-8:]
    body = f"{fresh}\n\n{quote(last_text)}"
    headers: list[tuple[str, str]] = []
    if sender == ALICE:  # Alice uses Outlook: every message carries the conversation root
        headers.append(("Thread-Index", thread_index(ROOT, children=i)))
    no_token = fresh + "\n\n" + quote(last_text.split("ref:")[0])
    if behaviour == "no in-reply-to":
        in_reply_to = ""
    elif behaviour == "subject rewritten":
        subject = f"Still broken after {i} mails"
    elif behaviour == "tag stripped":
        subject = "Re: Printer on fire"
        body = no_token
    elif behaviour == "headers lost, tag kept":
        in_reply_to, references, body = "", [], no_token
    elif behaviour == "headers and tag lost, token quoted":
        # Replying to our last answer, whose body token survives in the quote.
        in_reply_to, references, subject = "", [], "printer"
        body = f"{fresh}\n\n{quote(agent_text)}"
    elif behaviour == "outlook, nothing but thread-index":
        sender = ALICE
        headers = [("Thread-Index", thread_index(ROOT, children=i))]
        in_reply_to, references, subject, body = "", [], "printer", fresh
    elif behaviour in ("everything lost", "stranger quotes the case number"):
        in_reply_to, references, headers, body = "", [], [], fresh
        subject = f"Re: {tag} printer" if behaviour.startswith("stranger") else "printer"
    raw = mail(
        mid=f"<conv-{i}@{sender.split('@')[1]}>",
        frm=sender,
        subject=subject,
        body=body,
        in_reply_to=in_reply_to,
        references=references,
        headers=headers,
    )
    return raw, fresh


def test_fifty_message_thread_ends_on_one_case(make_app: Any) -> None:
    app = make_app("[threading]\nbody_token = true\n")
    try:
        run_conversation(app)
    finally:
        app.close()


def run_conversation(app: App) -> None:
    rng = random.Random(6)
    first = mail(
        mid="<conv-0@customer.test>",
        cc=[BOB],
        headers=[("Thread-Index", thread_index(ROOT))],
        body="Message 0: the printer is on fire.",
    )
    opened = ingest(app, first)
    assert opened.outcome is Outcome.NEW_CASE and opened.case_number is not None
    case = opened.case_number
    tag = signer(app).subject_token(case)
    chain = ["<conv-0@customer.test>"]
    last_text = agent_text = answer(app, case, chain)  # the acknowledgement
    sent: list[Sent] = []
    for i in range(1, 50):
        behaviour = SPECIAL.get(i) or rng.choice(ORDINARY)
        raw, fresh = build_reply(
            i, behaviour, tag=tag, chain=chain, last_text=last_text, agent_text=agent_text, rng=rng
        )
        result = ingest(app, raw)
        sent.append(Sent(i, behaviour, fresh, result))
        if not EXPECTED_STEP[behaviour]:
            continue
        chain.append(_mid_of(raw))
        last_text = fresh
        if i % 3 == 0:  # an agent answers every third message, with our tokens
            last_text = agent_text = answer(app, case, chain)

    steps = Counter(s.behaviour for s in sent)
    assert set(steps) == set(EXPECTED_STEP), "every client behaviour occurs"
    for s in sent:
        expected = EXPECTED_STEP[s.behaviour]
        what = f"message {s.number} ({s.behaviour})"
        if expected:
            assert (s.result.outcome, s.result.case_number) == (Outcome.APPENDED, case), what
            assert via(app, s.result) == expected, what
        else:
            assert s.result.outcome is Outcome.NEW_CASE, what
            assert s.result.case_number != case, what

    with app.db.session() as session:
        stored = session.scalars(
            select(Message).where(Message.case_id == case, Message.direction == "in")
        ).all()
        threaded = [s for s in sent if EXPECTED_STEP[s.behaviour]]
        assert len(stored) == 1 + len(threaded)
        fresh_by_mid = {f"<conv-{s.number}@": s.fresh for s in threaded}
        for row in stored[1:]:
            prefix = row.message_id.split("@")[0] + "@"
            assert row.new_text == fresh_by_mid[prefix], row.message_id
        stranger = next(s for s in sent if s.behaviour == "stranger quotes the case number")
        other = session.get(Case, stranger.result.case_number)
        assert other is not None and other.mentioned_number == case
        replier = next(s for s in sent if s.behaviour == "stranger replies to a message")
        linked = session.get(Case, replier.result.case_number)
        assert linked is not None and linked.linked_case_id == case
        assert session.get(Case, case) is not None


def answer(app: App, case: int, chain: list[str]) -> str:
    """emaild answers the newest message; returns the text customers will quote."""
    sent = send(app, case, subject="Printer on fire", in_reply_to=chain[-1])
    assert "ref:" in sent.get_content()  # body tokens are on for this conversation
    chain.append(str(sent["Message-ID"]))
    return str(sent.get_content())


def _mid_of(raw: bytes) -> str:
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("no Message-ID")
