"""A spam scan through rspamd's HTTP protocol (``POST /checkv2``), never losing mail.

rspamd answers with a score and an action; emaild flags the message as spam
when the action is one rspamd takes for spam (``reject``, ``add header``,
``rewrite subject``). A scanner that is down, slow or answers nonsense makes
the message "unscanned": it goes on, flagged, and is never held back or lost
because of the scanner.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

SPAM_ACTIONS = frozenset({"reject", "add header", "rewrite subject"})
# rspamd's answer is a small JSON object; anything bigger is not rspamd.
MAX_REPLY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class SpamVerdict:
    """What a scan said: ``flag`` is "yes", "no" or "unscanned"."""

    flag: str
    score: float | None = None
    action: str = ""
    error: str = ""

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"flag": self.flag, "score": self.score, "scanner": "rspamd"}
        if self.action:
            out["action"] = self.action
        if self.error:
            out["error"] = self.error
        return out


class Rspamd:
    """One rspamd normal worker (``http://host:11333``), asked with a time limit."""

    def __init__(self, url: str, *, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = (parts.path.rstrip("/") or "") + "/checkv2"
        self.timeout = timeout

    def scan(self, raw: bytes, *, ip: str = "", helo: str = "", mail_from: str = "",
             rcpt_to: tuple[str, ...] = ()) -> SpamVerdict:  # fmt: skip
        """Scan ``raw``; any failure is an "unscanned" verdict, never an exception."""
        headers = {"Content-Length": str(len(raw))}
        if ip:
            headers["IP"] = ip
        if helo:
            headers["Helo"] = helo
        if mail_from:
            headers["From"] = mail_from
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.putrequest("POST", self.path)
            for name, value in headers.items():
                conn.putheader(name, value)
            for rcpt in rcpt_to[:100]:
                conn.putheader("Rcpt", rcpt)
            conn.endheaders(raw)
            reply = conn.getresponse()
            body = reply.read(MAX_REPLY_BYTES + 1)
            if reply.status != 200:
                return SpamVerdict("unscanned", error=f"rspamd answered HTTP {reply.status}")
            if len(body) > MAX_REPLY_BYTES:
                return SpamVerdict("unscanned", error="rspamd's answer is too large")
            return _verdict(json.loads(body))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # Timeouts, refused connections and garbage all end here: the mail goes on.
            return SpamVerdict("unscanned", error=f"{type(exc).__name__}: {exc}"[:300])
        finally:
            conn.close()


def _verdict(data: Any) -> SpamVerdict:
    if not isinstance(data, dict) or "action" not in data:
        return SpamVerdict("unscanned", error="rspamd's answer has no action")
    action = str(data.get("action", ""))
    score = data.get("score")
    value = float(score) if isinstance(score, int | float) else None
    return SpamVerdict("yes" if action in SPAM_ACTIONS else "no", value, action)
