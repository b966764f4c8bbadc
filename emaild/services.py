"""``Services``: the collaborators stages use, built once from the config.

A ``Services`` is frozen and swapped whole: SIGHUP builds a new one from the
new config (every part checked first, ``ConfigError`` with ``file:line`` for
the first bad one) and replaces the old in one assignment, so a message never
sees half of an old configuration and half of a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from emaild.addresses import AddressBook
from emaild.autoresponse import TemplateSet, load_templates
from emaild.clock import utcnow
from emaild.config import Config
from emaild.correlation.tokens import CaseSigner, load_signer
from emaild.errors import ConfigError
from emaild.rules import RuleSet, load_rules
from emaild.store.blobs import BlobStore
from emaild.store.database import Database
from emaild.verification.tokens import TokenSigner

if TYPE_CHECKING:
    from emaild.trust.checks import Checker
    from emaild.trust.rspamd import Rspamd


@dataclass(frozen=True)
class Loaded:
    """What the config files themselves define: rules, templates and the case signer."""

    rules: RuleSet
    templates: TemplateSet
    signer: CaseSigner

    @classmethod
    def load(cls, config: Config) -> Loaded:
        """Load and check every part; the first bad one raises ``ConfigError``."""
        templates = load_templates(config)
        # Rules may only choose auto-response templates that exist.
        rules = load_rules(config.rules_path, templates=templates.names())
        for index, form in enumerate(config.webform):  # so may web forms
            if form.template and form.template not in templates.names():
                raise ConfigError(
                    f"no auto-response template named {form.template!r}",
                    file=config.source or None,
                    key=f"webform.{index}.template",
                )
        return cls(rules=rules, templates=templates, signer=load_signer(config))


@dataclass(frozen=True)
class Services:
    """Everything a stage may use besides the message and its session."""

    config: Config
    rules: RuleSet
    templates: TemplateSet
    signer: CaseSigner  # case tokens, signed Message-IDs
    tokens: TokenSigner  # verification and forwarding-test tokens
    addresses: AddressBook
    blobs: BlobStore
    clock: Callable[[], datetime] = utcnow
    # emaild's own SPF/DKIM/DMARC checks ([trust] own_checks), with their DNS cache.
    checker: Checker | None = None
    # The rspamd scan ([spam] rspamd_url).
    scanner: Rspamd | None = None

    @classmethod
    def build(
        cls,
        config: Config,
        db: Database,
        blobs: BlobStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        loaded: Loaded | None = None,
    ) -> Services:
        """Services for ``config`` (``loaded`` when the files were loaded already)."""
        parts = loaded or Loaded.load(config)
        return cls(
            config=config,
            rules=parts.rules,
            templates=parts.templates,
            signer=parts.signer,
            tokens=TokenSigner(parts.signer.secret),
            addresses=AddressBook(config, db),
            blobs=blobs,
            clock=clock,
            checker=_checker(config),
            scanner=_scanner(config),
        )


def _checker(config: Config) -> Checker | None:
    if not config.trust.own_checks:
        return None
    # dkimpy, pyspf and dnspython cost ~0.1 s to import: only when the checks are on.
    from emaild.trust.checks import build_checker

    return build_checker(config)


def _scanner(config: Config) -> Rspamd | None:
    if not config.spam.rspamd_url:
        return None
    from emaild.trust.rspamd import Rspamd

    return Rspamd(config.spam.rspamd_url, timeout=config.spam.timeout_seconds)
