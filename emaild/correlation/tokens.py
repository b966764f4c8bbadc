"""Signed references to a case, carried by every message emaild sends.

A reference is ``<case>.<nonce>.<mac>`` where ``mac`` is a truncated
HMAC-SHA256 over case and nonce with a secret only emaild knows, so a
reference cannot be forged or guessed from a case number. It travels in three
places, each configurable under ``[threading]``:

- the Message-ID of outgoing mail, ``<emaild.<reference>@<domain>>`` (always);
- the subject token, ``threading.subject_token_format`` (``{number}`` is the
  case number, ``{token}`` the signed token), e.g. ``[Case #00001234]``;
- the body token, ``threading.body_token_format`` (must hold ``{token}``),
  e.g. ``ref:1234.thread.8f0c...:ref``.

Public API (outgoing mail, issue 7, uses these through
``pipeline.services.signer``, a ``CaseSigner``):

- ``signer.message_id(case_id)``: a fresh, unique, signed Message-ID.
- ``signer.subject_token(case_id)``: the exact subject token ("" when
  ``subject_token = false``); ``signer.mark_subject(subject, case_id)`` appends
  it to a subject unless it is already there (and drops other cases' tags).
- ``signer.body_token(case_id)``: the body token ("" when ``body_token =
  false``).
- ``signer.token(case_id)``: the bare signed token (same value every time).

Reading them back (used by ``emaild.correlation.match``):
``signer.case_from_message_id(mid)``, ``signer.find_tokens(text)`` and
``signer.subject_numbers(subject)``. ``subject_token(config, n)`` renders the
subject token without a ``CaseSigner`` when the format needs no secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter

from emaild.config import Config, ThreadingConfig
from emaild.errors import ConfigError

MAC_HEX = 20  # 80 bits
_REF = re.compile(r"^(\d{1,12})\.([0-9a-z]{6,32})\.([0-9a-f]{" + str(MAC_HEX) + r"})$")
# A reference inside free text (subject, body, quoted history). Anything shaped
# like one is only a candidate: the MAC decides.
_REF_IN_TEXT = re.compile(
    r"(?<![0-9a-z])(\d{1,12}\.[0-9a-z]{6,32}\.[0-9a-f]{" + str(MAC_HEX) + r"})(?![0-9a-z])",
    re.IGNORECASE,
)
# Tokens need not be unique (Message-IDs must), so one nonce for all of them
# keeps a case's token the same in every message.
TOKEN_NONCE = "thread"
DEFAULTS = ThreadingConfig()


@dataclass(frozen=True)
class FoundToken:
    """A reference-shaped string found in text; ``case_id`` is None if it did not verify."""

    text: str
    case_id: int | None


@dataclass(frozen=True)
class CaseSigner:
    """Makes and verifies signed case references, Message-IDs and tokens."""

    secret: bytes
    domain: str
    subject_format: str = DEFAULTS.subject_token_format
    body_format: str = DEFAULTS.body_token_format
    subject_enabled: bool = DEFAULTS.subject_token
    body_enabled: bool = DEFAULTS.body_token
    # True when threading.domain is set: then every Message-ID uses it.
    domain_configured: bool = False
    _subject_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_subject_re", format_regex(self.subject_format))

    def _mac(self, case_id: int, nonce: str) -> str:
        msg = f"{case_id}.{nonce}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()[:MAC_HEX]

    # --- making ------------------------------------------------------------
    def reference(self, case_id: int, nonce: str | None = None) -> str:
        """A fresh signed reference to ``case_id``."""
        nonce = nonce or secrets.token_hex(6)
        return f"{case_id}.{nonce}.{self._mac(case_id, nonce)}"

    def token(self, case_id: int) -> str:
        """The signed token of ``case_id`` for subjects and bodies (stable per case)."""
        return self.reference(case_id, TOKEN_NONCE)

    def domain_for(self, address: str) -> str:
        """The Message-ID domain for mail sent as ``address``: threading.domain when
        configured, else the address's own domain (never the host's ``localhost``)."""
        if self.domain_configured:
            return self.domain
        return address.rpartition("@")[2].lower() or self.domain

    def message_id(self, case_id: int, sender: str = "") -> str:
        """A Message-ID carrying a signed reference to the case, under the domain of
        ``sender`` (the routing address it goes out as; see ``domain_for``)."""
        domain = self.domain_for(sender) if sender else self.domain
        return f"<emaild.{self.reference(case_id)}@{domain}>"

    def subject_token(self, case_id: int) -> str:
        """The exact token emaild puts in subjects for ``case_id`` ("" if switched off)."""
        if not self.subject_enabled:
            return ""
        return render_format(self.subject_format, case_id, self.token)

    def body_token(self, case_id: int) -> str:
        """The token emaild puts in bodies for ``case_id`` ("" if switched off)."""
        if not self.body_enabled:
            return ""
        return render_format(self.body_format, case_id, self.token)

    def mark_subject(self, subject: str, case_id: int) -> str:
        """``subject`` with the case's subject token at the end, unless it already has it."""
        token = self.subject_token(case_id)
        if not token or self.subject_numbers(subject) == [case_id]:
            return subject
        # Another case's tag (the customer replied to an old, closed case) would
        # make the reply ambiguous: ours replaces it.
        return f"{self.strip_subject_tokens(subject)} {token}".strip()

    # --- reading back ------------------------------------------------------
    def verify(self, reference: str) -> int | None:
        """The case a reference names, or None if it is malformed or forged."""
        match = _REF.match(reference.strip().lower())
        if not match:
            return None
        case_id, nonce, mac = int(match.group(1)), match.group(2), match.group(3)
        if not hmac.compare_digest(mac, self._mac(case_id, nonce)):
            return None
        return case_id

    def is_ours(self, message_id: str) -> bool:
        """Whether ``message_id`` has the shape of one emaild generated (signed or not)."""
        local, _, domain = message_id.strip().strip("<>").lower().rpartition("@")
        if not local.startswith("emaild."):
            return False
        # Under a routing address's domain it is ours only if our signature holds:
        # another emaild's Message-IDs look the same.
        return domain == self.domain.lower() or self.verify(local[7:]) is not None

    def case_from_message_id(self, message_id: str) -> int | None:
        """The case a Message-ID we generated names; None if not ours or forged."""
        if not self.is_ours(message_id):
            return None
        local = message_id.strip().strip("<>").lower().rpartition("@")[0]
        return self.verify(local.removeprefix("emaild."))

    def find_tokens(self, text: str) -> list[FoundToken]:
        """Every reference-shaped string in ``text``, in order, with the case it proves."""
        found: list[FoundToken] = []
        seen: set[str] = set()
        for match in _REF_IN_TEXT.finditer(text):
            value = match.group(1).lower()
            if value not in seen:
                seen.add(value)
                found.append(FoundToken(value, self.verify(value)))
        return found

    def subject_numbers(self, subject: str) -> list[int]:
        """Case numbers named by subject tags in the configured format (unsigned claims)."""
        numbers: list[int] = []
        for match in self._subject_re.finditer(subject):
            number = match.groupdict().get("number")
            if number is not None and int(number) not in numbers:
                numbers.append(int(number))
        return numbers

    def strip_subject_tokens(self, subject: str) -> str:
        """``subject`` without our subject tags (for display)."""
        return " ".join(self._subject_re.sub(" ", subject).split())


def render_format(fmt: str, case_id: int, token: object) -> str:
    """Fill a token format; ``token`` is the signed token or a function of the case."""
    value = token(case_id) if callable(token) else token
    return fmt.format(number=case_id, token=value)


def format_regex(fmt: str) -> re.Pattern[str]:
    """A pattern that finds what ``fmt`` renders, tolerant of case and spacing.

    ``{number}`` captures the case number (leading zeros optional), ``{token}``
    a reference-shaped string (verified separately).
    """
    parts: list[str] = []
    named: set[str] = set()
    for literal, name, _spec, _conv in Formatter().parse(fmt):
        # Mail clients re-wrap and re-space subjects; whitespace must not matter.
        parts.append(r"\s*".join(re.escape(word) for word in literal.split(" ")))
        if name in ("number", "token"):
            inner = r"\d{1,12}" if name == "number" else r"\d{1,12}\.[0-9a-z]{6,32}\.[0-9a-f]+"
            group = f"(?P<{name}>{inner})" if name not in named else f"(?:{inner})"
            parts.append(rf"\s*{group}\s*")
            named.add(name)
    return re.compile("".join(parts), re.IGNORECASE)


def subject_token(config: Config, case_id: int) -> str:
    """The exact subject token for ``case_id`` under ``config`` ("" if switched off).

    Loads the secret only when the format contains ``{token}``.
    """
    t = config.threading
    if not t.subject_token:
        return ""
    if "token" in {name for _, name, _, _ in Formatter().parse(t.subject_token_format)}:
        return load_signer(config).subject_token(case_id)
    return render_format(t.subject_token_format, case_id, "")


def load_signer(config: Config) -> CaseSigner:
    """The signer for ``config``: secret from config, secret_file, or state_dir/secret."""
    t = config.threading
    domain = t.domain or socket.getfqdn() or "localhost"
    if t.secret:
        secret = t.secret.encode()
    elif t.secret_file:
        try:
            secret = Path(t.secret_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", key="threading.secret_file") from None
    else:
        secret = _state_secret(Path(config.state_dir) / "secret")
    if len(secret) < 16:
        raise ConfigError("secret must be at least 16 bytes", key="threading.secret")
    return CaseSigner(
        secret=secret,
        domain=domain,
        subject_format=t.subject_token_format,
        body_format=t.body_token_format,
        subject_enabled=t.subject_token,
        body_enabled=t.body_token,
        domain_configured=bool(t.domain),
    )


def _state_secret(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    # A per-process temporary name: two processes starting at once must not share it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(value)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # first writer wins if two processes start at once
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes().strip()
