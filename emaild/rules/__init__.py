"""The rules engine: ``rules/*.toml`` set case fields and decide what becomes of mail.

``load_rules`` reads and checks a rules directory into a ``RuleSet``;
``RuleSet.evaluate`` runs it on a message's ``MessageFacts``. The pipeline's
``rules`` stage (``emaild.pipeline.stages.rules``) applies it to each message.
"""

from emaild.rules.engine import RuleSet, RulesOutcome
from emaild.rules.facts import MessageFacts
from emaild.rules.fields import CaseFields
from emaild.rules.loader import load_rules, parse_rules

__all__ = ["CaseFields", "MessageFacts", "RuleSet", "RulesOutcome", "load_rules", "parse_rules"]
