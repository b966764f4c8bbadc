"""Web-to-Case test helpers: a form's config, and solving its challenge as a client would."""

from __future__ import annotations

from typing import Any

import altcha
import httpx

# Cheap challenges and no fill-time wait: the tests of those defences set their own.
FORM_TOML = """
[[webform]]
name = "contact"
address = "support@example.com"
challenge_max_number = 2000
min_fill_seconds = 0
{extra}
"""
JSON = {"Accept": "application/json"}


def form_toml(extra: str = "") -> str:
    return FORM_TOML.format(extra=extra)


def solve(challenge: dict[str, Any]) -> str:
    """The ``altcha`` field for ``challenge``: solved with the library, base64 JSON."""
    parsed = altcha.Challenge.from_dict(challenge)
    solution = altcha.solve_challenge(parsed, timeout=30)
    assert solution is not None
    return altcha.Payload(parsed, solution).to_base64()


def solved(client: httpx.Client, form: str = "contact") -> str:
    response = client.get(f"/web-to-case/{form}/challenge")
    assert response.status_code == 200, response.text
    return solve(response.json())


def fields(**overrides: str) -> dict[str, str]:
    data = {
        "name": "Ann Example",
        "email": "ann@customer.test",
        "subject": "Printer on fire",
        "description": "It started this morning.\nPlease help.",
    }
    data.update(overrides)
    return data
