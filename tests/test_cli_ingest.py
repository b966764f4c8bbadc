"""The pipe channel and the case views, through the real ``emaild`` command."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

MESSAGE = (
    b"From: =?utf-8?q?J=C3=B6rg_Kunde?= <joerg@customer.test>\r\n"
    b"To: Support <support@example.com>\r\n"
    b"Subject: =?utf-8?b?RHJ1Y2tlciBkZWZla3Q=?=\r\n"
    b"Message-ID: <cli-1@customer.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="xx"\r\n'
    b"\r\n"
    b"--xx\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Der Drucker ist kaputt. Gr=C3=BC=C3=9Fe\r\n"
    b"--xx\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Der Drucker ist kaputt.</p>\r\n"
    b"--xx\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''Fehlerbericht%20%C3%A4.txt\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"aGVsbG8gd29ybGQK\r\n"
    b"--xx--\r\n"
)


def test_ingest_creates_database_and_prints_case_number(
    run_cli: Any, state_dir: Path, database_url: str
) -> None:
    proc = run_cli("ingest", input=MESSAGE)
    assert proc.returncode == 0, proc.stderr
    number = int(proc.stdout.decode().strip())
    if database_url.startswith("sqlite"):
        assert (state_dir / "emaild.db").is_file()

    shown = run_cli("cases", "show", str(number), "--json")
    assert shown.returncode == 0, shown.stderr
    case = json.loads(shown.stdout)
    assert case["number"] == number
    assert case["subject"] == "Drucker defekt"
    assert case["customer"] == "joerg@customer.test"
    assert case["routing_address"] == "support@example.com"
    assert case["subject_token"]
    (message,) = case["messages"]
    assert message["message_id"] == "<cli-1@customer.test>"
    assert message["direction"] == "in"
    assert message["from"] == "joerg@customer.test"
    assert "Grüße" in message["text"]
    assert "<p>Der Drucker ist kaputt.</p>" in message["html"]
    assert message["attachments"] == [
        {
            "id": 1,  # GET /api/v1/attachments/{id}
            "filename": "Fehlerbericht ä.txt",
            "content_type": "application/octet-stream",
            "content_id": "",
            "disposition": "attachment",
            "size": 12,
            "sha256": "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447",
        }
    ]
    stages = [d["stage"] for d in message["decision_trace"]]
    assert stages[0] == "parse" and "persist" in stages

    listed = json.loads(run_cli("cases", "list", "--json").stdout)
    assert len(listed) == 1
    row = listed[0]
    for key in (
        "number",
        "subject",
        "status",
        "priority",
        "origin",
        "routing_address",
        "customer",
        "message_count",
    ):
        assert key in row
    assert row["message_count"] == 1

    human = run_cli("cases", "show", str(number))
    assert human.returncode == 0
    assert "Drucker defekt" in human.stdout.decode()


def test_same_file_twice_is_one_case(run_cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(MESSAGE)
    first = run_cli("ingest", str(path))
    second = run_cli("ingest", str(path))
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert b"duplicate" in second.stderr
    assert len(json.loads(run_cli("cases", "list", "--json").stdout)) == 1


def test_to_option_picks_routing_address(run_cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        "[[address]]\naddress = 'support@example.com'\n"
        "[[address]]\naddress = 'billing@example.com'\npriority = 'High'\n"
    )
    proc = run_cli("--config", str(config), "ingest", "--to", "billing@example.com", input=MESSAGE)
    assert proc.returncode == 0, proc.stderr
    case = json.loads(run_cli("--config", str(config), "cases", "list", "--json").stdout)[0]
    assert case["routing_address"] == "billing@example.com"
    assert case["priority"] == "High"


@pytest.mark.parametrize("raw", [b"", b"   \r\n\r\n"])
def test_unusable_input_exits_65(run_cli: Any, raw: bytes) -> None:
    proc = run_cli("ingest", input=raw)
    assert proc.returncode == 65
    assert proc.stderr.decode().strip().startswith("emaild: unusable input")
    assert json.loads(run_cli("cases", "list", "--json").stdout) == []


def test_oversize_input_exits_65(run_cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[limits]\nmax_message_bytes = 1000\n")
    proc = run_cli("--config", str(config), "ingest", input=MESSAGE + b"x" * 1000)
    assert proc.returncode == 65
    assert b"over the 1000 byte limit" in proc.stderr


def test_unreadable_file_exits_66(run_cli: Any, tmp_path: Path) -> None:
    proc = run_cli("ingest", str(tmp_path / "missing.eml"))
    assert proc.returncode == 66


def test_storage_unavailable_exits_75_and_writes_nothing(
    run_cli: Any, tmp_path: Path, database_url: str
) -> None:
    """Unreachable PostgreSQL, or a SQLite database locked by another writer: 75."""
    env: dict[str, str] = {}
    holder = None
    if database_url.startswith("sqlite"):
        assert run_cli("check").returncode == 0
        assert run_cli("cases", "list").returncode == 0  # creates the schema
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        config = tmp_path / "c.toml"
        config.write_text("[storage]\nbusy_timeout_seconds = 0.5\n")
        args: tuple[str, ...] = ("--config", str(config))
    else:
        env["EMAILD_DATABASE_URL"] = "postgresql+psycopg://postgres@127.0.0.1:1/none"
        args = ()
    try:
        proc = run_cli(*args, "ingest", input=MESSAGE, env=env)
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
    assert proc.returncode == 75, proc.stderr
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emaild: temporary failure"), lines
    # Nothing was half-written: no case, and the retry stores it exactly once.
    assert json.loads(run_cli(*args, "cases", "list", "--json").stdout) == []
    retry = run_cli(*args, "ingest", input=MESSAGE)
    assert retry.returncode == 0, retry.stderr
    assert len(json.loads(run_cli(*args, "cases", "list", "--json").stdout)) == 1


def test_quarantine_cli_list_show_retry(run_cli: Any, corpus: Path) -> None:
    # A real fragment with no parsable header block: it must be kept raw, not lost.
    broken = (corpus / "mikel-mail/rfc2822/example13.eml").read_bytes()
    # Not a message at all: exit 65 so the MTA tells the sender (issue 18 §5),
    # and still kept.
    proc = run_cli("ingest", input=broken)
    assert proc.returncode == 65, proc.stderr
    assert b"kept as quarantine entry 1" in proc.stderr
    (entry,) = json.loads(run_cli("quarantine", "list", "--json").stdout)
    assert entry["stage"] == "parse" and entry["status"] == "held"
    assert entry["raw_size"] == len(broken)
    assert run_cli("quarantine", "show", "1", "--raw").stdout == broken
    assert b"error:" in run_cli("quarantine", "show", "1").stdout
    # Retrying without a fix fails again: still one held entry, two attempts, exit 65.
    retry = run_cli("quarantine", "retry", "1")
    assert retry.returncode == 65
    (entry,) = json.loads(run_cli("quarantine", "list", "--json").stdout)
    assert entry["attempts"] == 2


def test_policy_quarantine_is_released_by_an_operator(run_cli: Any) -> None:
    spam = MESSAGE.replace(b"MIME-Version: 1.0\r\n", b"MIME-Version: 1.0\r\nX-Spam-Flag: YES\r\n")
    assert run_cli("ingest", input=spam).returncode == 0
    (entry,) = json.loads(run_cli("quarantine", "list", "--json").stdout)
    assert entry["reason"] == "rule"
    # Retrying applies the same rule again: still held.
    assert run_cli("quarantine", "retry", str(entry["id"])).returncode == 65
    assert json.loads(run_cli("cases", "list", "--json").stdout) == []
    # Releasing overrides the rule, once, and says so in the trace.
    released = run_cli("quarantine", "retry", "--release", str(entry["id"]))
    assert released.returncode == 0, released.stderr
    (case,) = json.loads(run_cli("cases", "list", "--json").stdout)
    shown = json.loads(run_cli("cases", "show", str(case["number"]), "--json").stdout)
    decisions = [d["decision"] for d in shown["messages"][0]["decision_trace"]]
    assert "released by operator" in decisions
    assert json.loads(run_cli("quarantine", "list", "--json").stdout) == []


def _blocked(tmp_path: Path) -> Path:
    """A path nobody can create a directory at, even root: its parent is a file."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    return blocker / "state"


@pytest.mark.parametrize("trouble", ["state_dir", "blob_dir", "config", "unknown_to"])
def test_local_trouble_defers_with_75_never_a_bounce(
    run_cli: Any, tmp_path: Path, trouble: str
) -> None:
    """pipe(8) bounces on 78 ("5.3.5 local configuration error"): local, fixable
    trouble must exit 75 so the MTA keeps the mail; fixed, the same mail is stored."""
    config = tmp_path / "c.toml"
    config.write_text("")
    env: dict[str, str] = {}
    args = ["--config", str(config), "ingest"]
    if trouble == "state_dir":
        env["EMAILD_STATE_DIR"] = str(_blocked(tmp_path))
    elif trouble == "blob_dir":
        config.write_text(f"[storage]\nblob_dir = '{_blocked(tmp_path)}'\n")
    elif trouble == "config":
        config.write_text("[storage]\nno_such_key = 1\n")
    else:
        args += ["--to", "sales@example.com"]
    deferred = run_cli(*args, input=MESSAGE, env=env)
    assert deferred.returncode == 75, deferred.stderr
    assert deferred.stderr.startswith(b"emaild: temporary failure, try again: ")
    assert deferred.stderr.count(b"\n") == 1  # one line for the MTA's log, no traceback
    # The fix: a clean config (and, for the unknown address, the address configured).
    config.write_text(
        "[[address]]\naddress = 'sales@example.com'\n" if trouble == "unknown_to" else ""
    )
    stored = run_cli(*args, input=MESSAGE)
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.strip() == b"1"
