"""The "new text" of a reply: what the sender wrote, without quoted history or signature.

Stored beside the full body (``messages.new_text``) for display; the full body
is always kept. The rules are deliberately conservative: when in doubt a line
stays, and a message whose every line looks quoted gives "" (the display then
falls back to the full text).
"""

from __future__ import annotations

import re

SIGNATURE_MAX_LINES = 15

# "On Mon, 3 Jun 2024 at 10:00, Alice <a@x> wrote:" and its translations. Gmail
# wraps long attributions, so two lines are tried joined.
_ATTRIBUTION = re.compile(
    r"^\s*(?:"
    r"on\s.{1,250}\swrote\s*:"
    r"|am\s.{1,250}\sschrieb.{0,80}:"
    r"|le\s.{1,250}\sa\s+[ée]crit\s*:"
    r"|el\s.{1,250}\sescribi[óo]\s*:"
    r"|il\s.{1,250}\sha\s+scritto\s*:"
    r"|op\s.{1,250}\sschreef.{0,80}:"
    r"|em\s.{1,250}\sescreveu\s*:"
    r"|den\s.{1,250}\sskrev.{0,80}:"
    r"|w\s+dniu\s.{1,250}\spisze\s*:"
    r"|.{1,250}\s<[^>\s]+@[^>\s]+>\s+(?:wrote|schrieb|a\s+[ée]crit)\s*:"
    r")\s*$",
    re.IGNORECASE,
)
# Outlook-style history: not quoted with ">", it starts at a separator line or
# at a "From:/Sent:" header block, and runs to the end.
_SEPARATOR = re.compile(
    r"^\s*(?:-{2,}\s*(?:original\s+message|urspr[üu]ngliche\s+nachricht|original-nachricht|"
    r"message\s+d'origine|mensaje\s+original|messaggio\s+originale|oorspronkelijk\s+bericht)"
    r"\s*-{2,}|_{20,})\s*$",
    re.IGNORECASE,
)
_HEADER_FROM = re.compile(r"^\s*\*?(?:from|von|de|van|da|från|fra|od)\s*\*?\s*:\s*\S", re.I)
_HEADER_NEXT = re.compile(
    r"^\s*\*?(?:sent|date|to|subject|gesendet|datum|an|betreff|envoy[ée]|[àa]|objet|enviado|"
    r"para|asunto|inviato|oggetto|verzonden|aan|onderwerp|skickat|ämne|sendt|emne)\s*\*?\s*:",
    re.IGNORECASE,
)
# Phone and webmail sign-offs that mean "signature follows" or are one.
_DEVICE_SIGNOFF = re.compile(
    r"^\s*(?:sent\s+from\s+my\s.{1,60}|get\s+outlook\s+for\s.{1,40}|"
    r"von\s+meinem\s.{1,60}\sgesendet|envoy[ée]\s+de\s+mon\s.{1,60}|"
    r"enviado\s+desde\s+mi\s.{1,60}|inviato\s+da(?:l\s+mio)?\s.{1,60})\s*$",
    re.IGNORECASE,
)


def new_text(text: str) -> str:
    """``text`` without quoted history (``>`` lines, attributions, Outlook blocks) or signature."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = _cut_history(lines)
    lines = _drop_quotes(lines)
    lines = _cut_signature(lines)
    return _tidy(lines)


def _is_quote(line: str) -> bool:
    return line.lstrip().startswith(">")


def _attribution_at(lines: list[str], i: int) -> int:
    """How many lines (1 or 2) form an attribution starting at ``i``; 0 if none."""
    # Every attribution ends in ":" (then only spaces): most lines are ruled
    # out without running the expensive pattern.
    if lines[i].rstrip().endswith(":") and _ATTRIBUTION.match(lines[i]):
        return 1
    if (
        i + 1 < len(lines)
        and lines[i + 1].rstrip().endswith(":")
        and _ATTRIBUTION.match(lines[i] + " " + lines[i + 1].strip())
    ):
        return 2
    return 0


def _next_content(lines: list[str], i: int) -> str:
    for line in lines[i:]:
        if line.strip():
            return line
    return ""


def _cut_history(lines: list[str]) -> list[str]:
    """Truncate at the first history block that is not ``>``-quoted (top posting)."""
    for i, line in enumerate(lines):
        if _SEPARATOR.match(line):
            return lines[:i]
        if _HEADER_FROM.match(line) and any(_HEADER_NEXT.match(n) for n in lines[i + 1 : i + 4]):
            return lines[:i]
        span = _attribution_at(lines, i)
        # An attribution over ">" lines is interleaved or bottom posting: the
        # quotes go, the text around them stays (see _drop_quotes).
        if span and not _is_quote(_next_content(lines, i + span)):
            return lines[:i]
    return lines


def _drop_quotes(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        span = _attribution_at(lines, i)
        if span and _is_quote(_next_content(lines, i + span)):
            i += span
            continue
        if not _is_quote(lines[i]):
            out.append(lines[i])
        i += 1
    return out


def _cut_signature(lines: list[str]) -> list[str]:
    # RFC 3676 delimiter "-- "; many clients lose the trailing space. A "--"
    # with a long text after it is a divider, not a signature.
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].rstrip() == "--":
            if len(lines) - i <= SIGNATURE_MAX_LINES:
                lines = lines[:i]
            break
    while lines and (not lines[-1].strip() or _DEVICE_SIGNOFF.match(lines[-1])):
        lines = lines[:-1]
    return lines


def _tidy(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        line = line.rstrip()
        if not line and (not out or not out[-1]):
            continue  # collapse runs of blank lines
        out.append(line)
    return "\n".join(out).strip()
