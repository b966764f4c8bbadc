"""emaild's own SPF, DKIM and DMARC checks against a DNS server the tests run on loopback.

Mail is signed here with dkimpy; the records (SPF, DKIM keys, DMARC policies)
come from ``tests/dnsserver.py``. Each case (pass, fail, none, misaligned,
temperror) gives the right results and the right ``auth_policy`` decision,
through the real pipeline and, once, through the real SMTP listener.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from typing import Any

import dkim
import pytest
from dnsserver import Zone, dkim_key, dns_server
from smtp_helpers import smtp_listener
from threading_mail import SUPPORT, mail

from emaild.app import App
from emaild.cases import case_detail, load_case
from emaild.intake import Envelope
from emaild.pipeline import Outcome
from emaild.trust.checks import Checker
from emaild.trust.direct import Connection, peer_ip
from emaild.trust.dns import Resolver

# DNS timeout for the checks in these tests: short, so temperror is quick.
TIMEOUT = 0.4


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[bytes, str]]:
    return {"customer.test": dkim_key(), "attacker.test": dkim_key(), "slow.test": dkim_key()}


@pytest.fixture
def dns(keys: dict[str, tuple[bytes, str]]) -> Iterator[tuple[str, Zone]]:
    zone = Zone(
        txt={
            "customer.test": ["v=spf1 ip4:127.0.0.0/8 -all"],
            "_dmarc.customer.test": ["v=DMARC1; p=reject"],
            "bank.test": ["v=spf1 ip4:192.0.2.1 -all"],
            "_dmarc.bank.test": ["v=DMARC1; p=quarantine"],
            "attacker.test": ["v=spf1 ip4:127.0.0.0/8 -all"],
            "nodmarc.test": ["v=spf1 ?all"],
        },
        silent={"slow.test"},
    )
    for domain, (_, public) in keys.items():
        zone.txt[f"s1._domainkey.{domain}"] = [f"v=DKIM1; k=rsa; p={public}"]
    with dns_server(zone) as address:
        yield address, zone


def signed(raw: bytes, domain: str, keys: dict[str, tuple[bytes, str]]) -> bytes:
    header = dkim.sign(
        raw, b"s1", domain.encode(), keys[domain][0], include_headers=[b"from", b"subject"]
    )
    return bytes(header) + raw


def message(frm: str, mid: str, **kw: Any) -> bytes:
    return mail(mid=mid, frm=frm, **kw)


# (name, From, MAIL FROM, signing domain or "", tamper, expected spf/dkim/dmarc, authenticated)
CASES = [
    ("pass", "alice@customer.test", "alice@customer.test", "customer.test", False,
     ("pass", "pass", "pass"), True),
    ("fail", "ceo@bank.test", "ceo@bank.test", "", False, ("fail", "none", "fail"), False),
    ("bad signature", "alice@customer.test", "x@elsewhere.test", "customer.test", True,
     ("none", "fail", "fail"), False),
    ("none", "bob@nodmarc.test", "bob@nodmarc.test", "", False, ("neutral", "none", "none"),
     False),
    ("misaligned", "alice@customer.test", "x@attacker.test", "attacker.test", False,
     ("pass", "pass", "fail"), False),
    ("temperror", "a@slow.test", "a@slow.test", "slow.test", False,
     ("temperror", "temperror", "temperror"), False),
]  # fmt: skip


each_case = pytest.mark.parametrize(
    ("name", "frm", "mail_from", "signer", "tamper", "expected", "authenticated"),
    CASES,
    ids=[c[0] for c in CASES],
)


@each_case
def test_checker_results(
    dns: tuple[str, Zone],
    keys: dict[str, tuple[bytes, str]],
    name: str,
    frm: str,
    mail_from: str,
    signer: str,
    tamper: bool,
    expected: tuple[str, str, str],
    authenticated: bool,
) -> None:
    address, _ = dns
    raw = message(frm, f"<{name.replace(' ', '-')}@t.test>")
    if signer:
        raw = signed(raw, signer, keys)
    if tamper:
        raw = raw.replace(b"It is on fire.", b"Pay invoice 4711 today.")
    checker = Checker(Resolver([address], timeout=TIMEOUT))
    started = time.monotonic()
    verdict = checker.check(raw, Connection("127.0.0.1", "client.test", mail_from), frm)
    elapsed = time.monotonic() - started
    assert (verdict.spf, verdict.dkim, verdict.dmarc) == expected
    assert verdict.source == "checked" and verdict.authenticated is authenticated
    # Bounded: SPF, DKIM and DMARC each wait at most a few timeouts, never forever.
    assert elapsed < TIMEOUT * 10


def test_answers_are_cached(dns: tuple[str, Zone], keys: dict[str, tuple[bytes, str]]) -> None:
    address, zone = dns
    checker = Checker(Resolver([address], timeout=TIMEOUT))
    raw = signed(message("alice@customer.test", "<c1@t.test>"), "customer.test", keys)
    conn = Connection("127.0.0.1", "client.test", "alice@customer.test")
    assert checker.check(raw, conn, "alice@customer.test").authenticated
    first = len(zone.queries)
    assert first >= 3  # SPF, the DKIM key, the DMARC policy
    assert checker.check(raw, conn, "alice@customer.test").authenticated
    assert len(zone.queries) == first


def test_spf_fails_for_an_address_outside_the_record(dns: tuple[str, Zone]) -> None:
    address, _ = dns
    checker = Checker(Resolver([address], timeout=TIMEOUT))
    conn = Connection("192.0.2.77", "client.test", "alice@customer.test")
    verdict = checker.check(message("alice@customer.test", "<o1@t.test>"), conn, conn.mail_from)
    assert (verdict.spf, verdict.dmarc, verdict.authenticated) == ("fail", "fail", False)


def test_peer_ip() -> None:
    assert peer_ip("127.0.0.1:2525") == "127.0.0.1"
    assert peer_ip("[::1]:25") == "::1"
    assert peer_ip("") == peer_ip("unix") == ""


def checked_app(make_app: Any, address: str, policy: str) -> App:
    app: App = make_app(
        f'[trust]\nown_checks = true\ndns_servers = ["{address}"]\n'
        f"dns_timeout_seconds = {TIMEOUT}\n"
        f'[[address]]\naddress = "{SUPPORT}"\nauth_policy = "{policy}"\n'
    )
    return app


@each_case
def test_policy_decision_on_checked_mail(
    make_app: Any,
    dns: tuple[str, Zone],
    keys: dict[str, tuple[bytes, str]],
    name: str,
    frm: str,
    mail_from: str,
    signer: str,
    tamper: bool,
    expected: tuple[str, str, str],
    authenticated: bool,
) -> None:
    app = checked_app(make_app, dns[0], "require")
    raw = message(frm, f"<p-{name.replace(' ', '-')}@t.test>")
    if signer:
        raw = signed(raw, signer, keys)
    if tamper:
        raw = raw.replace(b"It is on fire.", b"Pay invoice 4711 today.")
    # A forged "pass" from the sender's side is ignored: on the SMTP listener
    # emaild trusts only its own checks.
    raw = b"Authentication-Results: mx.example.net; dmarc=pass\r\n" + raw
    env = Envelope(
        channel="smtp", mail_from=mail_from, rcpt_to=(SUPPORT,), peer="127.0.0.1:40000",
        helo="client.test",
    )  # fmt: skip
    result = app.pipeline.ingest(raw, env)
    if authenticated:
        assert result.outcome is Outcome.NEW_CASE
    else:
        assert result.outcome is Outcome.QUARANTINED  # held, never bounced
    auth = next(d for d in result.trace if d["stage"] == "authenticate")
    assert auth["auth"] == dict(zip(("spf", "dkim", "dmarc"), expected, strict=True)) | {
        "source": "checked"
    }
    assert auth["ignored_authserv_ids"] == ["mx.example.net"]


def test_checks_over_the_real_smtp_listener(
    make_app: Any, dns: tuple[str, Zone], keys: dict[str, tuple[bytes, str]]
) -> None:
    app = checked_app(make_app, dns[0], "record")
    raw = signed(message("alice@customer.test", "<smtp1@t.test>"), "customer.test", keys)
    with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
        client.ehlo("client.test")
        client.sendmail("alice@customer.test", [SUPPORT], raw)
    with app.db.session() as s:
        case = load_case(s, 1)
        assert case is not None
        detail = case_detail(case, app.config)
    assert detail["messages"][0]["auth"] == {
        "spf": "pass",
        "dkim": "pass",
        "dmarc": "pass",
        "source": "checked",
    }
