"""What an unauthenticated sender may do at a routing address (``auth_policy``).

- ``record``: nothing changes; the verdict is only recorded.
- ``require_for_threading``: the message may open a case but never joins an
  existing one (by headers, token, case number or Thread-Index): a forged
  ``From:`` with a stolen ``In-Reply-To`` would otherwise write into someone
  else's case. It opens a new case, flagged and linked to the claimed one.
- ``require``: the message is held in quarantine (stored, listed by
  ``emaild quarantine list``, released with ``emaild quarantine retry
  --release``), never bounced: bouncing would answer the forged sender.
"""

from __future__ import annotations

from emaild.trust.results import AuthVerdict

RECORD = "record"
REQUIRE_FOR_THREADING = "require_for_threading"
REQUIRE = "require"
# The tag on a case opened because its sender could not join the claimed one.
UNAUTHENTICATED_TAG = "unauthenticated"


def threading_refusal(policy: str, verdict: AuthVerdict | None) -> str:
    """Why this message may not join an existing case, or "" if it may."""
    if policy not in (REQUIRE_FOR_THREADING, REQUIRE) or verdict is None:
        return ""
    if verdict.authenticated:
        return ""
    return f"auth_policy = {policy} and the sender is not authenticated ({verdict.why})"


def hold_reason(policy: str, verdict: AuthVerdict) -> str:
    """Why this message is held, or "" if it may go on."""
    if policy != REQUIRE or verdict.authenticated:
        return ""
    return f"auth_policy = require and the sender is not authenticated ({verdict.why})"


def cap_followers(
    copied: list[str], cap: int, already: dict[str, str]
) -> tuple[list[str], list[str]]:
    """``(kept, left_out)``: the first ``cap`` new addresses of To/Cc, in order.

    A message Cc'd to hundreds of addresses must not give all of them a way
    onto the case; the ones left out are recorded, not silently dropped.
    """
    fresh = [a for a in dict.fromkeys(copied) if a and a not in already]
    return fresh[:cap], fresh[cap:]
