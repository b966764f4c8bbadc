"""The one message builder and row counter the tests share."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from emaild.app import App


def build_mail(
    *,
    sender: str = "Alice <alice@customer.test>",
    to: str = "support@example.com",
    subject: str = "Hello",
    message_id: str = "<hello@customer.test>",
    date: str = "",
    headers: str = "",
    body: str = "Hello.",
) -> bytes:
    """A small RFC 5322 message with CRLF line ends.

    Header order: From, To, Subject, Message-ID, Date (when given), then
    ``headers`` (more "Name: value\\r\\n" lines), a blank line and ``body``.
    """
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
    if date:
        head += f"Date: {date}\r\n"
    return f"{head}{headers}\r\n{body}\r\n".encode()


def build_multipart(
    *,
    sender: str,
    subject: str,
    message_id: str,
    attachments: dict[str, bytes],
    to: str = "support@example.com",
    headers: str = "",
    body: str = "See attached.",
) -> bytes:
    """A multipart/mixed message: a text part, then one base64 part per attachment."""
    import base64

    boundary = "=-=emaild-test-boundary=-="
    head = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
        f'{headers}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n'
    )
    parts = [f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"]
    for name, data in attachments.items():
        encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
        parts.append(
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f'Content-Disposition: attachment; filename="{name}"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}"
        )
    return f"{head}\r\n{''.join(parts)}--{boundary}--\r\n".encode()


def count(app: App, model: Any, *where: Any) -> int:
    """Rows of ``model`` (matching ``where``) in the app's database."""
    with app.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)
