"""Routing-address verification, the hold/release policy and the forwarding test.

- ``tokens``: signed, single-use, expiring tokens stored as hashes.
- ``screen``: the pipeline's ``verify`` stage: mail carrying one of our tokens
  (through any channel) is recorded and never becomes a case; mail for an
  unverified address is held; a held message is released when it runs again
  after its address was verified.
- ``release``: runs held messages through the pipeline again, oldest first.
- ``outgoing``: the verification and forwarding-test messages, queued in the outbox.
- ``admin``: what ``emaild address verify|confirm|release`` do.
- ``forwarding``: ``emaild address test-forwarding``.

Submodules are imported where used: the pipeline imports ``screen`` while it
is itself being imported, so this package must not import the pipeline.
"""
