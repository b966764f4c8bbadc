"""Rule evaluation cost per message with 10 and with 1,000 rules.

Usage: .venv/bin/python bench/bench_rules.py [--corpus DIR] [--seconds S]

Messages are the shared corpus (../shared/corpus, real and varied: bounces,
MIME edge cases, long bodies), parsed and classified once up front. Each
timed evaluation builds fresh ``MessageFacts`` (so lower-casing and header
maps are paid every time, as in the pipeline) and runs ``RuleSet.evaluate``.

The rule sets are the shipped defaults (rules/*.toml) plus generated rules in
a mix a large deployment plausibly has: customer-domain routing
(``from_domain in [...]``), subject and body keywords, header equality,
subject regexes, attachment names, and routing-address + subject pairs. The
target is 1,000 rules at most 1 ms per message. Also printed: the 1,000-rule
set with the equality index turned off, to show what the index buys.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emaild.classify import classify  # noqa: E402
from emaild.config import RoutingAddress  # noqa: E402
from emaild.mime.parse import ParsedMessage, parse_message  # noqa: E402
from emaild.pipeline.context import CaseFields  # noqa: E402
from emaild.rules import MessageFacts, RuleSet, load_rules, parse_rules  # noqa: E402


def generated_rules(count: int, seed: int = 5) -> str:
    """``count`` rules as TOML text, in a deterministic realistic mix."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        kind = rnd.choices(
            ["domain", "subject", "header", "body", "regex", "attachment", "pair"],
            weights=[40, 20, 10, 10, 10, 5, 5],
        )[0]
        if kind == "domain":
            cond = f'all = [{{ field = "from_domain", in = ["cust{i}.example", "cust{i}.test"] }}]'
            act = f'actions = {{ owner = "queue-{i % 37}" }}'
        elif kind == "subject":
            cond = f'any = [{{ field = "subject", contains = ["widget{i}", "gadget {i}"] }}]'
            act = f'actions = {{ add_tags = ["product-{i}"] }}'
        elif kind == "header":
            cond = f'all = [{{ header = "X-Customer-Id", equals = "C{i:05d}" }}]'
            act = f'actions = {{ category = "account-{i}" }}'
        elif kind == "body":
            cond = f'all = [{{ field = "body", contains = "serial number sn-{i:06d}" }}]'
            act = 'actions = { priority = "High" }'
        elif kind == "regex":
            cond = f"all = [{{ field = \"subject\", regex = '\\\\border\\\\s{{0,3}}#?{i}\\\\b' }}]"
            act = 'actions = { origin = "Web" }'
        elif kind == "attachment":
            cond = f'all = [{{ field = "attachment_name", ends_with = ".case{i}" }}]'
            act = 'actions = { add_tags = ["attached"] }'
        else:
            cond = (
                f'all = [{{ field = "routing_address", equals = "sales{i}@example.com" }},'
                f' {{ field = "subject", starts_with = "quote" }}]'
            )
            act = 'actions = { owner = "sales" }'
        out.append(
            f'[[rule]]\nname = "gen-{i}"\ndescription = "generated {kind} rule"\n{cond}\n{act}\n'
        )
    return "\n".join(out)


def rule_set(generated: int, *, index: bool = True) -> RuleSet:
    shipped = load_rules(ROOT / "emaild" / "defaults" / "rules").rules
    extra = tuple(parse_rules(generated_rules(generated), "generated.toml")) if generated else ()
    return RuleSet(shipped + extra, index=index)


def corpus_messages(corpus: Path) -> list[tuple[ParsedMessage, object]]:
    out = []
    for path in sorted(corpus.rglob("*")):
        if not path.is_file() or path.suffix in (".md", ".json") or path.name == "SHA256SUMS":
            continue
        try:
            parsed = parse_message(path.read_bytes(), spool_threshold=256 * 1024)
        except Exception:  # the corpus has a non-message or two: not what we time
            continue
        out.append((parsed, classify(parsed, None)))
    return out


def synthetic_messages(count: int, rules: int, seed: int = 7) -> list[tuple[ParsedMessage, object]]:
    """Messages that hit generated rules, so matching and explaining are timed too."""
    rnd = random.Random(seed)
    out = []
    for n in range(count):
        i, j, k = (rnd.randrange(rules) for _ in range(3))
        body = f"Hello, the unit with serial number SN-{j:06d} stopped working.\r\n" * 20
        raw = (
            f"From: Customer {n} <user{n}@cust{i}.example>\r\n"
            f"To: support@example.com\r\n"
            f"Subject: widget{j} broken, order #{k}\r\n"
            f"X-Customer-Id: C{k:05d}\r\n"
            f"Message-ID: <synthetic-{n}@cust{i}.example>\r\n\r\n{body}"
        ).encode()
        parsed = parse_message(raw, spool_threshold=256 * 1024)
        out.append((parsed, classify(parsed, None)))
    return out


def per_message_us(rules: RuleSet, messages: list, seconds: float) -> tuple[float, int]:
    routing = RoutingAddress(address="support@example.com")
    defaults = CaseFields()
    passes = 0
    total = 0.0
    matched = 0
    while total < seconds or passes < 2:
        start = time.perf_counter()
        for parsed, cls in messages:
            facts = MessageFacts(parsed, cls, routing, channel="smtp")
            matched += len(rules.evaluate(facts, defaults).matches)
        total += time.perf_counter() - start
        passes += 1
    return total / (passes * len(messages)) * 1e6, matched // passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per rule set")
    args = parser.parse_args()
    messages = corpus_messages(args.corpus)
    print(f"messages: {len(messages)} from {args.corpus}, plus 100 synthetic ones that hit rules")
    messages += synthetic_messages(100, 1000)
    shipped = len(load_rules(ROOT / "emaild" / "defaults" / "rules"))
    results = {}
    for label, generated, index in (
        ("10 rules", 10 - shipped, True),
        ("1,000 rules", 1000 - shipped, True),
        ("1,000 rules, no index", 1000 - shipped, False),
    ):
        rules = rule_set(generated, index=index)
        us, matched = per_message_us(rules, messages, args.seconds)
        results[label] = us
        print(
            f"{label:>22}: {len(rules):5d} rules  {us:8.1f} us/message  "
            f"({matched} rule hits per pass over the corpus)"
        )
    ratio = results["1,000 rules"] / results["10 rules"]
    target = "met" if results["1,000 rules"] <= 1000 else "MISSED"
    print(f"1,000 rules cost {ratio:.1f}x 10 rules; target <= 1000 us/message: {target}")


if __name__ == "__main__":
    main()
