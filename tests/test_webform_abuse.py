"""Web-to-Case abuse over plain HTTP: each gets a clear answer; nothing lost or doubled.

A real daemon on loopback, a real ``httpx`` client; the daily-cap test runs on
SQLite and PostgreSQL (the count is a row both lock), the rest on SQLite.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select, update
from webform_helpers import JSON, fields, form_toml, solved

from emaild.store.models import Case, QuarantineEntry, WebformDay
from emaild.webform import cap

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _client(server: Any, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=server.base, timeout=30, **kwargs)


def _cases(server: Any) -> int:
    with server.app.db.session() as session:
        return len(session.scalars(select(Case)).all())


@SQLITE
def test_replay_honeypot_too_fast_and_origin(make_api: Any) -> None:
    server = make_api(
        form_toml('allowed_origins = ["https://www.shop.test"]')
        + '[[webform]]\nname = "slow"\naddress = "support@example.com"\n'
        "challenge_max_number = 100\nmin_fill_seconds = 30\nrequire_origin = true\n"
        '[[webform]]\nname = "astray"\naddress = "nobody@example.com"\n'
        "challenge_max_number = 100\nmin_fill_seconds = 0\n"
    )
    with _client(server) as client:
        embedded = client.get(
            "/web-to-case/contact/challenge", headers={"Origin": "https://www.shop.test"}
        )
        stranger = client.get(
            "/web-to-case/contact/challenge", headers={"Origin": "https://x.test"}
        )
        assert embedded.headers["access-control-allow-origin"] == "https://www.shop.test"
        assert "access-control-allow-origin" not in stranger.headers
        payload = solved(client)
        first = client.post(
            "/web-to-case/contact",
            data={**fields(), "altcha": payload},
            headers={**JSON, "Origin": "https://www.shop.test"},
        )
        assert first.status_code == 201, first.text
        # The same solved challenge for another submission.
        replay = client.post(
            "/web-to-case/contact",
            data={**fields(subject="another"), "altcha": payload},
            headers=JSON,
        )
        honeypot = client.post(
            "/web-to-case/contact",
            data={**fields(), "website": "http://spam.test", "altcha": solved(client)},
            headers=JSON,
        )
        wrong_origin = client.post(
            "/web-to-case/contact",
            data={**fields(), "altcha": solved(client)},
            headers={**JSON, "Origin": "https://evil.test"},
        )
        wrong_referer = client.post(
            "/web-to-case/contact",
            data={**fields(), "altcha": solved(client)},
            headers={**JSON, "Referer": "https://evil.test/page"},
        )
        own_page = client.post(
            "/web-to-case/contact",
            data={**fields(), "altcha": solved(client)},
            headers={**JSON, "Origin": server.base},
        )
        too_fast = client.post(
            "/web-to-case/slow",
            data={**fields(), "altcha": solved(client, "slow")},
            headers={**JSON, "Origin": server.base},
        )
        no_origin = client.post(
            "/web-to-case/slow", data={**fields(), "altcha": solved(client, "slow")}, headers=JSON
        )
        astray = client.post(
            "/web-to-case/astray",
            data={**fields(), "altcha": solved(client, "astray")},
            headers=JSON,
        )
        other_form = client.post(
            "/web-to-case/contact",
            data={**fields(), "altcha": solved(client, "slow")},
            headers=JSON,
        )
    assert replay.status_code == 409 and "sent already" in replay.json()["detail"]
    assert honeypot.status_code == 400 and "must stay empty" in honeypot.json()["detail"]
    assert wrong_origin.status_code == 403 and "evil.test" in wrong_origin.json()["detail"]
    assert wrong_referer.status_code == 403
    # allowed_origins replaces the default: the daemon's own pages are not listed.
    assert own_page.status_code == 403
    assert too_fast.status_code == 400 and "too fast" in too_fast.json()["detail"]
    assert no_origin.status_code == 403 and "absent" in no_origin.json()["detail"]
    assert other_form.status_code == 400 and "another form" in other_form.json()["detail"]
    # A form whose address is no routing address: refused, never sent astray.
    assert astray.status_code == 503 and "not set up" in astray.json()["detail"]
    assert _cases(server) == 1


@SQLITE
def test_oversize_malformed_and_unsupported_bodies(make_api: Any) -> None:
    server = make_api(form_toml("max_attachment_bytes = 2000\nmax_attachments = 2"))
    with _client(server) as client:
        big = client.post(
            "/web-to-case/contact",
            data={**fields(), "altcha": solved(client)},
            files=[("attachment", ("big.bin", b"x" * 2001, "application/pdf"))],
            headers=JSON,
        )
        fits = client.post(
            "/web-to-case/contact",
            data={**fields(), "altcha": solved(client)},
            files=[("attachment", ("ok.bin", b"y" * 2000, "application/pdf"))],
            headers=JSON,
        )

        # Streamed without a length, far over the form's whole-body limit.
        def chunks() -> Any:
            yield b'--b\r\nContent-Disposition: form-data; name="attachment"; filename="a"\r\n\r\n'
            for _ in range(400):
                yield b"z" * 65536

        streamed = client.post(
            "/web-to-case/contact",
            content=chunks(),
            headers={**JSON, "Content-Type": "multipart/form-data; boundary=b"},
        )
        malformed = client.post(
            "/web-to-case/contact",
            content=b"--b\r\nno headers here",
            headers={**JSON, "Content-Type": "multipart/form-data; boundary=b"},
        )
        no_boundary = client.post(
            "/web-to-case/contact",
            content=b"x",
            headers={**JSON, "Content-Type": "multipart/form-data"},
        )
        bad_json = client.post(
            "/web-to-case/contact",
            content=b"{nope",
            headers={**JSON, "Content-Type": "application/json"},
        )
        text = client.post(
            "/web-to-case/contact", content=b"hello", headers={**JSON, "Content-Type": "text/plain"}
        )
        too_many = client.post(
            "/web-to-case/contact",
            data={**fields(), "altcha": solved(client)},
            files=[("attachment", (f"{i}.txt", b"a", "text/plain")) for i in range(3)],
            headers=JSON,
        )
    assert big.status_code == 413 and "2000" in big.json()["detail"]
    assert fits.status_code == 201, fits.text
    assert streamed.status_code == 413
    # A declared length over the limit is refused before any of the body is read.
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /web-to-case/contact HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000000\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
    assert malformed.status_code == 400 and "malformed" in malformed.json()["detail"]
    assert no_boundary.status_code == 400
    assert bad_json.status_code == 400
    assert text.status_code == 415
    assert too_many.status_code == 400 and "files" in too_many.json()["detail"].lower()
    assert _cases(server) == 1


# One client process: 5,000 POSTs over one keep-alive connection, pipelined in
# batches (a raw HTTP/1.1 client costs far less than the server it floods).
FLOOD = """
import json, socket, sys
host, port = sys.argv[1].removeprefix("http://").split(":")
body = sys.argv[2].encode()
request = (
    b"POST /web-to-case/contact HTTP/1.1\\r\\nHost: flood\\r\\nAccept: application/json\\r\\n"
    b"Content-Type: application/x-www-form-urlencoded\\r\\n"
    b"Content-Length: " + str(len(body)).encode() + b"\\r\\n\\r\\n" + body
)
counts = {}
with socket.create_connection((host, int(port)), timeout=30) as sock:
    pending = b""
    for _ in range(50):
        sock.sendall(request * 100)
        seen = 0
        while seen < 100:
            head, sep, rest = pending.partition(b"\\r\\n\\r\\n")
            if not sep:
                chunk = sock.recv(1 << 16)
                assert chunk, "connection closed"
                pending += chunk
                continue
            status = int(head.split(b" ", 2)[1])
            length = int(head.lower().split(b"content-length: ")[1].split(b"\\r\\n")[0])
            while len(rest) < length:
                rest += sock.recv(1 << 16)
            pending = rest[length:]
            counts[status] = counts.get(status, 0) + 1
            seen += 1
print(json.dumps(counts))
"""


@SQLITE
def test_ten_thousand_submissions_from_one_address_are_rate_limited(make_api: Any) -> None:
    server = make_api(form_toml("rate_burst = 5\nrate_per_minute = 0.01"))
    # The flood comes from two other processes (their own cores, not this GIL).
    started = time.monotonic()
    floods = [
        subprocess.Popen(
            [sys.executable, "-c", FLOOD, server.base, urlencode(fields())],
            stdout=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    statuses: dict[int, int] = {}
    for flood in floods:
        out, _ = flood.communicate(timeout=120)
        assert flood.returncode == 0
        for code, count in json.loads(out).items():
            statuses[int(code)] = statuses.get(int(code), 0) + count
    with _client(server) as client:
        retry_after = client.post("/web-to-case/contact", data=fields(), headers=JSON)
        # New challenges have a bucket of their own, three times as large.
        challenges = [client.get("/web-to-case/contact/challenge").status_code for _ in range(16)]
    assert challenges == [200] * 15 + [429]
    took = time.monotonic() - started
    # Five get through to the next defence (no challenge: 400); the rest are refused.
    assert statuses == {400: 5, 429: 9995}, statuses
    assert int(retry_after.headers["retry-after"]) > 60
    # Another client address is not held back by the first one's limit.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with _client(server, transport=transport) as other:
        answer = other.post(
            "/web-to-case/contact", data={**fields(), "altcha": solved(other)}, headers=JSON
        )
    assert answer.status_code == 201, answer.text
    assert _cases(server) == 1
    print(f"10,000 submissions in {took:.1f} s")


def test_over_the_daily_cap_held_then_released(make_api: Any, run_cli: Any) -> None:
    server = make_api(form_toml("daily_cap = 1"))
    with _client(server) as client:
        answers = [
            client.post(
                "/web-to-case/contact",
                data={**fields(subject=f"request {i}"), "altcha": solved(client)},
                headers=JSON,
            )
            for i in range(3)
        ]
        page = client.post(
            "/web-to-case/contact",
            data={**fields(subject="from a browser"), "altcha": solved(client)},
        )
    assert [a.status_code for a in answers] == [201, 202, 202]
    assert answers[1].json() == {"status": "received", "held": True}
    assert page.status_code == 303 and page.headers["location"].endswith("/thanks")
    app = server.app
    held = cap.held_entries(app.db)
    assert [h["form"] for h in held] == ["contact"] * 3 and _cases(server) == 1
    listed = run_cli("web", "held", "--json")
    assert listed.returncode == 0 and listed.stdout.count(b'"daily_cap"') == 3
    # The same day nothing is released; the next day the cap's room is.
    job = cap.release_job(app)  # what `emaild run` schedules every 5 minutes
    assert job is not None
    assert job.fn() == []
    yesterday = app.pipeline.clock() - timedelta(days=1)

    def a_day_passes(session: Any) -> None:
        session.execute(update(QuarantineEntry).values(created_at=yesterday))
        session.execute(update(WebformDay).values(day=cap.day_of(yesterday)))

    app.db.run(a_day_passes)
    released = job.fn()
    assert isinstance(released, list)
    assert len(released) == 1 and released[0].result.case_number is not None
    assert len(cap.held_entries(app.db)) == 2 and _cases(server) == 2
    # An admin releases the rest now, whatever the cap.
    done = run_cli("web", "release", "--all")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(b"new_case") == 2
    assert cap.held_entries(app.db) == [] and _cases(server) == 4
    with app.db.session() as session:
        subjects = sorted(c.subject for c in session.scalars(select(Case)))
        origins = {c.origin for c in session.scalars(select(Case))}
    assert subjects == sorted(["from a browser", "request 0", "request 1", "request 2"])
    assert origins == {"Web"}


@SQLITE
def test_a_message_over_the_limit_is_refused_before_it_is_held(make_api: Any) -> None:
    # Base64 makes the message about 1.37x the upload: over max_message_bytes here,
    # though the upload is within the form's limits. Held, it could never be released.
    server = make_api(
        form_toml("daily_cap = 0\nmax_attachment_bytes = 1500000")
        + "[limits]\nmax_message_bytes = 2000000\n"
    )
    with _client(server) as client:
        big = client.post(
            "/web-to-case/contact",
            data={**fields(), "altcha": solved(client)},
            files=[("attachment", ("big.bin", b"z" * 1_490_000, "application/pdf"))],
            headers=JSON,
        )
        assert big.status_code == 413, big.text
        assert "over the 2000000 limit" in big.json()["detail"]
        nested = client.post(
            "/web-to-case/contact",
            content=b"[" * 50_000,
            headers={**JSON, "Content-Type": "application/json"},
        )
        assert nested.status_code == 400, nested.text
        deep = base64.b64encode(b"[" * 3000).decode()
        refused = client.post(
            "/web-to-case/contact", data={**fields(), "altcha": deep}, headers=JSON
        )
        assert refused.status_code == 400, refused.text
    with server.app.db.session() as session:
        assert session.scalars(select(QuarantineEntry)).first() is None
        assert sum(d.admitted for d in session.scalars(select(WebformDay))) == 0
    assert _cases(server) == 0
