"""Mutated real mail for the fuzz test and ``bench/fuzz_mime.py`` (issue 18).

``mutations(corpus, count, seed)`` yields ``(label, raw)``: corpus messages
damaged the ways hostile or broken senders damage mail. The same seed gives
the same messages.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

Mutation = Callable[[random.Random, bytes], bytes]
_MESSAGE_ID = re.compile(rb"^message-id:", re.I | re.M)


def _flip_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 40)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _truncate(rng: random.Random, raw: bytes) -> bytes:
    return raw[: rng.randint(1, max(1, len(raw) - 1))]


def _nul_and_controls(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 20)):
        data.insert(rng.randrange(len(data) + 1), rng.choice(b"\x00\x01\x0b\x0c\x1b\x7f"))
    return bytes(data)


def _duplicate_headers(rng: random.Random, raw: bytes) -> bytes:
    head, sep, body = (
        raw.partition(b"\n\n") if b"\r\n\r\n" not in raw else raw.partition(b"\r\n\r\n")
    )
    lines = head.splitlines(keepends=True)
    if not lines:
        return raw
    extra = [rng.choice(lines) for _ in range(rng.randint(1, 30))]
    return b"".join(lines + extra) + sep + body


def _bad_encodings(rng: random.Random, raw: bytes) -> bytes:
    swaps = [
        (b"charset=", rng.choice([b"charset=x-unknown-", b'charset="utf-7', b"charset=utf-16"])),
        (b"base64", rng.choice([b"base64x", b"quoted-printable", b"BASE64"])),
        (b"=?", rng.choice([b"=?utf-8?b?###", b"=?bogus?q?", b"=?utf-8?q?=ZZ"])),
        (b"boundary=", b"boundary=x"),
    ]
    old, new = rng.choice(swaps)
    return raw.replace(old, new, rng.randint(1, 3))


def _splice(rng: random.Random, raw: bytes) -> bytes:
    cut = rng.randrange(len(raw))
    return raw[:cut] + raw[cut:][::-1][: rng.randint(0, 5000)]


def _garbage_body(rng: random.Random, raw: bytes) -> bytes:
    noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3000)))
    return raw + b"\r\n" + noise


MUTATIONS: dict[str, Mutation] = {
    "flip": _flip_bytes,
    "truncate": _truncate,
    "nul": _nul_and_controls,
    "dup-headers": _duplicate_headers,
    "encodings": _bad_encodings,
    "splice": _splice,
    "garbage": _garbage_body,
}


def corpus_files(corpus: Path, max_bytes: int = 200_000) -> list[Path]:
    return sorted(p for p in corpus.rglob("*.eml") if p.stat().st_size <= max_bytes)


def mutations(corpus: Path, count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    files = corpus_files(corpus)
    names = sorted(MUTATIONS)
    for i in range(count):
        source = rng.choice(files)
        # A Message-ID of its own, so that each mutation is parsed rather than
        # recognised as a duplicate of the corpus message it came from.
        raw = _MESSAGE_ID.sub(
            b"Message-ID: <fuzz-%d@fuzz.test>\r\nX-Original-Message-ID:" % i,
            source.read_bytes() or b"x",
            count=1,
        )
        kinds = rng.sample(names, rng.randint(1, 3))
        for kind in kinds:
            raw = MUTATIONS[kind](rng, raw) or b"x"
        yield f"{i}:{source.name}:{'+'.join(kinds)}", raw
