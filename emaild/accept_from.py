"""A routing address's "accept email from" list: the accept stage and SMTP listener use it."""

from __future__ import annotations

from emaild.config import RoutingAddress


def sender_allowed(routing: RoutingAddress, sender: str) -> bool:
    """ "Accept email from": empty list = anyone; else an address or domain match."""
    if not routing.accept_from:
        return True
    sender = sender.strip().lower()
    domain = sender.rpartition("@")[2]
    for allowed in routing.accept_from:
        if "@" in allowed and not allowed.startswith("@"):
            if sender == allowed:
                return True
        elif domain == allowed.lstrip("@") or domain.endswith("." + allowed.lstrip("@")):
            return True
    return False


def sender_refusal(routing: RoutingAddress, sender: str) -> str | None:
    """Why ``sender`` may not write to ``routing`` ("accept email from"), or None."""
    if sender_allowed(routing, sender):
        return None
    who = sender or "an empty sender"
    return f"{who} is not in accept_from of {routing.address}"
