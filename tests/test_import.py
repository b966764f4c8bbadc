"""``emaild import``: mbox, Maildir and folders of .eml files, with a JSON summary."""

from __future__ import annotations

import json
import mailbox
import shutil
from pathlib import Path
from typing import Any


def plain(n: int) -> bytes:
    return (
        f"From: user{n}@customer.test\r\nTo: support@example.com\r\nSubject: question {n}\r\n"
        f"Message-ID: <imp-{n}@customer.test>\r\n\r\nbody {n}\r\n"
    ).encode()


def test_import_folder_of_eml_files(run_cli: Any, corpus: Path) -> None:
    proc = run_cli("import", str(corpus / "mikel-mail" / "rfc2822"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    for key in ("cases", "appended", "duplicates", "quarantined", "failed"):
        assert key in summary
    total = sum(
        summary[k]
        for k in ("cases", "appended", "duplicates", "quarantined", "held", "dropped", "failed")
    )
    assert total == 14
    # example13 is a fragment without a header block: kept in quarantine, not lost.
    assert summary["failed"] == 0
    assert summary["quarantined"] == 1
    cases = json.loads(run_cli("cases", "list", "--json", "--limit", "100").stdout)
    assert len(cases) == summary["cases"]

    again = json.loads(run_cli("import", str(corpus / "mikel-mail" / "rfc2822"), "--json").stdout)
    assert again["cases"] == 0
    assert again["duplicates"] == summary["cases"] + summary["appended"] + summary["duplicates"]


def test_import_mbox(run_cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "support.mbox"
    box = mailbox.mbox(path)
    for n in range(5):
        box.add(plain(n))
    box.add(plain(0))  # the same message again
    box.flush()
    box.close()
    summary = json.loads(run_cli("import", str(path), "--json").stdout)
    assert summary["cases"] == 5
    assert summary["duplicates"] == 1


def test_import_maildir(run_cli: Any, tmp_path: Path, corpus: Path) -> None:
    path = tmp_path / "Maildir"
    box = mailbox.Maildir(path, create=True)
    for n in range(3):
        box.add(plain(n))
    box.close()
    broken = corpus / "mikel-mail/rfc2822/example13.eml"
    shutil.copy(broken, path / "new" / "1.broken")
    summary = json.loads(run_cli("import", str(path), "--json").stdout)
    assert summary["cases"] == 3
    assert summary["quarantined"] == 1


def test_import_human_summary(run_cli: Any, tmp_path: Path) -> None:
    folder = tmp_path / "eml"
    folder.mkdir()
    for n in range(2):
        (folder / f"{n}.eml").write_bytes(plain(n))
    proc = run_cli("import", str(folder))
    assert proc.returncode == 0
    assert proc.stdout.decode().startswith("2 new cases, 0 appended, 0 duplicates")
