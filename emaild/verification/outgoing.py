"""The messages emaild sends to its own routing addresses, queued in the outbox.

Both go From and To the support address itself through the configured
relay, so what comes back has travelled the same way a customer's mail
does. Both are marked ``Auto-Submitted: auto-generated`` (nobody should
auto-reply to them) and carry their token in a header, in the body and, for
the forwarding test, in the subject: forwarders that strip unknown headers
or rewrite the subject still leave one copy emaild can find.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid

from emaild.config import RoutingAddress
from emaild.verification.tokens import TEST_HEADER, VERIFY_HEADER


def verification_message(
    routing: RoutingAddress, token: str, *, now: datetime, expires: datetime, domain: str
) -> EmailMessage:
    """The message ``emaild address verify`` sends to ``routing.address``."""
    address = routing.address
    msg = _envelope(routing, now=now, domain=domain, kind="verify")
    msg["Subject"] = f"emaild: verify the support address {address}"
    msg[VERIFY_HEADER] = token
    msg.set_content(
        f"emaild sent this message to check that mail sent to {address} reaches it.\n"
        "\n"
        f"If {address} already forwards to emaild, there is nothing to do: when this\n"
        "message arrives, the address is verified and mail held for it is released\n"
        "into cases.\n"
        "\n"
        "Otherwise, reply to this message once forwarding is set up, or run this on\n"
        "the emaild host:\n"
        "\n"
        f"    emaild address confirm {address} {token}\n"
        "\n"
        f"Verification token: {token}\n"
        f"It works once and expires {expires:%Y-%m-%d %H:%M} UTC.\n"
    )
    return msg


def forwarding_test_message(
    routing: RoutingAddress, token: str, *, now: datetime, domain: str
) -> EmailMessage:
    """The uniquely marked message of ``emaild address test-forwarding``."""
    address = routing.address
    msg = _envelope(routing, now=now, domain=domain, kind="fwdtest")
    msg["Subject"] = f"emaild forwarding test {token}"
    msg[TEST_HEADER] = token
    msg.set_content(
        f"emaild sent this message to {address} to test that mail sent there is\n"
        "forwarded to emaild. It is recorded when it arrives and never becomes a case.\n"
        "\n"
        f"Test marker: {token}\n"
    )
    return msg


def _envelope(routing: RoutingAddress, *, now: datetime, domain: str, kind: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = formataddr((routing.name or "emaild", routing.address))
    msg["To"] = routing.address
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(idstring=f"emaild.{kind}", domain=domain)
    msg["Auto-Submitted"] = "auto-generated"
    return msg
