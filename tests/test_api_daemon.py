"""``emaild run`` serves the API: on http.listen (EMAILD_HTTP_LISTEN) or on systemd's
``http`` socket; SIGHUP reaches it, SIGTERM drains it; ``emaild token`` and the
``emaild cases`` actions work on the same cases and write the same events."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from mailbuilder import build_mail
from smtp_helpers import daemon_process, free_port

ACTIVATE = 'exec 3<&0 0</dev/null; export LISTEN_PID=$$; exec "$@"'


def add_token(run_cli: Any, name: str, scope: str) -> str:
    done = run_cli("token", "add", name, "--scope", scope)
    assert done.returncode == 0, done.stderr
    token: str = done.stdout.decode().splitlines()[-1]
    assert token.startswith("emaild_") and " " not in token
    return token


def test_run_serves_the_api_reloads_and_drains(
    cli_env: dict[str, str], run_cli: Any, tmp_path: Path
) -> None:
    token = add_token(run_cli, "agent", "write")
    assert run_cli("ingest", "--to", "support@example.com", input=build_mail()).returncode == 0
    port = free_port()
    config = tmp_path / "emaild.toml"
    config.write_text("[http]\nmax_body_bytes = 100000\n")
    env = {**cli_env, "EMAILD_CONFIG": str(config), "EMAILD_HTTP_LISTEN": f"127.0.0.1:{port}"}
    auth = {"Authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{port}/api/v1"
    with daemon_process(env, tmp_path) as daemon:
        assert "http" in daemon.notifications[-1]["STATUS"]
        r = httpx.get(f"{base}/cases", headers=auth, timeout=10)
        assert r.status_code == 200 and [i["number"] for i in r.json()["items"]] == [1]
        note = {"text": "x" * 5000}
        assert httpx.post(f"{base}/cases/1/notes", json=note, headers=auth).status_code == 201
        config.write_text("[http]\nmax_body_bytes = 1000\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("READY")
        assert httpx.post(f"{base}/cases/1/notes", json=note, headers=auth).status_code == 413
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_socket_activation_serves_the_api_on_the_http_socket(
    cli_env: dict[str, str], run_cli: Any, tmp_path: Path
) -> None:
    token = add_token(run_cli, "reader", "read")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        env = {**cli_env, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
        with daemon_process(
            env, tmp_path, stdin=listening.fileno(), wrapper=["/bin/sh", "-c", ACTIVATE, "sh"]
        ) as daemon:
            r = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/cases",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            # SMTP still binds its configured address: only the API came from systemd.
            socket.create_connection(("127.0.0.1", daemon.smtp_port), timeout=5).close()
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0


def test_cli_tokens_and_case_actions(run_cli: Any) -> None:
    assert run_cli("ingest", "--to", "support@example.com", input=build_mail()).returncode == 0
    add_token(run_cli, "bot", "admin")
    assert run_cli("token", "add", "bot").returncode != 0  # the name is taken
    assert run_cli("token", "add", "cli").returncode != 0  # reserved for the CLI actor
    listed = json.loads(run_cli("token", "list", "--json").stdout)
    assert [(t["name"], t["scope"]) for t in listed] == [("bot", "admin")]
    assert "emaild_" not in run_cli("token", "list").stdout.decode()

    def ok(*args: str, **kwargs: Any) -> str:
        done = run_cli(*args, **kwargs)
        assert done.returncode == 0, done.stderr.decode()
        return str(done.stdout.decode())

    ok("cases", "assign", "1", "ann")
    ok("cases", "note", "1", "called back")
    ok("cases", "reply", "1", "--text", "-", input=b"Here is the fix.\n")
    ok("cases", "close", "1")
    assert json.loads(ok("cases", "list", "--status", "closed", "--owner", "ann", "--json"))
    assert json.loads(ok("cases", "list", "--status", "open", "--json")) == []
    ok("cases", "reopen", "1")
    events = json.loads(ok("cases", "events", "1", "--json"))
    # message.sent (the outbox's relay took the auto-response) lands whenever the
    # delivery does: not part of this sequence.
    events = [e for e in events if e["kind"] != "message.sent"]
    assert [(e["kind"], e["actor"]) for e in events] == [
        ("case.created", "mail"),
        ("message.received", "mail"),
        ("case.assigned", "cli"),
        ("note.added", "cli"),
        ("reply.queued", "cli"),
        ("case.status", "cli"),
        ("case.status", "cli"),
    ]
    shown = json.loads(ok("cases", "show", "1", "--json"))
    assert [m["direction"] for m in shown["messages"]] == ["in", "out"]
    assert run_cli("cases", "close", "99").returncode == 65
    ok("token", "revoke", "bot")
    assert json.loads(ok("token", "list", "--json")) == []
