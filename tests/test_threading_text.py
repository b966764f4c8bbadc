"""Threading without a database: signed tokens and their formats, the "new text" view,
display subjects, and the originals inside bounces."""

from __future__ import annotations

from pathlib import Path

import pytest

from emaild.config import load_config
from emaild.correlation.bounce import embedded_message_ids
from emaild.correlation.newtext import new_text
from emaild.correlation.subject import display_subject, strip_prefixes
from emaild.correlation.tokens import CaseSigner, format_regex
from emaild.errors import ConfigError

SIGNER = CaseSigner(secret=b"0123456789abcdef-test-secret", domain="mail.example.com")


# --- signed references and tokens ---------------------------------------------
def test_message_ids_are_unique_signed_and_ours() -> None:
    ids = {SIGNER.message_id(42) for _ in range(200)}
    assert len(ids) == 200
    for mid in ids:
        assert mid.startswith("<emaild.42.") and mid.endswith("@mail.example.com>")
        assert SIGNER.case_from_message_id(mid) == 42
        assert SIGNER.case_from_message_id(mid.upper()) == 42  # some MTAs upcase


def test_other_secret_or_a_forgery_under_any_domain_does_not_verify() -> None:
    mid = SIGNER.message_id(7)
    other = CaseSigner(secret=b"another-secret-of-16+bytes", domain="mail.example.com")
    assert other.case_from_message_id(mid) is None
    # Under another domain only the signature counts (routing addresses differ in domain).
    forged = mid.replace("emaild.7.", "emaild.8.")
    assert SIGNER.case_from_message_id(forged.replace("mail.example.com", "evil.test")) is None
    assert not SIGNER.is_ours(forged.replace("mail.example.com", "evil.test"))
    assert SIGNER.case_from_message_id("<7.thread.0000@mail.example.com>") is None


def test_message_ids_use_the_routing_address_domain_unless_one_is_configured() -> None:
    """Not the host's name (often ``localhost``): the address the mail goes out as."""
    mid = SIGNER.message_id(7, "Support@Billing.Example.ORG")
    assert mid.endswith("@billing.example.org>")
    assert SIGNER.case_from_message_id(mid) == 7 and SIGNER.is_ours(mid)
    fixed = CaseSigner(secret=SIGNER.secret, domain="ids.example.net", domain_configured=True)
    assert fixed.message_id(7, "support@billing.example.org").endswith("@ids.example.net>")


def test_token_is_stable_and_found_in_text_among_decoys() -> None:
    token = SIGNER.token(1234)
    assert token == SIGNER.token(1234)
    forged = "1234.thread." + "0" * 20
    text = f"ver 1.2.3, {forged} and (ref:{token}:ref)."
    found = SIGNER.find_tokens(text)
    assert [(f.text, f.case_id) for f in found] == [(forged, None), (token, 1234)]


@pytest.mark.parametrize(
    ("fmt", "subject", "numbers"),
    [
        ("[Case #{number:08d}]", "RE: AW: [Case #00001234] printer", [1234]),
        ("[Case #{number:08d}]", "Re: [case #1234]", [1234]),  # case and padding differ
        ("[Case #{number:08d}]", "Re:[Case  #00000012][Case #00000013]", [12, 13]),
        ("[Case #{number:08d}]", "Case 1234 and #1234 and [Case #]", []),
        ("Ticket#{number}", "Re: Ticket#77 x", [77]),
        ("Ticket#{number}", "Re: Ticket# 77", [77]),
        ("Ticket#{number}", "Re: Ticket #77", []),  # the literal itself must match
    ],
)
def test_subject_numbers_follow_the_configured_format(
    fmt: str, subject: str, numbers: list[int]
) -> None:
    signer = CaseSigner(secret=SIGNER.secret, domain="x.test", subject_format=fmt)
    assert signer.subject_numbers(subject) == numbers


def test_subject_and_body_tokens_render_and_read_back() -> None:
    signer = CaseSigner(
        secret=SIGNER.secret,
        domain="x.test",
        subject_format="[#{number} {token}]",
        body_format="--ref:{token}--",
        body_enabled=True,
    )
    tag = signer.subject_token(5)
    assert tag == f"[#5 {signer.token(5)}]"
    assert signer.subject_numbers(f"Re: {tag}") == [5]
    assert [f.case_id for f in signer.find_tokens(signer.body_token(5))] == [5]
    assert format_regex("--ref:{token}--").search(signer.body_token(5)) is not None


def test_switched_off_positions_render_nothing() -> None:
    off = CaseSigner(
        secret=SIGNER.secret, domain="x.test", subject_enabled=False, body_enabled=False
    )
    assert off.subject_token(3) == ""
    assert off.body_token(3) == ""
    assert off.mark_subject("Hello", 3) == "Hello"


def test_mark_subject_adds_the_tag_once_and_replaces_another_cases() -> None:
    assert SIGNER.mark_subject("Printer", 9) == "Printer [Case #00000009]"
    marked = SIGNER.mark_subject("Re: Printer [Case #00000009]", 9)
    assert marked == "Re: Printer [Case #00000009]"
    assert SIGNER.mark_subject("Re: [Case #00000003] Printer", 9) == "Re: Printer [Case #00000009]"


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('subject_token_format = "{number}"', "needs text around it"),
        ('subject_token_format = "[{case}]"', "unknown field"),
        ('subject_token_format = "[#{number:x}]"', "plain decimal"),
        ('subject_token_format = "[Case]"', "must contain {number} or {token}"),
        ('body_token_format = "Case {number}"', "must contain {token}"),
        ('body_token_format = "ref:{token"', "bad format"),
    ],
)
def test_bad_token_formats_are_config_errors(tmp_path: Path, toml: str, problem: str) -> None:
    path = tmp_path / "emaild.toml"
    path.write_text(f"[threading]\n{toml}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {"EMAILD_STATE_DIR": str(tmp_path)})
    assert err.value.render().startswith(f"{path}:2: threading.")
    assert problem in err.value.problem


# --- new text --------------------------------------------------------------
def test_top_posted_reply_with_gmail_attribution_and_signature() -> None:
    text = (
        "Thanks, it works now.\n"
        "\n"
        "-- \n"
        "Alice Example\n"
        "Customer Inc.\n"
        "\n"
        "On Mon, 3 Jun 2024 at 10:00, Example Support <support@example.com>\n"
        "wrote:\n"
        "> Please restart the printer.\n"
        ">\n"
        "> > It is on fire.\n"
    )
    assert new_text(text) == "Thanks, it works now."


def test_outlook_history_block_is_cut() -> None:
    text = (
        "Any news?\n\n"
        "Sent from my iPhone\n"
        "\n"
        "________________________________\n"
        "From: Example Support <support@example.com>\n"
        "Sent: Monday, June 3, 2024 10:00\n"
        "To: Alice\n"
        "Subject: RE: Printer\n\n"
        "Please restart the printer.\n"
    )
    assert new_text(text) == "Any news?"


def test_german_header_block_without_separator_is_cut() -> None:
    text = "Danke!\n\nVon: Support <support@example.com>\nGesendet: Montag\nAn: Alice\n\nalt"
    assert new_text(text) == "Danke!"


def test_interleaved_answers_keep_the_new_lines() -> None:
    text = (
        "Le lun. 3 juin 2024, Support <support@example.com> a écrit :\n"
        "> Which model?\n"
        "LaserJet 4.\n"
        "> Which room?\n"
        "Room 12.\n"
    )
    assert new_text(text) == "LaserJet 4.\nRoom 12."


def test_ordinary_text_is_left_alone() -> None:
    text = (
        "Hello,\n\nOn Monday we had a meeting; nobody wrote anything.\n"
        "From: the manual, page 3\n--\nstill my text\n" + "line\n" * 20
    )
    assert new_text(text) == text.strip()


def test_only_quotes_gives_empty_new_text() -> None:
    assert new_text("> just\n> quoted\n") == ""


# --- display subjects ------------------------------------------------------
@pytest.mark.parametrize(
    ("subject", "shown"),
    [
        ("Re: Printer", "Printer"),
        ("RE: AW: Fwd: FW: WG: Printer", "Printer"),
        ("Re[2]: Printer", "Printer"),
        ("[External] Re: Printer", "Printer"),
        ("[EXTERNAL] RE: [External Sender] SV: Printer", "Printer"),
        ("*EXTERNAL* Printer", "Printer"),
        ("回复： Printer", "Printer"),
        ("Reply needed: Printer", "Reply needed: Printer"),
        ("Re:", "Re:"),  # nothing left: keep what was there
    ],
)
def test_strip_prefixes(subject: str, shown: str) -> None:
    assert display_subject(subject) == shown


def test_display_subject_drops_our_tag_between_prefixes() -> None:
    subject = "Re: [Case #00000012] AW: Printer on fire"
    assert display_subject(subject, SIGNER.strip_subject_tokens) == "Printer on fire"
    assert strip_prefixes(subject) == "[Case #00000012] AW: Printer on fire"


# --- bounce originals ------------------------------------------------------
def test_originals_found_in_rfc822_parts_header_parts_and_pasted_text() -> None:
    structured = (
        b"From: MAILER-DAEMON@x\r\nMessage-ID: <the-bounce@x>\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: a@x\r\nMessage-ID: <orig-1@x>\r\n\r\nbody\r\n--b--\r\n"
    )
    assert embedded_message_ids(structured) == ["<orig-1@x>"]
    headers_only = structured.replace(b"message/rfc822", b"text/rfc822-headers")
    assert embedded_message_ids(headers_only) == ["<orig-1@x>"]
    pasted = (
        b"From: MAILER-DAEMON@x\r\nMessage-ID: <the-bounce@x>\r\n\r\n"
        b"--- Below this line is a copy of the message.\r\n\r\n"
        b"Return-Path: <a@x>\r\nMessage-Id:\r\n <orig-2@x>\r\nSubject: hi\r\n"
    )
    assert embedded_message_ids(pasted) == ["<orig-2@x>"]
    assert embedded_message_ids(b"Message-ID: <only-own@x>\r\n\r\nno copy here\r\n") == []
