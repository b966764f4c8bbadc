"""Auto-responses: templates, loop protection, composition and queueing.

``load_templates(config)`` is the "templates" service; ``autorespond(ctx)`` is
what ``AutoRespondStage`` calls; ``detect_loop(ctx)`` is the loop detector
stage's work.
"""

from __future__ import annotations

from pathlib import Path

from emaild.autoresponse.templates import Rendered, TemplateSet
from emaild.config import Config
from emaild.errors import ConfigError
from emaild.tomlsource import TomlSource

__all__ = ["Rendered", "TemplateSet", "load_templates"]


def load_templates(config: Config) -> TemplateSet:
    """The "templates" service: every template loaded and checked, and every
    routing address's ``auto_response`` naming one that exists."""
    templates = TemplateSet.load(config.templates_path)
    for index, routing in enumerate(config.address):
        name = routing.auto_response
        if name and name not in templates:
            problem = (
                f"no template {name!r} in {config.templates_dir or '(no templates_dir)'}"
                f" (have: {', '.join(templates.names()) or 'none'})"
            )
            if config.source and Path(config.source).is_file():
                raise TomlSource.load(config.source).error(
                    ("address", index, "auto_response"), problem
                )
            raise ConfigError(problem, key=f"address[{index}].auto_response")
    return templates
