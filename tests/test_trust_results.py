"""Reading Authentication-Results (RFC 8601) into a verdict: trusted ids only, DMARC first."""

from __future__ import annotations

import pytest

from emaild.trust import AuthVerdict, verdict_from_headers
from emaild.trust.policy import hold_reason, threading_refusal
from emaild.trust.results import aligned, normalise

MX = "mx.example.net"
ALICE = "alice@customer.test"


def verdict(*headers: str, trusted: tuple[str, ...] = (MX,), sender: str = ALICE) -> AuthVerdict:
    return verdict_from_headers(list(headers), trusted, sender)


def test_trusted_dmarc_pass_authenticates() -> None:
    v = verdict(
        f"{MX}; spf=pass smtp.mailfrom=alice@customer.test;"
        " dkim=pass header.d=customer.test header.s=s1; dmarc=pass header.from=customer.test"
    )
    assert v.as_json() == {"spf": "pass", "dkim": "pass", "dmarc": "pass", "source": "header"}
    assert v.authenticated and v.authserv_id == MX and v.why == "dmarc=pass"


def test_forged_copy_from_untrusted_id_is_ignored_and_recorded() -> None:
    # The attacker's copy comes first in the message, as a prepended one would.
    v = verdict(
        "attacker.test; spf=pass; dkim=pass header.d=customer.test; dmarc=pass",
        f"{MX}; spf=fail smtp.mailfrom=customer.test; dmarc=fail header.from=customer.test",
    )
    assert (v.dmarc, v.spf, v.authenticated) == ("fail", "fail", False)
    assert v.ignored == ("attacker.test",)
    assert v.evidence()["ignored_authserv_ids"] == ["attacker.test"]


def test_only_untrusted_copies_mean_no_results() -> None:
    v = verdict("attacker.test; dmarc=pass header.from=customer.test")
    assert v.as_json() == {"spf": "none", "dkim": "none", "dmarc": "none", "source": "none"}
    assert not v.authenticated and v.ignored == ("attacker.test",)


def test_no_trusted_ids_configured_trusts_nothing() -> None:
    v = verdict(f"{MX}; dmarc=pass header.from=customer.test", trusted=())
    assert v.source == "none" and not v.authenticated and v.ignored == (MX,)


def test_authserv_id_match_is_case_insensitive() -> None:
    assert verdict("MX.Example.NET; dmarc=pass", trusted=("mx.example.net",)).authenticated


def test_topmost_trusted_copy_wins() -> None:
    v = verdict(f"{MX}; dmarc=fail", f"{MX}; dmarc=pass")
    assert v.dmarc == "fail" and not v.authenticated


def test_dmarc_fail_is_not_overruled_by_aligned_dkim() -> None:
    v = verdict(f"{MX}; dkim=pass header.d=customer.test; dmarc=fail")
    assert not v.authenticated and v.dkim == "pass"


@pytest.mark.parametrize(
    ("header", "authenticated"),
    [
        ("dkim=pass header.d=customer.test", True),
        ("dkim=pass header.d=mail.customer.test", True),  # relaxed alignment
        ("dkim=pass header.d=attacker.test", False),  # misaligned: anyone can sign
        ("spf=pass smtp.mailfrom=bounce@customer.test", True),
        ("spf=pass smtp.mailfrom=bounce@attacker.test", False),
        ("spf=softfail smtp.mailfrom=customer.test", False),
        ("dkim=fail header.d=customer.test", False),
        ("dkim=temperror header.d=customer.test", False),
    ],
)
def test_without_dmarc_only_an_aligned_pass_authenticates(header: str, authenticated: bool) -> None:
    assert verdict(f"{MX}; {header}").authenticated is authenticated


def test_best_of_several_dkim_signatures_is_reported() -> None:
    v = verdict(f"{MX}; dkim=fail header.d=list.test; dkim=pass header.d=customer.test")
    assert v.dkim == "pass" and v.authenticated


def test_results_outside_the_vocabulary_are_normalised() -> None:
    assert [normalise(r) for r in ("PASS", "hardfail", "policy", "bogus", " none ")] == [
        "pass",
        "fail",
        "neutral",
        "permerror",
        "none",
    ]


def test_unparsable_header_is_recorded_not_fatal() -> None:
    v = verdict("this is ;;; not = a header", f"{MX}; dmarc=pass")
    assert v.authenticated
    assert v.problems and "unparsable" in v.problems[0]


def test_folded_header_parses() -> None:
    v = verdict(f"{MX};\r\n\tspf=pass smtp.mailfrom=customer.test;\r\n\tdmarc=pass")
    assert (v.spf, v.dmarc) == ("pass", "pass")


def test_alignment_never_accepts_a_bare_tld() -> None:
    assert not aligned("test", "customer.test")
    assert aligned("customer.test", "a.customer.test")
    assert not aligned("evilcustomer.test", "customer.test")


def test_policy_decisions() -> None:
    good = verdict(f"{MX}; dmarc=pass")
    bad = verdict(f"{MX}; dmarc=fail")
    assert threading_refusal("record", bad) == ""
    assert threading_refusal("require_for_threading", good) == ""
    assert "not authenticated" in threading_refusal("require_for_threading", bad)
    assert "not authenticated" in threading_refusal("require", bad)
    assert hold_reason("require_for_threading", bad) == ""
    assert hold_reason("require", good) == ""
    assert "dmarc=fail" in hold_reason("require", bad)
