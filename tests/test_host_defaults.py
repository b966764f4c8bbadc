"""Defaults on a real host: a private state directory, an honest systemd socket."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from mailbuilder import build_mail

ROOT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_directory_and_everything_in_it_is_private_under_umask_022(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    state = tmp_path / "fresh" / "state"
    env = {k: v for k, v in cli_env.items() if k != "EMAILD_DATABASE_URL"}
    env["EMAILD_STATE_DIR"] = str(state)
    raw = build_mail(
        message_id="<private@customer.test>",
        headers="Content-Type: multipart/mixed; boundary=b\r\n",
        body="--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
        "Content-Type: application/octet-stream\r\nContent-Disposition: attachment;"
        " filename=a.bin\r\n\r\nAAAA\r\n--b--",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; os.umask(0o022); "
            "from emaild.cli import main; sys.argv = ['emaild', 'ingest']; main()",
        ],
        input=raw,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert mode(state) == 0o700
    files = [p for p in state.rglob("*") if p.is_file()]
    dirs = [p for p in state.rglob("*") if p.is_dir()]
    assert {p.name for p in files} >= {"emaild.db"}
    assert any(p.parent.name != "blobs" and "blobs" in p.parts for p in files)
    assert {str(p.relative_to(state)): oct(mode(p)) for p in files if mode(p) & 0o077} == {}
    assert {str(p.relative_to(state)): oct(mode(p)) for p in dirs if mode(p) & 0o077} == {}


def test_systemd_socket_defaults_to_the_lmtp_port_on_loopback() -> None:
    """README: Postfix keeps port 25; the socket must not take it on every address."""
    socket_unit = (ROOT / "systemd" / "emaild.socket").read_text()
    listens = [
        line.split("=", 1)[1].strip()
        for line in socket_unit.splitlines()
        if line.startswith("ListenStream=")
    ]
    assert listens == ["127.0.0.1:2526"]
    assert "FileDescriptorName=lmtp" in socket_unit
    for unit in ("emaild.service", "emaild.socket"):
        text = (ROOT / "systemd" / unit).read_text()
        docs = [line for line in text.splitlines() if line.startswith("Documentation=")]
        assert docs and all("man:emaild(1)" in line for line in docs), unit
    assert "StateDirectoryMode=0700" in (ROOT / "systemd" / "emaild.service").read_text()


def test_man_page_is_generated_from_the_cli_and_current() -> None:
    """docs/emaild.1 is `python -m emaild.cli.manpage`'s output: regenerate it when
    the CLI changes. man(1) renders it without a warning."""
    import shutil

    from emaild.cli.manpage import render

    page = render()
    assert (ROOT / "docs" / "emaild.1").read_text() == page, (
        "docs/emaild.1 is stale: python -m emaild.cli.manpage > docs/emaild.1"
    )
    for needed in ("emaild ingest", "emaild status", "\\-\\-log\\-level", "EXIT STATUS"):
        assert needed in page
    man = shutil.which("man")
    if man is not None:  # the roff itself: no "warning:" from groff
        shown = subprocess.run(
            [man, "--warnings", "-l", str(ROOT / "docs" / "emaild.1")],
            capture_output=True,
            text=True,
            env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert "warning" not in shown.stderr, shown.stderr
