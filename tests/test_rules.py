"""The rules engine on its own: every operator, field, flag and action; the loader's errors.

Messages are real MIME parsed by the real parser and classifier; rules are
TOML text loaded by the real loader. No database is needed here (see
test_rules_pipeline.py for the pipeline, the CLI and reload).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from emaild.classify import classify
from emaild.config import RoutingAddress
from emaild.errors import ConfigError
from emaild.mime.parse import parse_message
from emaild.pipeline.context import CaseFields
from emaild.rules import MessageFacts, RuleSet, RulesOutcome, load_rules, parse_rules
from emaild.rules.conditions import catastrophic, untimed_length
from emaild.rules.facts import MAX_BODY_CHARS, MAX_HEADER_CHARS, REGEX_BUDGET_SECONDS

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = RoutingAddress(address="support@example.com", aliases=["help@example.com"])
BILLING = RoutingAddress(address="billing@example.com")
ROUTING = {a: r.address for r in (SUPPORT, BILLING) for a in r.all_addresses()}


def mail(
    *,
    sender: str = "Alice Example <alice@customer.test>",
    to: str = "support@example.com",
    cc: str = "",
    subject: str = "Printer problem",
    body: str = "The printer is broken.",
    headers: tuple[str, ...] = (),
    attachment: tuple[str, str] | None = None,
    charset: str = "utf-8",
) -> bytes:
    """A small real message; ``attachment`` is (file name, content type)."""
    head = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", "Message-ID: <t@x.test>"]
    if cc:
        head.append(f"Cc: {cc}")
    head += list(headers)
    if attachment is None:
        head += [f"Content-Type: text/plain; charset={charset}", "", body]
    else:
        name, ctype = attachment
        head += [
            "MIME-Version: 1.0",
            'Content-Type: multipart/mixed; boundary="b"',
            "",
            "--b",
            f"Content-Type: text/plain; charset={charset}",
            "",
            body,
            "--b",
            f'Content-Type: {ctype}; name="{name}"',
            f'Content-Disposition: attachment; filename="{name}"',
            "Content-Transfer-Encoding: base64",
            "",
            "aGVsbG8gd29ybGQK",
            "--b--",
        ]
    return "\r\n".join(head).encode("utf-8") + b"\r\n"


def facts(
    raw: bytes,
    *,
    routing: RoutingAddress = SUPPORT,
    channel: str = "pipe",
    envelope_from: str = "",
    envelope_to: tuple[str, ...] = (),
) -> MessageFacts:
    parsed = parse_message(raw, spool_threshold=256 * 1024)
    return MessageFacts(
        parsed,
        classify(parsed, envelope_from if channel in ("smtp", "lmtp") else None),
        routing,
        channel=channel,
        envelope_from=envelope_from,
        envelope_to=envelope_to,
        resolve=ROUTING.get,
    )


def rules(text: str) -> RuleSet:
    return RuleSet(tuple(parse_rules(text, "test.toml")))


def one_rule(condition: str, actions: str = 'actions = { priority = "High" }') -> RuleSet:
    return rules(f'[[rule]]\nname = "r"\ndescription = "test rule"\n{condition}\n{actions}\n')


def run(ruleset: RuleSet, message: MessageFacts) -> RulesOutcome:
    return ruleset.evaluate(message, CaseFields())


# --- conditions: each operator and field, one message that matches and one that doesn't ----
PDF = ("report.pdf", "application/pdf")
CONDITIONS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    # (id, condition, matching message, non-matching message)
    (
        "equals",
        '{ field = "from", equals = "alice@customer.test" }',
        {},
        {"sender": "bob@customer.test"},
    ),
    (
        "equals-is-case-insensitive",
        '{ field = "from", equals = "ALICE@Customer.TEST" }',
        {},
        {"sender": "bob@customer.test"},
    ),
    (
        "in",
        '{ field = "from_domain", in = ["other.test", "customer.test"] }',
        {},
        {"sender": "x@elsewhere.test"},
    ),
    ("contains", '{ field = "subject", contains = "invoice" }', {"subject": "My INVOICE"}, {}),
    (
        "contains-any-of-list",
        '{ field = "subject", contains = ["refund", "invoice"] }',
        {"subject": "refund please"},
        {},
    ),
    (
        "starts_with",
        '{ field = "subject", starts_with = "[ext]" }',
        {"subject": "[EXT] hello"},
        {"subject": "hello [ext]"},
    ),
    (
        "ends_with",
        '{ field = "from", ends_with = "@vip.test" }',
        {"sender": "ceo@vip.test"},
        {},
    ),
    (
        "regex",
        "{ field = \"body\", regex = 'order\\s+#\\d{5}\\b' }",
        {"body": "About Order  #12345 again"},
        {"body": "About order #123"},
    ),
    (
        "not",
        '{ field = "subject", contains = "test", not = true }',
        {},
        {"subject": "just a test"},
    ),
    (
        "case_sensitive",
        '{ field = "subject", contains = "URGENT", case_sensitive = true }',
        {"subject": "URGENT now"},
        {"subject": "urgent now"},
    ),
    (
        "case_sensitive-regex",
        "{ field = \"subject\", regex = '^ID-[0-9]+$', case_sensitive = true }",
        {"subject": "ID-42"},
        {"subject": "id-42"},
    ),
    (
        "from_name",
        '{ field = "from_name", contains = "alice" }',
        {},
        {"sender": "Bob <bob@customer.test>"},
    ),
    (
        "any-header",
        '{ header = "X-Customer-Id", equals = "C-7" }',
        {"headers": ("X-Customer-Id: c-7",)},
        {"headers": ("X-Customer-Id: C-8",)},
    ),
    (
        "missing-header-never-equals",
        '{ header = "X-Customer-Id", starts_with = "C" }',
        {"headers": ("X-Customer-Id: C-1",)},
        {},
    ),
    ("to", '{ field = "to", equals = "help@example.com" }', {"to": "help@example.com"}, {}),
    ("cc", '{ field = "cc", equals = "boss@customer.test" }', {"cc": "boss@customer.test"}, {}),
    (
        "recipients",
        '{ field = "recipients", ends_with = "@partner.test" }',
        {"cc": "a@partner.test"},
        {"cc": "a@customer.test"},
    ),
    (
        "addressed_to-resolves-aliases",
        '{ field = "addressed_to", equals = "billing@example.com" }',
        {"cc": "Billing <BILLING@example.com>"},
        {"cc": "someone@example.com"},
    ),
    (
        "attachment_name",
        '{ field = "attachment_name", ends_with = ".pdf" }',
        {"attachment": PDF},
        {"attachment": ("notes.txt", "text/plain")},
    ),
    (
        "attachment_type",
        '{ field = "attachment_type", equals = "application/pdf" }',
        {"attachment": PDF},
        {},
    ),
    ("has_attachment", '{ is = "has_attachment" }', {"attachment": PDF}, {}),
    (
        "attachment_count",
        '{ field = "attachment_count", greater_than = 0 }',
        {"attachment": PDF},
        {},
    ),
    (
        "size-greater_than-with-unit",
        '{ field = "size", greater_than = "1 KB" }',
        {"body": "x" * 2000},
        {},
    ),
    ("size-less_than", '{ field = "size", less_than = 1000 }', {}, {"body": "x" * 2000}),
    (
        "spam-flag",
        '{ is = "spam" }',
        {"headers": ("X-Spam-Flag: YES",)},
        {"headers": ("X-Spam-Flag: NO",)},
    ),
    (
        "spam_score",
        '{ field = "spam_score", greater_than = 5 }',
        {"headers": ("X-Spam-Status: Yes, score=7.2 required=5.0",)},
        {"headers": ("X-Spam-Status: No, score=1.0 required=5.0",)},
    ),
    (
        "spam-header-direct",
        '{ header = "X-Spam-Flag", equals = "yes" }',
        {"headers": ("X-Spam-Flag: YES",)},
        {},
    ),
    ("charset", '{ field = "charset", equals = "iso-8859-1" }', {"charset": "iso-8859-1"}, {}),
    (
        "language",
        '{ field = "language", starts_with = "de" }',
        {"headers": ("Content-Language: en-GB, de-DE",)},
        {"headers": ("Content-Language: fr",)},
    ),
    (
        "is-reply",
        '{ is = "reply" }',
        {"subject": "Re: Printer problem", "headers": ("In-Reply-To: <a@b.test>",)},
        {},
    ),
    (
        "is-auto_reply",
        '{ is = "auto_reply" }',
        {"subject": "Out of office: back Monday", "headers": ("Auto-Submitted: auto-replied",)},
        {"headers": ("Auto-Submitted: auto-generated",)},
    ),
    (
        "is-auto_generated",
        '{ is = "auto_generated" }',
        {"headers": ("Auto-Submitted: auto-generated",)},
        {"headers": ("Auto-Submitted: auto-replied",)},
    ),
    (
        "is-bounce",
        '{ is = "bounce" }',
        {"sender": "MAILER-DAEMON@mx.test", "subject": "Undelivered Mail Returned to Sender"},
        {},
    ),
    ("is-bulk", '{ is = "bulk" }', {"headers": ("Precedence: bulk",)}, {}),
    ("is-auto", '{ is = "auto" }', {"headers": ("Precedence: junk",)}, {}),
    (
        "is-null_sender",
        '{ is = "null_sender" }',
        {"headers": ("Return-Path: <>",)},
        {"headers": ("Return-Path: <alice@customer.test>",)},
    ),
    (
        "all-group",
        '{ all = [{ field = "subject", contains = "printer" },'
        ' { field = "body", contains = "on fire" }] }',
        {"body": "It is on fire"},
        {},
    ),
    (
        "any-group-negated",
        '{ any = [{ field = "subject", contains = "x1" },'
        ' { field = "subject", contains = "x2" }], not = true }',
        {},
        {"subject": "about x2"},
    ),
]


@pytest.mark.parametrize(
    ("condition", "hit", "miss"),
    [pytest.param(c, h, m, id=name) for name, c, h, m in CONDITIONS],
)
def test_condition_matches_one_message_and_not_the_other(
    condition: str, hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    ruleset = one_rule(f"all = [{condition}]")
    assert run(ruleset, facts(mail(**hit))).matched == ["r"]
    assert run(ruleset, facts(mail(**miss))).matched == []


ENVELOPE_CONDITIONS = [
    ('{ field = "routing_address", equals = "billing@example.com" }', {"routing": BILLING}, {}),
    ('{ field = "channel", equals = "imap" }', {"channel": "imap"}, {}),
    (
        '{ field = "sender", ends_with = "@customer.test" }',
        {"channel": "smtp", "envelope_from": "alice@customer.test"},
        {"channel": "smtp", "envelope_from": "x@other.test"},
    ),
    (
        '{ is = "null_sender" }',
        {"channel": "smtp", "envelope_from": ""},
        {"channel": "smtp", "envelope_from": "a@b.test"},
    ),
    (
        '{ field = "addressed_to", equals = "billing@example.com" }',
        {"envelope_to": ("billing@example.com",)},
        {"envelope_to": ("support@example.com",)},
    ),
]


@pytest.mark.parametrize(("condition", "hit", "miss"), ENVELOPE_CONDITIONS)
def test_conditions_on_routing_and_envelope(
    condition: str, hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    ruleset = one_rule(f"all = [{condition}]")
    assert run(ruleset, facts(mail(), **hit)).matched == ["r"]
    assert run(ruleset, facts(mail(), **miss)).matched == []


def test_rule_level_all_and_any_must_both_hold() -> None:
    ruleset = one_rule(
        'all = [{ field = "from_domain", equals = "customer.test" }]\n'
        'any = [{ field = "subject", contains = "a1" }, { field = "subject", contains = "b2" }]'
    )
    assert run(ruleset, facts(mail(subject="about b2"))).matched == ["r"]
    assert run(ruleset, facts(mail(subject="about c3"))).matched == []
    assert run(ruleset, facts(mail(subject="b2", sender="x@other.test"))).matched == []


def test_a_rule_without_conditions_matches_everything() -> None:
    ruleset = one_rule("")
    assert run(ruleset, facts(mail())).matched == ["r"]


def test_match_records_why() -> None:
    ruleset = one_rule('all = [{ header = "X-Priority", starts_with = "1" }]')
    outcome = run(ruleset, facts(mail(headers=("X-Priority: 1 (Highest)",))))
    (match,) = outcome.matches
    assert match.because == ["X-Priority starts_with '1': X-Priority is '1 (Highest)'"]
    assert match.rule.where == "test.toml:1"


# --- actions ------------------------------------------------------------------------------
ACTIONS: list[tuple[str, str, dict[str, Any]]] = [
    # (id, actions table, expected outcome attributes for a matching message)
    ("priority", '{ priority = "urgent" }', {"priority": "Urgent"}),
    ("origin", '{ origin = "Web" }', {"origin": "Web"}),
    ("owner", '{ owner = "tier2" }', {"owner": "tier2"}),
    ("category", '{ category = "Billing" }', {"category": "Billing"}),
    ("tags-replace", '{ tags = ["a", "b"] }', {"tags": ["a", "b"]}),
    ("add_tags", '{ add_tags = ["vip", "base"] }', {"tags": ["base", "vip"]}),
    ("remove_tags", '{ remove_tags = ["base"] }', {"tags": []}),
    ("auto_response-choose", '{ auto_response = "vip" }', {"auto_response": "vip"}),
    ("auto_response-suppress", '{ auto_response = "" }', {"auto_response": ""}),
    ("quarantine", "{ quarantine = true }", {"disposition": "quarantine"}),
    ("drop", '{ drop = true, reason = "noise" }', {"disposition": "drop"}),
    ("if_new_case", '{ if_new_case = "drop" }', {"if_new_case": "drop"}),
]


@pytest.mark.parametrize(
    ("actions", "expected"), [pytest.param(a, e, id=name) for name, a, e in ACTIONS]
)
def test_action_applies_on_match_only(actions: str, expected: dict[str, Any]) -> None:
    ruleset = one_rule('all = [{ field = "subject", contains = "vip" }]', f"actions = {actions}")
    defaults = CaseFields(tags=["base"], auto_response="default")
    hit = ruleset.evaluate(facts(mail(subject="vip customer")), defaults)
    miss = ruleset.evaluate(facts(mail(subject="ordinary")), defaults)
    for key, value in expected.items():
        target_hit = hit.fields if hasattr(hit.fields, key) else hit
        target_miss = miss.fields if hasattr(miss.fields, key) else miss
        assert getattr(target_hit, key) == value, key
        assert getattr(target_miss, key) == getattr(
            defaults if hasattr(defaults, key) else RulesOutcome(CaseFields(), []), key
        )
    assert miss.matches == [] and miss.set_by == {}


def test_drop_and_quarantine_record_reason_and_end_processing() -> None:
    ruleset = rules(
        '[[rule]]\nname = "first"\ndescription = "Drop noise"\n'
        'all = [{ field = "subject", contains = "noise" }]\nactions = { drop = true }\n'
        '[[rule]]\nname = "second"\ndescription = "never reached"\nactions = { owner = "x" }\n'
    )
    outcome = run(ruleset, facts(mail(subject="noise")))
    assert outcome.matched == ["first"]
    assert (outcome.disposition, outcome.disposition_reason) == ("drop", "Drop noise")
    assert outcome.fields.owner == ""
    assert run(ruleset, facts(mail())).matched == ["second"]


def test_stop_ends_processing_and_later_rules_override_earlier() -> None:
    text = """
[[rule]]
name = "a"
description = "everything Low"
actions = { priority = "Low", owner = "a" }

[[rule]]
name = "b"
description = "VIPs are High, then stop"
all = [{ field = "from_domain", equals = "vip.test" }]
actions = { priority = "High", stop = true }

[[rule]]
name = "c"
description = "owner c"
actions = { owner = "c" }
"""
    ruleset = rules(text)
    vip = run(ruleset, facts(mail(sender="x@vip.test")))
    assert vip.matched == ["a", "b"]
    assert (vip.fields.priority, vip.fields.owner, vip.stopped_by) == ("High", "a", "b")
    assert vip.set_by == {"priority": "b", "owner": "a"}
    assert vip.changes[1] == {"priority": ["Low", "High"]}
    other = run(ruleset, facts(mail()))
    assert other.matched == ["a", "c"]
    assert (other.fields.priority, other.fields.owner, other.stopped_by) == ("Low", "c", "")


def test_if_new_case_open_undoes_an_earlier_if_new_case() -> None:
    ruleset = rules(
        '[[rule]]\nname = "a"\ndescription = "a"\nactions = { if_new_case = "quarantine" }\n'
        '[[rule]]\nname = "b"\ndescription = "b"\nall = [{ field = "subject", contains = "x" }]\n'
        'actions = { if_new_case = "open" }\n'
    )
    assert run(ruleset, facts(mail(subject="x"))).if_new_case == ""
    assert run(ruleset, facts(mail(subject="y"))).if_new_case == "quarantine"


# --- shipped defaults ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped() -> RuleSet:
    return load_rules(ROOT / "emaild" / "defaults" / "rules")


@pytest.mark.parametrize(
    ("message", "priority"),
    [
        ({"headers": ("X-Priority: 1",)}, "High"),
        ({"headers": ("X-Priority: 1 (Highest)",)}, "High"),
        ({"headers": ("Importance: High",)}, "High"),
        ({"subject": "URGENT: invoice wrong"}, "High"),
        ({"subject": "Production is down"}, "High"),
        ({"subject": "Outage in region eu-west"}, "High"),
        ({"subject": "download link broken"}, "Medium"),
        ({"headers": ("X-Priority: 3 (Normal)",)}, "Medium"),
        ({"headers": ("X-Priority: 5 (Lowest)",)}, "Low"),
        ({"headers": ("Importance: low",), "subject": "urgent after all"}, "High"),
    ],
)
def test_shipped_priority_rules(shipped: RuleSet, message: dict[str, Any], priority: str) -> None:
    assert run(shipped, facts(mail(**message))).fields.priority == priority


def test_shipped_rules_keep_routing_defaults_when_nothing_matches(shipped: RuleSet) -> None:
    defaults = CaseFields(priority="Low", origin="Web", owner="tier1", tags=["t"])
    outcome = shipped.evaluate(facts(mail()), defaults)
    assert outcome.matches == []
    assert outcome.fields == defaults
    assert outcome.fields is not defaults  # the routing defaults are never mutated


def test_shipped_rules_over_the_whole_corpus(shipped: RuleSet, corpus: Path) -> None:
    """No crash on any file; machine mail never opens a case on its own."""
    files = [p for p in sorted(corpus.rglob("*.eml")) if p.is_file()]
    assert len(files) > 700
    checked = bounces = 0
    for path in files:
        try:
            message = facts(path.read_bytes())
        except Exception as exc:  # the parser's InputError: not a message at all
            assert type(exc).__name__ == "InputError", path
            continue
        outcome = run(shipped, message)
        checked += 1
        assert outcome.fields.priority in ("Low", "Medium", "High", "Urgent")
        c = message.classification
        assert c is not None
        if c.bounce or c.report or c.vacation:
            bounces += 1
            assert outcome.if_new_case == "drop" or outcome.disposition, path
            assert outcome.fields.auto_response == "", path
    assert checked > 700
    assert bounces > 500  # the sisimai set is nearly all bounces and reports


def test_corpus_messages_with_x_priority_1_or_urgent_subject_get_high(
    shipped: RuleSet, corpus: Path
) -> None:
    """Real messages, as they are and with ``X-Priority: 1`` or an urgent subject added."""
    checked = 0
    for path in sorted((corpus / "mikel-mail").rglob("*.eml")):
        raw = path.read_bytes()
        try:
            plain = facts(raw)
        except Exception as exc:
            assert type(exc).__name__ == "InputError", path
            continue
        as_is = run(shipped, plain)
        assert (as_is.fields.priority == "High") == bool(
            {"high-priority-headers", "urgent-wording"} & set(as_is.matched)
        ), path
        flagged = run(shipped, facts(b"X-Priority: 1\r\n" + raw))
        assert flagged.fields.priority == "High", path
        assert "high-priority-headers" in flagged.matched, path
        urgent = run(shipped, facts(b"Subject: Urgent: please call\r\n" + _no_subject(raw)))
        assert urgent.fields.priority == "High", path
        checked += 1
    assert checked > 80


def _no_subject(raw: bytes) -> bytes:
    head, sep, body = (
        raw.partition(b"\n\n") if b"\r\n\r\n" not in raw else raw.partition(b"\r\n\r\n")
    )
    lines = head.splitlines(keepends=True)
    kept: list[bytes] = []
    skipping = False
    for line in lines:
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"subject:")
        if not skipping:
            kept.append(line)
    return b"".join(kept) + sep + body


# --- the index gives the same answers as testing every rule ---------------------------------
def test_index_matches_brute_force_on_the_corpus(corpus: Path) -> None:
    text = "\n".join(
        f'[[rule]]\nname = "d{i}"\ndescription = "d"\n'
        f'all = [{{ field = "from_domain", in = ["{d}"] }}]\nactions = {{ owner = "q{i}" }}\n'
        for i, d in enumerate(["libsisimai.org", "example.jp", "gmail.com", "example.com"])
    )
    text += (
        '[[rule]]\nname = "subject"\ndescription = "s"\n'
        'any = [{ field = "subject", contains = "mail" }]\nactions = { add_tags = ["m"] }\n'
        '[[rule]]\nname = "rcpt"\ndescription = "r"\n'
        'all = [{ field = "recipients", in = ["kijitora@example.jp", "neko@example.jp"] },'
        ' { field = "subject", contains = "e" }]\nactions = { category = "c" }\n'
    )
    indexed = RuleSet(tuple(parse_rules(text, "t.toml")))
    brute = RuleSet(tuple(parse_rules(text, "t.toml")), index=False)
    hits = 0
    for path in sorted((corpus / "sisimai").rglob("*.eml"))[:300]:
        message = facts(path.read_bytes())
        a, b = run(indexed, message), run(brute, message)
        assert a.matched == b.matched, path
        hits += len(a.matched)
    assert hits > 50


# --- regular expressions are bounded ---------------------------------------------------------
@pytest.mark.parametrize(
    "pattern",
    ["(a+)+$", "(a*)*b", "(a|a)*c", "(a|ab)*c", "(.*a){12}", "(\\w+\\s?)+$", "(x)\\1"],
)
def test_catastrophic_regexes_are_refused(pattern: str) -> None:
    assert catastrophic(pattern)
    with pytest.raises(ConfigError, match="is refused"):
        parse_rules(
            f'[[rule]]\nname = "r"\ndescription = "d"\n'
            f"all = [{{ field = \"body\", regex = '{pattern}' }}]\n"
            'actions = { priority = "High" }\n',
            "t.toml",
        )


@pytest.mark.parametrize(
    "pattern", ["\\border\\s*#?\\d+", "^(re|aw):", "(?:\\d{1,3}\\.){3}\\d{1,3}"]
)
def test_ordinary_regexes_are_accepted(pattern: str) -> None:
    assert catastrophic(pattern) == ""


def test_slow_regex_is_cut_off_and_reported() -> None:
    """Polynomial backtracking (not refused at load) hits the time limit, not the worker."""
    ruleset = one_rule("all = [{ field = \"body\", regex = 'a.*b.*c.*d$' }]")
    message = facts(mail(body="abc" * (MAX_BODY_CHARS // 3)))
    start = time.perf_counter()
    outcome = run(ruleset, message)
    elapsed = time.perf_counter() - start
    assert outcome.matched == []
    assert outcome.timeouts and "on body" in outcome.timeouts[0]
    assert elapsed < REGEX_BUDGET_SECONDS + 0.5


def test_regex_time_budget_is_per_message() -> None:
    slow = "\n".join(
        f'[[rule]]\nname = "slow{i}"\ndescription = "d"\n'
        f"all = [{{ field = \"body\", regex = 'a.*b.*c.*{i}$' }}]\nactions = {{ stop = false }}\n"
        for i in range(20)
    )
    ruleset = rules(slow)
    start = time.perf_counter()
    outcome = run(ruleset, facts(mail(body="abc" * (MAX_BODY_CHARS // 3))))
    assert time.perf_counter() - start < REGEX_BUDGET_SECONDS + 0.5  # not 20 x the limit
    assert any("budget spent" in t for t in outcome.timeouts)
    # The next message has its own budget, and a fast regex still matches.
    fast = one_rule("all = [{ field = \"body\", regex = 'ab' }]")
    assert run(fast, facts(mail(body="xxab"))).matched == ["r"]


def test_text_is_cut_before_operators_see_it() -> None:
    message = facts(mail(body="a" * (MAX_BODY_CHARS * 2), subject="s" * 9000))
    assert len(message.values("body")[0]) == MAX_BODY_CHARS
    assert len(message.values("subject")[0]) == MAX_HEADER_CHARS


# --- the loader refuses bad rules with file:line: rule 'name': problem ------------------------
GOOD_RULE = '[[rule]]\nname = "fine"\ndescription = "ok"\nactions = { priority = "High" }\n\n'
BAD_RULES = [
    # (id, rule text appended after GOOD_RULE (which takes lines 1-5), line, message)
    (
        "unknown-rule-key",
        '[[rule]]\nname = "x"\ndescription = "d"\nwhen = 1\nactions = { priority = "High" }\n',
        9,
        "rule 'x': unknown key 'when'",
    ),
    (
        "unknown-field",
        '[[rule]]\nname = "x"\ndescription = "d"\n'
        'any = [\n  { field = "subject", contains = "a" },\n'
        '  { field = "subjekt", contains = "a" },\n]\nactions = { priority = "High" }\n',
        11,
        "rule 'x': unknown field 'subjekt'",
    ),
    (
        "bad-regex",
        '[[rule]]\nname = "x"\ndescription = "d"\n'
        'all = [{ field = "body", regex = \'(unclosed\' }]\nactions = { priority = "High" }\n',
        9,
        "rule 'x': bad regex '(unclosed'",
    ),
    (
        "unknown-action",
        '[[rule]]\nname = "x"\ndescription = "d"\n'
        '[rule.actions]\npriority = "High"\nescalate = true\n',
        11,
        "rule 'x': unknown action 'escalate'",
    ),
    (
        "bad-priority",
        '[[rule]]\nname = "x"\ndescription = "d"\nactions = { priority = "Highest" }\n',
        9,
        "rule 'x': priority must be one of Low, Medium, High, Urgent",
    ),
    (
        "two-operators",
        '[[rule]]\nname = "x"\ndescription = "d"\n'
        'all = [{ field = "subject", contains = "a", equals = "b" }]\nactions = { stop = true }\n',
        9,
        "rule 'x': a condition on subject needs exactly one operator",
    ),
    (
        "unknown-flag",
        '[[rule]]\nname = "x"\ndescription = "d"\n'
        'all = [{ is = "robot" }]\nactions = { stop = true }\n',
        9,
        "rule 'x': unknown flag 'robot'",
    ),
    (
        "operator-for-numbers",
        '[[rule]]\nname = "x"\ndescription = "d"\n'
        'all = [{ field = "size", contains = "1" }]\nactions = { stop = true }\n',
        9,
        "rule 'x': contains does not apply to the number size",
    ),
    (
        "missing-name",
        '[[rule]]\ndescription = "d"\nactions = { stop = true }\n',
        6,
        "rule #2: name is required",
    ),
    (
        "missing-description",
        '[[rule]]\nname = "x"\nactions = { stop = true }\n',
        6,
        "rule 'x': description is required",
    ),
    (
        "no-actions",
        '[[rule]]\nname = "x"\ndescription = "d"\n',
        6,
        "rule 'x': actions is required",
    ),
    (
        "duplicate-name",
        '[[rule]]\nname = "fine"\ndescription = "d"\nactions = { stop = true }\n',
        6,
        "rule 'fine': duplicate rule name (first defined at 10-good.toml:1)",
    ),
    (
        "in-needs-a-list",
        '[[rule]]\nname = "x"\ndescription = "d"\n'
        'all = [{ field = "from", in = "a@b.test" }]\nactions = { stop = true }\n',
        9,
        "rule 'x': in needs a list of strings, got a string",
    ),
    (
        "toml-syntax",
        '[[rule]]\nname = "x\n',
        7,
        "invalid TOML",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "message"), [pytest.param(t, n, m, id=i) for i, t, n, m in BAD_RULES]
)
def test_bad_rule_files_are_refused_with_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    (tmp_path / "10-good.toml").write_text(GOOD_RULE, encoding="utf-8")
    bad = tmp_path / "20-bad.toml"
    bad.write_text(GOOD_RULE.replace('"fine"', '"other"') + text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(tmp_path)
    assert str(caught.value).startswith(f"{bad}:{line}: {message}"), str(caught.value)


def test_rules_load_in_file_name_order(tmp_path: Path) -> None:
    for name in ("20-b.toml", "100-c.toml", "10-a.toml", ".hidden.toml", "notes.txt"):
        rule = name.split(".")[0].replace("-", "_") or "hidden"
        (tmp_path / name).write_text(
            f'[[rule]]\nname = "{rule}"\ndescription = "d"\nactions = {{ stop = false }}\n',
            encoding="utf-8",
        )
    loaded = load_rules(tmp_path)
    # Plain string order of the names ("10-" < "100" < "20-"), not numeric order.
    assert [r.name for r in loaded.rules] == ["10_a", "100_c", "20_b"]
    assert loaded.files == ("10-a.toml", "100-c.toml", "20-b.toml")


def test_disabled_rules_are_checked_but_not_used(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(
        '[[rule]]\nname = "off"\ndescription = "d"\nenabled = false\nactions = { owner = "x" }\n',
        encoding="utf-8",
    )
    assert len(load_rules(tmp_path)) == 0
    (tmp_path / "r.toml").write_text(
        '[[rule]]\nname = "off"\ndescription = "d"\nenabled = false\nactions = { owner = 1 }\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"r\.toml:5: rule 'off': owner must be a string"):
        load_rules(tmp_path)


def test_missing_rules_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rules directory not found"):
        load_rules(tmp_path / "nope")
    assert len(load_rules(None)) == 0


def test_auto_response_must_name_a_known_template() -> None:
    text = (
        '[[rule]]\nname = "vip"\ndescription = "d"\n'
        '[rule.actions]\nowner = "x"\nauto_response = "vip-ack"\n'
    )
    assert len(parse_rules(text, "t.toml")) == 1  # no template list: not checked
    assert len(parse_rules(text, "t.toml", templates=["default", "vip-ack"])) == 1
    with pytest.raises(ConfigError) as caught:
        parse_rules(text, "t.toml", templates=["default"])
    assert str(caught.value) == (
        "t.toml:6: rule 'vip': no auto-response template 'vip-ack' (have: default)"
    )
    suppress = text.replace('"vip-ack"', '""')
    assert parse_rules(suppress, "t.toml", templates=[])[0].actions.auto_response == ""


@pytest.mark.parametrize(
    ("pattern", "length"),
    [("urgent", 10**6), ("\\border\\s{0,3}#?1\\b", 10**6), ("a.*b", 1000), ("a.*b\\s+c", 99)],
)
def test_short_text_skips_the_time_limit_only_when_the_worst_case_is_small(
    pattern: str, length: int
) -> None:
    assert untimed_length(pattern) == length
