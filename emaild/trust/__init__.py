"""Whether the sender is who the message says: authentication results and their policy.

A domain package: it knows parsed messages and the configuration, never the
pipeline. ``results`` reads trusted ``Authentication-Results`` headers into an
``AuthVerdict``; ``policy`` says what an unauthenticated sender may do at a
routing address.
"""

from emaild.trust.results import RESULTS, AuthVerdict, verdict_from_headers

__all__ = ["RESULTS", "AuthVerdict", "verdict_from_headers"]
