"""Collaborators built from the config (rule set, templates, signer, ...).

Each entry of ``SERVICE_LOADERS`` is ``(name, loader)``; a loader turns a
``Config`` into the object stages find in ``pipeline.services[name]``, and
raises ``ConfigError`` (``file:line: ...``) for bad input. ``emaild check``
builds them all; SIGHUP rebuilds them and swaps them in only if all succeed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emaild.config import Config

ServiceLoader = Callable[[Config], Any]


def _signer(config: Config) -> Any:
    from emaild.correlation.tokens import load_signer

    return load_signer(config)


def _templates(config: Config) -> Any:
    from emaild.autoresponse import load_templates

    return load_templates(config)


def _rules(config: Config) -> Any:
    from emaild.autoresponse import TemplateSet
    from emaild.rules import load_rules

    # Rules may only choose auto-response templates that exist.
    templates = TemplateSet.load(config.templates_path).names()
    return load_rules(config.rules_path, templates=templates)


SERVICE_LOADERS: tuple[tuple[str, ServiceLoader], ...] = (
    ("rules", _rules),
    ("signer", _signer),
    ("templates", _templates),
)


def build_services(config: Config) -> dict[str, Any]:
    """Build every service for ``config``; the first bad one raises ``ConfigError``."""
    return {name: loader(config) for name, loader in SERVICE_LOADERS}
