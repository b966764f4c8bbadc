"""Signed references to a case, carried by every message emaild sends.

A reference is ``<case>.<nonce>.<mac>`` where ``mac`` is a truncated
HMAC-SHA256 over case and nonce with a secret only emaild knows, so a
reference cannot be forged or guessed from a case number.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from emaild.config import Config
from emaild.errors import ConfigError

MAC_HEX = 20  # 80 bits
_REF = re.compile(r"^(\d{1,12})\.([0-9a-z]{6,32})\.([0-9a-f]{" + str(MAC_HEX) + r"})$")


@dataclass(frozen=True)
class CaseSigner:
    """Makes and verifies signed case references, Message-IDs and tokens."""

    secret: bytes
    domain: str

    def _mac(self, case_id: int, nonce: str) -> str:
        msg = f"{case_id}.{nonce}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()[:MAC_HEX]

    def reference(self, case_id: int, nonce: str | None = None) -> str:
        """A fresh signed reference to ``case_id``."""
        nonce = nonce or secrets.token_hex(6)
        return f"{case_id}.{nonce}.{self._mac(case_id, nonce)}"

    def verify(self, reference: str) -> int | None:
        """The case a reference names, or None if it is malformed or forged."""
        match = _REF.match(reference.strip().lower())
        if not match:
            return None
        case_id, nonce, mac = int(match.group(1)), match.group(2), match.group(3)
        if not hmac.compare_digest(mac, self._mac(case_id, nonce)):
            return None
        return case_id

    def message_id(self, case_id: int) -> str:
        """A Message-ID under our domain carrying a signed reference to the case."""
        return f"<emaild.{self.reference(case_id)}@{self.domain}>"

    def case_from_message_id(self, message_id: str) -> int | None:
        value = message_id.strip().strip("<>")
        local, _, domain = value.rpartition("@")
        if domain.lower() != self.domain.lower() or not local.startswith("emaild."):
            return None
        return self.verify(local.removeprefix("emaild."))


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
    return CaseSigner(secret=secret, domain=domain)


def _state_secret(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    tmp = path.with_suffix(".tmp")
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
