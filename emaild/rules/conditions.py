"""Conditions and operators: a TOML condition table compiled into a fast test.

A condition names what it looks at (``field``, ``header`` or ``is``) and one
operator; ``not = true`` negates it and ``case_sensitive = true`` turns off the
default case-insensitive comparison. ``{ all = [...] }`` and ``{ any = [...] }``
nest. Everything is checked and compiled here, at load: a bad regex, an unknown
field or two operators in one condition never reach a message.

A field with several values (recipients, attachments, a repeated header)
matches when any of its values does; ``not`` negates that, so "not contains"
means none of them does, and a missing header never equals anything.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import regex

from emaild.rules.facts import FLAGS, NUMBER_FIELDS, TEXT_FIELDS, MessageFacts
from emaild.rules.model import Condition
from emaild.rules.problem import RuleProblem

TEXT_OPERATORS = ("equals", "in", "contains", "starts_with", "ends_with", "regex")
NUMBER_OPERATORS = ("equals", "greater_than", "less_than")
OPERATORS = tuple(dict.fromkeys(TEXT_OPERATORS + NUMBER_OPERATORS))
MODIFIERS = ("not", "case_sensitive")
SELECTORS = ("field", "header", "is", "all", "any")
# Fields looked up by value (hash index) when a rule requires them to be equal.
INDEXABLE = frozenset(
    {"from", "from_domain", "sender", "to", "cc", "recipients", "addressed_to", "routing_address"}
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MAXREPEAT_SMALL = 100  # a repeat bounded by this cannot explode on bounded input


Test = Callable[[MessageFacts], bool]


def compile_condition(spec: Any) -> Condition:
    """Compile one condition table (``RuleProblem`` with a location on a mistake)."""
    if not isinstance(spec, dict):
        raise RuleProblem(f"a condition must be a table, got {_kind(spec)}")
    selectors = [k for k in SELECTORS if k in spec]
    unknown = [k for k in spec if k not in SELECTORS + OPERATORS + MODIFIERS]
    if unknown:
        raise RuleProblem(
            f"unknown key {unknown[0]!r} in condition "
            f"(selectors: {', '.join(SELECTORS)}; operators: {', '.join(OPERATORS)}; "
            f"modifiers: {', '.join(MODIFIERS)})",
            (unknown[0],),
        )
    if len(selectors) != 1:
        raise RuleProblem(
            "a condition needs exactly one of field, header, is, all, any"
            + (f" (got {', '.join(selectors)})" if selectors else "")
        )
    negate = _bool(spec, "not")
    selector = selectors[0]
    if selector in ("all", "any"):
        for key in spec:
            if key not in (selector, "not"):
                raise RuleProblem(f"{key!r} does not apply to an {selector} group", (key,))
        cond = compile_group(selector, spec[selector], loc=(selector,))
    elif selector == "is":
        cond = _flag(spec)
    else:
        cond = _compare(spec, selector)
    return _negated(cond) if negate else cond


def compile_group(kind: str, items: Any, *, loc: tuple[str | int, ...] = ()) -> Condition:
    """``all``/``any`` over a list of condition tables."""
    if not isinstance(items, list) or not items:
        raise RuleProblem(f"{kind} must be a non-empty list of conditions", loc)
    children = []
    for i, item in enumerate(items):
        try:
            children.append(compile_condition(item))
        except RuleProblem as problem:
            raise problem.within(*loc, i) from None
    return combine(kind, children)


def combine(kind: str, children: Sequence[Condition]) -> Condition:
    """One condition that holds when all (or any) of ``children`` hold."""
    if len(children) == 1:
        return children[0]
    tests = tuple(c.test for c in children)
    joiner = " and " if kind == "all" else " or "
    text = "(" + joiner.join(c.text for c in children) + ")"
    if kind == "all":

        def test_all(facts: MessageFacts) -> bool:
            return all(t(facts) for t in tests)

        def explain_all(facts: MessageFacts) -> list[str]:
            return [line for c in children for line in c.explain(facts)]

        # Any required equality inside an "all" keeps the whole group indexable.
        index = next((c.index for c in children if c.index is not None), None)
        return Condition(text, test_all, explain_all, index)

    def test_any(facts: MessageFacts) -> bool:
        return any(t(facts) for t in tests)

    def explain_any(facts: MessageFacts) -> list[str]:
        return [line for c in children if c.test(facts) for line in c.explain(facts)]

    return Condition(text, test_any, explain_any, None)


def _negated(cond: Condition) -> Condition:
    inner = cond.test
    text = f"not {cond.text}"

    def test(facts: MessageFacts) -> bool:
        return not inner(facts)

    return Condition(text, test, lambda facts: [text], None)


def _flag(spec: dict[str, Any]) -> Condition:
    name = spec["is"]
    extra = [k for k in spec if k not in ("is", "not")]
    if extra:
        raise RuleProblem(f"{extra[0]!r} does not apply to an 'is' condition", (extra[0],))
    if not isinstance(name, str) or name not in FLAGS:
        raise RuleProblem(
            f"unknown flag {name!r} for 'is' (known: {', '.join(FLAGS)})",
            ("is",),
        )
    text = f"is {name}"

    def test(facts: MessageFacts) -> bool:
        return facts.flag(name)

    return Condition(text, test, lambda facts: [text], None)


def _compare(spec: dict[str, Any], selector: str) -> Condition:
    raw_name = spec[selector]
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise RuleProblem(f"{selector} must be a non-empty string", (selector,))
    if selector == "header":
        if not re.fullmatch(r"[\x21-\x39\x3b-\x7e]+", raw_name):
            raise RuleProblem(f"not a header name: {raw_name!r}", (selector,))
        key, label, numeric = "header:" + raw_name.lower(), raw_name, False
    elif raw_name in TEXT_FIELDS:
        key, label, numeric = raw_name, raw_name, False
    elif raw_name in NUMBER_FIELDS:
        key, label, numeric = raw_name, raw_name, True
    else:
        raise RuleProblem(
            f"unknown field {raw_name!r} (known: {', '.join([*TEXT_FIELDS, *NUMBER_FIELDS])};"
            " use header = NAME for any header, is = FLAG for flags)",
            (selector,),
        )
    ops = [k for k in OPERATORS if k in spec]
    if len(ops) != 1:
        allowed = NUMBER_OPERATORS if numeric else TEXT_OPERATORS
        raise RuleProblem(
            f"a condition on {label} needs exactly one operator of {', '.join(allowed)}"
            + (f" (got {', '.join(ops)})" if ops else ""),
            (selector,),
        )
    op = ops[0]
    if numeric:
        if op not in NUMBER_OPERATORS:
            raise RuleProblem(
                f"{op} does not apply to the number {label} (use {', '.join(NUMBER_OPERATORS)})",
                (op,),
            )
        if "case_sensitive" in spec:
            raise RuleProblem("case_sensitive does not apply to a number", ("case_sensitive",))
        return _number(key, label, op, spec[op], size=key == "size")
    return _text(key, label, op, spec[op], case_sensitive=_bool(spec, "case_sensitive"))


def _text(key: str, label: str, op: str, value: Any, *, case_sensitive: bool) -> Condition:
    values = _strings(value, op, require_list=op == "in")
    if not case_sensitive and op != "regex":
        values = tuple(v.lower() for v in values)
    get = MessageFacts.values if case_sensitive else MessageFacts.lowered
    shown = values[0] if len(values) == 1 else list(values)
    text = f"{label} {op} {shown!r}"
    test: Test
    index = None
    if op in ("equals", "in"):
        wanted = frozenset(values)

        def test(facts: MessageFacts) -> bool:
            return not wanted.isdisjoint(get(facts, key))

        if key in INDEXABLE and not case_sensitive:
            index = (key, wanted)
    elif op == "contains":

        def test(facts: MessageFacts) -> bool:
            for v in get(facts, key):
                for needle in values:
                    if needle in v:
                        return True
            return False

    elif op == "starts_with":

        def test(facts: MessageFacts) -> bool:
            return any(v.startswith(values) for v in get(facts, key))

    elif op == "ends_with":

        def test(facts: MessageFacts) -> bool:
            return any(v.endswith(values) for v in get(facts, key))

    else:
        patterns = tuple((_regex(v, case_sensitive), untimed_length(v)) for v in values)
        get = MessageFacts.values  # the pattern carries IGNORECASE itself

        def test(facts: MessageFacts) -> bool:
            return any(
                facts.search(p, v, label) if len(v) > short else p.search(v) is not None
                for v in get(facts, key)
                for p, short in patterns
            )

    def explain(facts: MessageFacts) -> list[str]:
        seen = MessageFacts.values(facts, key)
        return [f"{text}: {label} is {_preview(seen)}"]

    return Condition(text, test, explain, index)


def _number(key: str, label: str, op: str, value: Any, *, size: bool) -> Condition:
    limit = _size(value, op) if size else _numeric(value, op)
    text = f"{label} {op} {value!r}"
    compare: Callable[[float, float], bool]
    if op == "equals":
        compare = float.__eq__
    elif op == "greater_than":
        compare = float.__gt__
    else:
        compare = float.__lt__

    def test(facts: MessageFacts) -> bool:
        found = facts.number(key)
        return found is not None and compare(found, limit)

    def explain(facts: MessageFacts) -> list[str]:
        return [f"{text}: {label} is {facts.number(key)}"]

    return Condition(text, test, explain, None)


# --- values -------------------------------------------------------------------
def _strings(value: Any, op: str, *, require_list: bool) -> tuple[str, ...]:
    if isinstance(value, str) and not require_list:
        items: Sequence[Any] = [value]
    elif isinstance(value, list):
        items = value
    else:
        wanted = "a list of strings" if require_list else "a string or a list of strings"
        raise RuleProblem(f"{op} needs {wanted}, got {_kind(value)}", (op,))
    if not items:
        raise RuleProblem(f"{op} needs at least one value", (op,))
    for item in items:
        if not isinstance(item, str):
            raise RuleProblem(f"{op} values must be strings, got {_kind(item)}", (op,))
        if op != "in" and op != "equals" and item == "":
            raise RuleProblem(f"{op} with an empty string matches everything", (op,))
    return tuple(items)


def _numeric(value: Any, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleProblem(f"{op} needs a number, got {_kind(value)}", (op,))
    return float(value)


def _size(value: Any, op: str) -> float:
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise RuleProblem(f'{op}: not a size: {value!r} (e.g. 500000, "512 KB", "10MB")', (op,))
        unit = (match.group(2) or "").lower()[:1]
        return float(match.group(1)) * _UNITS[unit]
    return _numeric(value, op)


def _bool(spec: dict[str, Any], key: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise RuleProblem(f"{key} must be true or false, got {_kind(value)}", (key,))
    return value


def _kind(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _preview(values: tuple[str, ...]) -> str:
    if not values:
        return "absent"
    shown = [v if len(v) <= 80 else v[:77] + "..." for v in values[:3]]
    more = f" (+{len(values) - 3} more)" if len(values) > 3 else ""
    return ", ".join(repr(v) for v in shown) + more


# --- regular expressions --------------------------------------------------------
def _regex(pattern: str, case_sensitive: bool) -> Any:
    """Check ``pattern`` with Python's ``re`` syntax; run it with ``regex`` (time limit)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise RuleProblem(f"bad regex {pattern!r}: {exc}", ("regex",)) from None
    danger = catastrophic(pattern)
    if danger:
        raise RuleProblem(f"regex {pattern!r} is refused: {danger}", ("regex",))
    try:
        return regex.compile(pattern, regex.V0 | (0 if case_sensitive else regex.IGNORECASE))
    except regex.error as exc:  # accepted by re, refused by regex: rare, but say so
        raise RuleProblem(f"bad regex {pattern!r}: {exc}", ("regex",)) from None


def untimed_length(pattern: str) -> int:
    """Text up to this length is searched without a time limit (it costs ~2 us a call).

    A pattern that passed ``catastrophic`` with k unbounded repeats backtracks
    at worst ~n**(k+1) steps on n characters; below 10**6 steps the search is
    a few milliseconds at worst, so no limit is needed: subjects and header
    values take the fast path, long bodies the timed one.
    """
    parser: Any = importlib.import_module("re._parser")
    constants: Any = importlib.import_module("re._constants")
    repeats = {constants.MAX_REPEAT, constants.MIN_REPEAT}
    possessive = getattr(constants, "POSSESSIVE_REPEAT", None)

    def count(items: Any) -> int:
        total = 0
        for op, av in items:
            if op in repeats or op == possessive:
                high = av[1]
                total += int(high == constants.MAXREPEAT or high > _MAXREPEAT_SMALL)
                total += count(av[2])
            elif op == constants.SUBPATTERN:
                total += count(av[-1])
            elif op == constants.BRANCH:
                total += max(count(b) for b in av[1])
            elif op in (constants.ASSERT, constants.ASSERT_NOT):
                total += count(av[1])
        return total

    return int((10**6) ** (1 / (count(parser.parse(pattern)) + 1)))


def catastrophic(pattern: str) -> str:
    """Why ``pattern`` risks catastrophic backtracking, or "" if it looks safe.

    Every search runs under a time limit anyway (``MessageFacts.search``), but
    the shapes known to blow up are refused at load with a clear reason: an
    unbounded repeat inside another repeat (``(a+)+``), alternatives that can
    match the same text inside a repeat (``(a|ab)*``), back-references.
    """
    parser: Any = importlib.import_module("re._parser")
    constants: Any = importlib.import_module("re._constants")
    try:
        tree = parser.parse(pattern)
    except re.error:
        return ""  # compile() already reported it
    repeats = {constants.MAX_REPEAT, constants.MIN_REPEAT}
    possessive = getattr(constants, "POSSESSIVE_REPEAT", None)
    unbounded = constants.MAXREPEAT

    def walk(items: Any, inside_repeat: bool) -> str:
        for op, av in items:
            if op in repeats or op == possessive:
                _low, high, sub = av
                big = high == unbounded or high > _MAXREPEAT_SMALL
                if big and inside_repeat:
                    return "an unbounded repetition inside a repetition (like (a+)+ or (.*a){9})"
                if big and _ambiguous_branch(sub, constants):
                    return "overlapping alternatives inside a repetition (like (a|ab)*)"
                found = walk(sub, inside_repeat or high > 1)
                if found:
                    return found
            elif op == constants.SUBPATTERN:
                found = walk(av[-1], inside_repeat)
                if found:
                    return found
            elif op == constants.BRANCH:
                for branch in av[1]:
                    found = walk(branch, inside_repeat)
                    if found:
                        return found
            elif op in (constants.ASSERT, constants.ASSERT_NOT):
                found = walk(av[1], inside_repeat)
                if found:
                    return found
            elif op in (constants.GROUPREF, constants.GROUPREF_EXISTS):
                return "back-references are not allowed"
        return ""

    return walk(tree, False)


def _ambiguous_branch(items: Any, constants: Any) -> bool:
    """An alternation whose branches can start with the same literal (or be empty)."""
    for op, av in items:
        if op == constants.SUBPATTERN:
            return _ambiguous_branch(av[-1], constants)
        if op != constants.BRANCH:
            continue
        firsts: set[Any] = set()
        for branch in av[1]:
            if len(branch) == 0:
                return True
            head_op, head_av = branch[0]
            head = (head_op, head_av) if head_op == constants.LITERAL else None
            if head is None:
                continue  # classes and nested groups: not analysed
            if head in firsts:
                return True
            firsts.add(head)
    return False
