"""Rules on sender authentication and spam: the ``auth.*`` and ``spam.*`` facts.

From a rule file through the real pipeline to the case, and as ``emaild rules
test`` shows them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from threading_mail import SUPPORT, case_row, ingest, mail

from emaild.app import App
from emaild.errors import ConfigError
from emaild.mime.parse import parse_message
from emaild.pipeline import Outcome
from emaild.rules import MessageFacts
from emaild.rules.loader import parse_rules

MX = "mx.example.net"
DMARC_FAIL = ("Authentication-Results", f"{MX}; spf=softfail smtp.mailfrom=x.test; dmarc=fail")
DMARC_PASS = ("Authentication-Results", f"{MX}; dkim=pass header.d=customer.test; dmarc=pass")
SPAMMY = [("X-Spam-Flag", "YES"), ("X-Spam-Score", "9.5")]

RULES = """
[[rule]]
name = "spoofed"
description = "DMARC failed: tag it for a careful look"
all = [{ field = "auth.dmarc", equals = "fail" }]
actions = { add_tags = ["spoof-suspect"] }

[[rule]]
name = "spammy"
description = "a high spam score goes to the spam queue"
any = [{ field = "spam.score", greater_than = 5 }, { field = "spam.flag", equals = "yes" }]
actions = { category = "spam" }

[[rule]]
name = "verified-vip"
description = "authenticated mail from the customer's domain"
all = [
  { field = "auth.authenticated", equals = "yes" },
  { field = "auth.dkim", equals = "pass" },
  { field = "auth.source", equals = "header" },
]
actions = { priority = "High" }
"""


def rules_app(make_app: Any, tmp_path: Path) -> App:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "10-trust.toml").write_text(RULES, encoding="utf-8")
    app: App = make_app(
        f'rules_dir = "{rules_dir}"\n[trust]\nauthserv_ids = ["{MX}"]\n'
        f'[[address]]\naddress = "{SUPPORT}"\n'
    )
    return app


def test_auth_and_spam_fields_compile_and_bad_values_are_refused() -> None:
    rules = parse_rules(RULES, "t.toml")
    assert [r.name for r in rules] == ["spoofed", "spammy", "verified-vip"]
    with pytest.raises(ConfigError, match=r"does not apply to the number spam\.score"):
        parse_rules(
            '[[rule]]\nname = "x"\ndescription = "x"\n'
            'all = [{ field = "spam.score", contains = "9" }]\nactions = { priority = "Low" }\n',
            "t.toml",
        )


def test_facts_without_a_verdict_have_no_auth_values() -> None:
    facts = MessageFacts(parse_message(mail(mid="<x@y.test>"), spool_threshold=4096))
    assert facts.values("auth.dmarc") == ()
    assert facts.values("spam.flag") == ("no",)
    assert facts.number("spam.score") is None


def test_rules_see_auth_and_spam(make_app: Any, tmp_path: Path) -> None:
    app = rules_app(make_app, tmp_path)
    spoof = ingest(app, mail(mid="<r1@x.test>", headers=[DMARC_FAIL, *SPAMMY]))
    assert spoof.outcome is Outcome.NEW_CASE
    case = case_row(app, spoof.case_number)
    assert (case.tags, case.category, case.priority) == (["spoof-suspect"], "spam", "Medium")
    good = ingest(app, mail(mid="<r2@customer.test>", headers=[DMARC_PASS]))
    case = case_row(app, good.case_number)
    assert (case.tags, case.category, case.priority) == ([], "", "High")


def test_rules_test_shows_auth_and_spam_facts(make_app: Any, run_cli: Any, tmp_path: Path) -> None:
    rules_app(make_app, tmp_path)
    eml = tmp_path / "spoof.eml"
    eml.write_bytes(mail(mid="<t1@x.test>", headers=[DMARC_FAIL, *SPAMMY]))
    env = {"EMAILD_CONFIG": str(tmp_path / "emaild.toml")}
    proc = run_cli("rules", "test", str(eml), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["matched"] == ["spoofed", "spammy"]
    assert report["auth"]["dmarc"] == "fail" and report["auth"]["authenticated"] is False
    assert report["spam"] == {"flag": "yes", "score": 9.5}
    text = run_cli("rules", "test", str(eml), env=env).stdout.decode()
    assert "auth: auth.spf=softfail auth.dkim=none auth.dmarc=fail auth.source=header" in text
    assert "spam: spam.flag=yes spam.score=9.5" in text
