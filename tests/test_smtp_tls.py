"""STARTTLS and AUTH on the SMTP listener (submission-style use), on real sockets."""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from smtp_helpers import smtp_listener
from sqlalchemy import select

from emaild.app import App
from emaild.channels.smtp.auth import hash_password, load_credentials, verify_password
from emaild.errors import ConfigError
from emaild.store.models import Message

RAW = (
    b"From: agent@example.com\r\nTo: support@example.com\r\nSubject: submitted\r\n"
    b"Message-ID: <tls-1@example.com>\r\n\r\nhello\r\n"
)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    require(shutil.which("openssl") is not None, "openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
    )
    return cert, key


def client_context(cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    return context


def test_starttls_and_auth_required(
    make_config: Any, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    users = tmp_path / "users"
    # Few iterations keep the test fast; the default is 600,000.
    users.write_text(f"# agents\nagent:{hash_password('s3cret', iterations=1000)}\n")
    app = App.open(
        make_config(
            f'[smtp]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
            f'auth_file = "{users}"\nauth_required = true\n'
        )
    )
    try:
        with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            assert not client.has_extn("auth")  # never offered in clear text
            assert client.mail("agent@example.com")[0] == 530
            client.starttls(context=client_context(cert))
            client.ehlo()
            assert client.has_extn("auth")
            with pytest.raises(smtplib.SMTPAuthenticationError) as denied:
                client.login("agent", "wrong")
            assert denied.value.smtp_code == 535
            client.login("agent", "s3cret")
            assert client.sendmail("agent@example.com", ["support@example.com"], RAW) == {}
        with app.db.session() as s:
            assert s.scalars(select(Message.message_id)).all() == ["<tls-1@example.com>"]
    finally:
        app.close()


def test_require_tls_refuses_mail_before_starttls(
    make_config: Any, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    app = App.open(
        make_config(f'[smtp]\ntls_cert = "{cert}"\ntls_key = "{key}"\nrequire_tls = true\n')
    )
    try:
        with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
            client.ehlo()
            code, text = client.mail("a@customer.test")
            assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")
            client.starttls(context=client_context(cert))
            assert client.sendmail("a@customer.test", ["support@example.com"], RAW) == {}
    finally:
        app.close()


def test_credentials_file_errors_name_file_and_line(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("ok:" + hash_password("x", iterations=1000) + "\nbob:plaintext\n")
    with pytest.raises(ConfigError) as bad:
        load_credentials(users)
    assert bad.value.render().startswith(f"{users}:2: bob: expected a pbkdf2_sha256$")
    stored = hash_password("pw", iterations=1000)
    assert verify_password(stored, b"pw")
    assert not verify_password(stored, b"pW")


def test_auth_without_tls_is_a_config_error(make_config: Any, tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("agent:" + hash_password("x", iterations=1000) + "\n")
    app = App.open(make_config(f'[smtp]\nauth_file = "{users}"\n'))
    try:
        with pytest.raises(ConfigError, match="AUTH needs STARTTLS"), smtp_listener(app):
            pass
    finally:
        app.close()
