"""The SMTP/LMTP channel: aiosmtpd listeners in front of ``Pipeline.ingest``.

Protocol handling stays on the event loop; the synchronous pipeline runs in a
bounded thread pool. Nothing is answered ``250`` before ``ingest`` returned a
stored outcome (contract 1). Storage trouble or a timeout answers ``451 4.3.0``
so the sender retries; the pipeline's deduplication makes the retry land once
(contract 2). Only routing addresses are accepted at ``RCPT`` (never an open
relay). LMTP answers one status per accepted recipient (RFC 2033) for the one
stored message.

Back-pressure instead of unbounded queues: at most ``smtp.max_connections``
sessions (more get ``421``), at most ``smtp.max_pending`` messages waiting for
or inside the pipeline (more get ``451 4.3.2``, checked at ``RCPT`` so the body
is not even sent, and again after ``DATA``).

No ``Received:`` header is added: the stored raw bytes must be exactly what the
sender sent, or a retried message without a Message-ID would no longer be
recognised as the same bytes. The envelope is stored beside the message.

One module per responsibility:

- ``replies``: every reply line, with its enhanced status code.
- ``auth``: STARTTLS, the credentials file and AUTH PLAIN/LOGIN.
- ``server``: sessions, the aiosmtpd hooks and one ``Listener``.
- ``channel``: ``SmtpChannel``, owning the listeners, limits and drain.
"""

from emaild.channels.smtp.auth import security_settings
from emaild.channels.smtp.channel import SmtpChannel, parse_listen

__all__ = ["SmtpChannel", "parse_listen", "security_settings"]
