"""Threading: which case an inbound message belongs to, and the tokens that tell.

- ``tokens``: ``CaseSigner`` (``pipeline.services.signer``): signed
  Message-IDs, subject and body tokens for outgoing mail, and reading them back.
- ``match``: the matching order and the closed-case policy (``correlate``,
  called by ``CorrelateStage``).
- ``bounce``: the original message's Message-ID inside a bounce or report.
- ``newtext``: a reply without quoted history and signature, for display.
- ``subject``: subjects without Re:/Fwd:/[External] prefixes, for display.
"""
