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


def count(app: App, model: Any, *where: Any) -> int:
    """Rows of ``model`` (matching ``where``) in the app's database."""
    with app.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)
