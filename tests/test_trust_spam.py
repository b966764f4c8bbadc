"""The rspamd scan against a real rspamd (Debian's package) started by the tests on loopback.

GTUBE gets flagged (and held by the shipped spam rule); clean mail is scanned
and passes; rspamd down or silent: the message is stored, flagged
"unscanned", never lost.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from rspamd_server import free_port, rspamd
from threading_mail import SUPPORT, case_row, mail

from emaild import quarantine
from emaild.app import App
from emaild.cases import case_detail, load_case
from emaild.intake import Envelope
from emaild.pipeline import Outcome

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SMTP = Envelope(
    channel="smtp",
    mail_from="alice@customer.test",
    rcpt_to=(SUPPORT,),
    peer="127.0.0.1:40000",
    helo="client.test",
)


@pytest.fixture(scope="module")
def rspamd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require(shutil.which("rspamd") is not None, "rspamd is not installed (.ci/run installs it)")
    with rspamd(tmp_path_factory.mktemp("rspamd")) as url:
        yield url


def spam_app(make_app: Any, url: str, timeout: float = 5.0) -> App:
    app: App = make_app(f'[spam]\nrspamd_url = "{url}"\ntimeout_seconds = {timeout}\n')
    return app


def spam_entry(trace: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return next(d for d in trace if d["stage"] == "authenticate" and d["decision"] == "spam")


def test_gtube_is_flagged_and_held_by_the_spam_rule(make_app: Any, rspamd_url: str) -> None:
    app = spam_app(make_app, rspamd_url)
    result = app.pipeline.ingest(mail(mid="<gtube@x.test>", body=GTUBE), SMTP)
    entry = spam_entry(result.trace)
    assert (entry["flag"], entry["action"], entry["scanner"]) == ("yes", "reject", "rspamd")
    # The shipped rules/30-spam.toml holds spam in quarantine: stored, not lost.
    assert result.outcome is Outcome.QUARANTINED
    assert [e["reason"] for e in quarantine.list_entries(app.db)] == ["rule"]


def test_clean_mail_is_scanned_and_opens_a_case(make_app: Any, rspamd_url: str) -> None:
    app = spam_app(make_app, rspamd_url)
    result = app.pipeline.ingest(mail(mid="<ham@x.test>"), SMTP)
    assert result.outcome is Outcome.NEW_CASE
    entry = spam_entry(result.trace)
    assert entry["flag"] == "no" and isinstance(entry["score"], float)
    with app.db.session() as s:
        case = load_case(s, result.case_number or 0)
        assert case is not None
        spam = case_detail(case, app.config)["messages"][0]["spam"]
    assert spam == {"flag": "no", "score": entry["score"]}


def test_rspamd_down_stores_the_message_flagged_unscanned(make_app: Any) -> None:
    app = spam_app(make_app, f"http://127.0.0.1:{free_port()}")
    result = app.pipeline.ingest(mail(mid="<down@x.test>"), SMTP)
    assert result.outcome is Outcome.NEW_CASE
    entry = spam_entry(result.trace)
    assert entry["flag"] == "unscanned" and "Connection" in entry["error"]
    assert "unscanned" in case_row(app, result.case_number).tags


def test_silent_rspamd_times_out_and_the_message_goes_on(make_app: Any, tmp_path: Path) -> None:
    # A listener that never answers: the scan must give up after its timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        app = spam_app(make_app, f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        result = app.pipeline.ingest(mail(mid="<slow@x.test>"), SMTP)
    assert result.outcome is Outcome.NEW_CASE
    entry = spam_entry(result.trace)
    assert entry["flag"] == "unscanned" and "timed out" in entry["error"]


def test_rules_see_the_scan(make_app: Any, rspamd_url: str, tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "10.toml").write_text(
        '[[rule]]\nname = "unscanned"\ndescription = "not scanned: look closer"\n'
        'all = [{ field = "spam.flag", equals = "unscanned" }]\n'
        'actions = { priority = "High" }\n'
        '[[rule]]\nname = "scored"\ndescription = "scanned with a score"\n'
        'all = [{ field = "spam.score", less_than = 14 }, { field = "spam.flag", equals = "no" }]\n'
        'actions = { category = "scanned" }\n',
        encoding="utf-8",
    )
    app = make_app(f'rules_dir = "{rules_dir}"\n[spam]\nrspamd_url = "{rspamd_url}"\n')
    ok = app.pipeline.ingest(mail(mid="<r1@x.test>"), SMTP)
    case = case_row(app, ok.case_number)
    assert (case.category, case.priority) == ("scanned", "Medium")
    down = make_app(
        f'rules_dir = "{rules_dir}"\n[spam]\nrspamd_url = "http://127.0.0.1:{free_port()}"\n'
    )
    late = down.pipeline.ingest(mail(mid="<r2@x.test>"), SMTP)
    assert case_row(down, late.case_number).priority == "High"
