"""Sender authentication through the real pipeline, on SQLite and PostgreSQL.

Spoofing: a forged From of the case's customer with the right In-Reply-To
does not join the case under ``auth_policy = "require_for_threading"``; the
genuine reply does. ``require`` holds unauthenticated mail in quarantine
(stored, listed, releasable), never bounces it. ``cases show --json`` gives
every inbound message its ``auth`` object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from threading_mail import SUPPORT, case_row, ingest, mail, send, trace

from emaild import quarantine
from emaild.app import App
from emaild.cases import case_detail, load_case
from emaild.pipeline import Outcome
from emaild.store.models import Message

MX = "mx.example.net"
PASS = (
    "Authentication-Results",
    f"{MX}; spf=pass smtp.mailfrom=alice@customer.test;"
    " dkim=pass header.d=customer.test; dmarc=pass header.from=customer.test",
)
FAIL = (
    "Authentication-Results",
    f"{MX}; spf=fail smtp.mailfrom=alice@customer.test; dkim=none;"
    " dmarc=fail header.from=customer.test",
)
FORGED = ("Authentication-Results", "attacker.test; spf=pass; dkim=pass; dmarc=pass")


def trust_app(make_app: Any, policy: str = "record") -> App:
    app: App = make_app(
        f'[trust]\nauthserv_ids = ["{MX}"]\n'
        f'[[address]]\naddress = "{SUPPORT}"\nauth_policy = "{policy}"\n'
    )
    return app


def auth_of(app: App, case: int | None, index: int = 0) -> dict[str, str]:
    assert case is not None
    with app.db.session() as s:
        found = load_case(s, case)
        assert found is not None
        detail = case_detail(found, app.config)
    auth: dict[str, str] = detail["messages"][index]["auth"]
    return auth


def stage_trace(app: App, row: int | None, stage: str) -> list[dict[str, Any]]:
    assert row is not None
    with app.db.session() as s:
        msg = s.get(Message, row)
        assert msg is not None
        return [d for d in msg.decision_trace if d["stage"] == stage]


def test_trusted_results_recorded_and_shown(make_app: Any) -> None:
    app = trust_app(make_app)
    result = ingest(app, mail(mid="<a1@customer.test>", headers=[PASS]))
    assert result.outcome is Outcome.NEW_CASE
    assert auth_of(app, result.case_number) == {
        "spf": "pass",
        "dkim": "pass",
        "dmarc": "pass",
        "source": "header",
    }
    entry = stage_trace(app, result.message_row_id, "authenticate")[0]
    assert entry["decision"] == "authenticated" and entry["authserv_id"] == MX


def test_forged_results_from_untrusted_id_are_ignored(make_app: Any) -> None:
    app = trust_app(make_app, "require")
    result = ingest(app, mail(mid="<f1@customer.test>", headers=[FORGED]))
    # Unauthenticated under "require": held, not opened on the forged "pass".
    assert result.outcome is Outcome.QUARANTINED
    entries = quarantine.list_entries(app.db)
    assert [(e["reason"], e["stage"]) for e in entries] == [("auth", "authenticate")]


def test_record_policy_changes_nothing(make_app: Any) -> None:
    app = trust_app(make_app)
    first = ingest(app, mail(mid="<r1@customer.test>", headers=[PASS]))
    ours = send(app, first.case_number or 0)
    forged = ingest(
        app, mail(mid="<r2@customer.test>", in_reply_to=ours["Message-ID"], headers=[FAIL])
    )
    assert (forged.outcome, forged.case_number) == (Outcome.APPENDED, first.case_number)
    assert auth_of(app, first.case_number, index=1)["dmarc"] == "fail"


def test_spoofed_reply_does_not_join_under_require_for_threading(make_app: Any) -> None:
    app = trust_app(make_app, "require_for_threading")
    first = ingest(app, mail(mid="<s1@customer.test>", headers=[PASS]))
    case = first.case_number
    assert first.outcome is Outcome.NEW_CASE and case is not None
    ours = send(app, case)
    forged = ingest(
        app,
        mail(
            mid="<s2@attacker.test>",
            in_reply_to=ours["Message-ID"],
            subject=ours["Subject"],
            body="Please change my bank details.",
            headers=[FAIL, FORGED],
        ),
    )
    assert forged.outcome is Outcome.NEW_CASE and forged.case_number != case
    spoof = case_row(app, forged.case_number)
    assert spoof.linked_case_id == case and "unauthenticated" in spoof.tags
    refused = [d for d in trace(app, forged.message_row_id) if d["decision"] == "refused"]
    assert refused and refused[0]["claimed_case"] == case
    assert "dmarc=fail" in refused[0]["reason"]
    genuine = ingest(
        app, mail(mid="<s3@customer.test>", in_reply_to=ours["Message-ID"], headers=[PASS])
    )
    assert (genuine.outcome, genuine.case_number) == (Outcome.APPENDED, case)
    # No results at all is not authenticated either: a token alone does not join.
    bare = ingest(app, mail(mid="<s4@customer.test>", subject=ours["Subject"]))
    assert bare.outcome is Outcome.NEW_CASE and bare.case_number != case


def test_require_holds_unauthenticated_and_release_lets_it_through(make_app: Any) -> None:
    app = trust_app(make_app, "require")
    good = ingest(app, mail(mid="<q1@customer.test>", headers=[PASS]))
    assert good.outcome is Outcome.NEW_CASE
    held = ingest(app, mail(mid="<q2@customer.test>", headers=[FAIL]))
    assert held.outcome is Outcome.QUARANTINED and held.quarantine_id is not None
    again = quarantine.retry(app.pipeline, held.quarantine_id)
    assert again.outcome is Outcome.QUARANTINED  # still unauthenticated
    released = quarantine.retry(app.pipeline, held.quarantine_id, release=True)
    assert released.outcome is Outcome.NEW_CASE
    decisions = [d["decision"] for d in stage_trace(app, released.message_row_id, "authenticate")]
    assert "released by operator" in decisions
    assert auth_of(app, released.case_number)["dmarc"] == "fail"


def test_cases_show_json_has_auth(make_app: Any, run_cli: Any, tmp_path: Path) -> None:
    app = trust_app(make_app)
    first = ingest(app, mail(mid="<j1@customer.test>", headers=[FORGED]))
    env = {"EMAILD_CONFIG": str(tmp_path / "emaild.toml")}
    proc = run_cli("cases", "show", str(first.case_number), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    messages = json.loads(proc.stdout)["messages"]
    inbound = [m for m in messages if m["direction"] == "in"]
    assert [m["auth"] for m in inbound] == [
        {"spf": "none", "dkim": "none", "dmarc": "none", "source": "none"}
    ]
    text = run_cli("cases", "show", str(first.case_number), env=env)
    assert "auth: spf=none dkim=none dmarc=none (none)" in text.stdout.decode()
    assert "ignored_authserv_ids=['attacker.test']" in text.stdout.decode()
