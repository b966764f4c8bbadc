"""``emaild check``: validate configuration, rules and templates without starting."""

from __future__ import annotations

from collections.abc import Callable

from emaild.config import Config
from emaild.store.database import make_engine

# Each check raises ConfigError for the first problem; it returns a one-line summary.
Check = Callable[[Config], str]


def check_storage(config: Config) -> str:
    make_engine(config.database_url).dispose()
    return f"storage: {config.database_url.split('@')[-1]}"


def check_addresses(config: Config) -> str:
    return "routing addresses: " + ", ".join(r.address for r in config.address)


def check_services(config: Config) -> str:
    from emaild.services import Loaded

    Loaded.load(config)
    return "services: rules, signer, templates"


def check_rules(config: Config) -> str:
    from emaild.rules import load_rules

    rules = load_rules(config.rules_path)
    where = config.rules_dir or "no rules directory"
    return f"rules: {len(rules)} rules from {len(rules.files)} files in {where}"


def check_webforms(config: Config) -> str:
    if not config.webform:
        return "web forms: none"
    names = ", ".join(f"/web-to-case/{f.name} -> {f.address}" for f in config.webform)
    served = "" if config.http.listen else " (not served: http.listen is empty)"
    return f"web forms: {names}{served}"


def check_webhooks(config: Config) -> str:
    from emaild.webhooks.subscriptions import read_secret

    for i, hook in enumerate(config.webhook):
        read_secret(hook.secret_file, f"webhook.{i}.secret_file")
    return f"webhooks: {len(config.webhook)} in the config file, secrets readable"


CHECKS: tuple[Check, ...] = (
    check_storage,
    check_addresses,
    check_rules,
    check_services,
    check_webforms,
    check_webhooks,
)


def run_checks(config: Config) -> list[str]:
    return [check(config) for check in CHECKS]
