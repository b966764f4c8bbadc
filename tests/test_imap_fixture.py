"""The throwaway Dovecot itself: users are isolated, TLS and XOAUTH2 work, wrong secrets fail."""

from __future__ import annotations

import imaplib

import pytest
from dovecot import Dovecot
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

pytestmark = pytest.mark.dovecot

MSG = (
    b"From: a@example.org\r\nTo: support@example.com\r\nSubject: hi\r\n"
    b"Message-ID: <fx@example.org>\r\n\r\nbody\r\n"
)


def test_fresh_users_are_isolated(dovecot: Dovecot) -> None:
    first, second = dovecot.new_user(), dovecot.new_user()
    dovecot.append(first, [MSG, MSG])
    with dovecot.client(first) as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 2
    with dovecot.client(second) as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0


def test_wrong_password_is_refused(dovecot: Dovecot) -> None:
    user = dovecot.new_user()
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
    with pytest.raises(LoginError):
        client.login(user.name, user.password + "x")
    client.shutdown()


def test_implicit_tls_and_xoauth2(dovecot: Dovecot) -> None:
    if not dovecot.ca_file:
        pytest.fail("openssl is needed to give the test Dovecot a certificate")
    user = dovecot.new_user()
    with IMAPClient(
        dovecot.host, port=dovecot.tls_port, ssl=True, ssl_context=dovecot.ssl_context()
    ) as client:
        client.oauth2_login(user.name, user.password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
    client.starttls(dovecot.ssl_context())
    with pytest.raises((LoginError, imaplib.IMAP4.error)):
        client.oauth2_login(user.name, "not-the-token")
    client.shutdown()
