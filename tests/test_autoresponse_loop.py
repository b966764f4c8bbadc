"""Loop simulation: a robot that answers every message, wired back through the listener.

emaild's SMTP listener (``smtp_helpers``) takes the robot's mail; emaild's
auto-responses go out through the real relay (``relay_sink``), where the robot
reads them and answers each one back to the listener, ignoring every
Auto-Submitted / X-Auto-Response-Suppress / loop header. The test drives
rounds (deliver, answer) until nothing new happens, and asserts the loop
stopped by itself within the stated bound:

- a robot that threads its answers (In-Reply-To, "Re:" subject): exactly ONE
  auto-response; its answer joins the case, and cases get one response each;
- a robot that does not thread (fresh subject/body every time): at most
  ``per_recipient_limit`` auto-responses per window (default 3), so the whole
  exchange is at most 1 + 2 * 3 = 7 messages;
- the same robot repeating one identical text with the rate limit lifted:
  the loop detector stops new cases after ``loop_threshold - 1`` identical
  messages, so at most 1 + (loop_threshold - 1) auto-responses (5 by default).
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest
from smtp_helpers import smtp_listener
from sqlalchemy import func, select

from emaild.app import App
from emaild.outbox import deliver_due
from emaild.store.models import Case, Message

ROBOT = "robot@partner.test"
ROUNDS_CAP = 40  # far above any bound: the loop must end by itself long before


def first_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Partner Robot <{ROBOT}>"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Order 1234 status"
    msg["Message-ID"] = "<start@partner.test>"
    msg.set_content("Status of order 1234?\n")
    return msg.as_bytes()


def robot_answer(received: EmailMessage, style: str, n: int) -> bytes:
    """The robot's answer to one message, in the given style."""
    answer = EmailMessage()
    answer["From"] = f"Partner Robot <{ROBOT}>"
    answer["To"] = str(received["Reply-To"] or received["From"])
    answer["Message-ID"] = make_msgid(domain="partner.test")
    if style == "threads":
        answer["Subject"] = f"Re: {received['Subject']}"
        answer["In-Reply-To"] = str(received["Message-ID"])
        answer["References"] = str(received["Message-ID"])
        answer.set_content("Your message was received by our robot.\n")
    elif style == "varies":
        answer["Subject"] = f"Acknowledgement {n}"
        answer.set_content(f"Thank you. This is acknowledgement number {n}.\n")
    else:  # "repeats": the same text every time, no threading headers
        answer["Subject"] = "Acknowledgement"
        answer.set_content("Thank you, your message was received.\n")
    return answer.as_bytes()


def run_loop(app: App, relay_sink: Any, style: str) -> dict[str, int]:
    """Drive the loop until quiet; returns what happened."""
    answered = 0
    robot_sent = 0
    rounds = 0
    with smtp_listener(app) as (host, port):

        def to_emaild(raw: bytes) -> None:
            with smtplib.SMTP(host, port, timeout=30) as client:
                client.sendmail(ROBOT, ["support@example.com"], raw)

        to_emaild(first_message())
        while rounds < ROUNDS_CAP:
            rounds += 1
            deliver_due(app, ignore_schedule=True)
            received = relay_sink.received()
            new = received[answered:]
            if not new:
                break
            for mail in new:
                answered += 1
                robot_sent += 1
                to_emaild(robot_answer(mail.message(), style, robot_sent))
    with app.db.session() as s:
        cases = int(s.scalar(select(func.count()).select_from(Case)) or 0)
        inbound = int(
            s.scalar(select(func.count(Message.id)).where(Message.direction == "in")) or 0
        )
        loop_count = int(s.scalar(select(func.max(Case.loop_count))) or 0)
    return {
        "auto_responses": len(relay_sink.received()),
        "robot_sent": robot_sent,
        "rounds": rounds,
        "cases": cases,
        "inbound": inbound,
        "loop_count": loop_count,
    }


@pytest.fixture
def loop_app(make_app: Any, relay_sink: Any) -> Any:
    apps: list[App] = []

    def build(toml: str = "") -> App:
        app = make_app('[relay]\nstarttls = "off"\n' + toml, **relay_sink.relay_env)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.close()


def test_threading_robot_gets_exactly_one_auto_response(loop_app: Any, relay_sink: Any) -> None:
    got = run_loop(loop_app(), relay_sink, "threads")
    assert got["rounds"] < ROUNDS_CAP  # stopped by itself
    assert got == {
        "auto_responses": 1,
        "robot_sent": 1,
        "rounds": 2,
        "cases": 1,
        "inbound": 2,
        "loop_count": 0,
    }


def test_non_threading_robot_is_cut_off_by_the_per_recipient_limit(
    loop_app: Any, relay_sink: Any
) -> None:
    got = run_loop(loop_app(), relay_sink, "varies")
    limit = 3  # [autoresponse] per_recipient_limit default
    assert got["rounds"] < ROUNDS_CAP
    assert got["auto_responses"] == limit
    assert got["robot_sent"] == limit
    # The whole exchange: the first message, then one response and one answer per round.
    assert got["auto_responses"] + got["inbound"] == 1 + 2 * limit
    assert all(m.rcpt_tos == (ROBOT,) for m in relay_sink.received())


def test_repeating_robot_is_cut_off_by_the_loop_detector(loop_app: Any, relay_sink: Any) -> None:
    # Lift the rate limit so that only the loop detector is left to stop it.
    app = loop_app("[autoresponse]\nper_recipient_limit = 1000\nloop_threshold = 5\n")
    got = run_loop(app, relay_sink, "repeats")
    assert got["rounds"] < ROUNDS_CAP
    # Case 1 (the first message) + 4 identical answers open cases; the 5th
    # identical one joins the 4th answer's case with a counter and gets nothing.
    assert got["auto_responses"] == 5
    assert got["robot_sent"] == 5
    assert got["cases"] == 5
    assert got["loop_count"] == 1
