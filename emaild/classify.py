"""Classify a message as human or machine-generated (contract 4: no loops).

Rules read these flags as conditions; the auto-response stage refuses to answer
anything with a reason here. Each flag carries the evidence that set it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from emaild.mime.parse import ParsedMessage

# Local parts of addresses no person reads: MTAs, bounce handlers, no-reply
# senders, and mailing-list machinery (owner-LIST, LIST-owner, LIST-request).
_NO_REPLY_LOCAL = re.compile(
    r"^(mailer-daemon|post[-_.]?master|no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?|"
    r"bounce[-+].*|.*[-+]bounces?([-+].*)?|daemon|mail-daemon|notifications?-noreply|"
    r"owner-.+|.+-owner|.+-request)$",
    re.I,
)
# Headers only list servers add (RFC 2369 List-*, RFC 2919 List-Id, ezmlm,
# Mailman, fml, and older list managers).
_LIST_HEADERS = (
    "list-id",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-help",
    "list-owner",
    "list-archive",
    "mailing-list",
    "x-mailing-list",
    "x-mailman-version",
    "x-beenthere",
    "x-mlserver",
    "x-ml-name",
)
# Microsoft's Junk Mail Reporting Program sends complaints as plain
# multipart/mixed, not ARF; its subject is the only fixed marker.
_COMPLAINT_SUBJECT = re.compile(
    r"^\s*complaint about message from (\d{1,3}(\.\d{1,3}){3}|[0-9a-f:]*:[0-9a-f:]+)\s*$", re.I
)
_BOUNCE_SUBJECT = re.compile(
    r"(undeliver(ed|able)|delivery (status )?notification|delivery (has )?failed|"
    r"returned mail|mail delivery (failed|system)|failure notice|non[- ]?delivery|"
    r"delivery failure|could not be delivered|message not delivered|nondeliverable|"
    r"warning: message .* delayed|delayed mail|delivery delay|rejected:|"
    r"unzustellbar|non remis|mail system error|permanent error|"
    r"error sending your (mail|message))",
    re.I,
)
_AUTOREPLY_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|"
    r"abwesenheit|absence|on vacation|vacation|autoreply|auto:|réponse automatique|"
    r"respuesta automática|away from)",
    re.I,
)
_REPLY_SUBJECT = re.compile(r"^\s*(re|aw|sv|vs|antw|odp|ynt|r)\s*(\[\d+\])?\s*:", re.I)


# Mailman, Sympa, Google Groups, LISTSERV: a post held for the moderator.
_MODERATION_SUBJECT = re.compile(
    r"(awaits? moderator approval|requires? (moderator )?approval|held for moderation|"
    r"moderation (request|notice)|message (has been )?held|post(ing)? to .{1,80} (is )?held|"
    r"waiting for moderation|pending moderation)",
    re.I,
)
# Markers MTAs write before an original message they paste into the text.
# At the start of an unquoted line: a person forwarding a bounce quotes these with ">".
_ORIGINAL_INLINE = re.compile(
    r"^[ \t]*(-{2,} ?(this is a copy of the message|original message|returned message|"
    r"undelivered message)|below this line is a copy of the message|"
    r"the original message (was received|follows|is attached)|"
    r"original message headers|-{2,}\s*message (header|text) follows)",
    re.I | re.M,
)
_FORWARD_SUBJECT = re.compile(r"^\s*(fwd?|wg|tr|fw|re|aw|sv)\s*:", re.I)
_SCAN_TEXT = 64 * 1024
# Exchange sets this on mail a user's inbox rule forwarded: alone it is a person's mail.
_EXCHANGE_RULE = "x-ms-exchange-inbox-rules-loop"


@dataclass(frozen=True)
class Classification:
    """Flags with the evidence for each."""

    auto_submitted: str = ""  # why it is machine-generated ("" = human)
    bounce: str = ""  # why it is a bounce / DSN
    report: str = ""  # MDN or ARF feedback report
    vacation: str = ""  # out-of-office / vacation auto-reply
    bulk: str = ""  # list or bulk mail
    no_reply_sender: str = ""  # null return path or a no-reply sender
    suppress: str = ""  # X-Auto-Response-Suppress asked us not to answer
    loop: str = ""  # our own loop header
    reply: str = ""  # looks like a reply (headers or subject)
    reasons: tuple[str, ...] = field(default=())

    @property
    def is_auto(self) -> bool:
        """Machine-generated in any way: never auto-respond, never open a case alone."""
        return bool(
            self.auto_submitted
            or self.bounce
            or self.report
            or self.vacation
            or self.bulk
            or self.loop
        )

    @property
    def is_bounce(self) -> bool:
        return bool(self.bounce)

    @property
    def is_auto_reply(self) -> bool:
        return bool(self.vacation or self.auto_submitted)

    @property
    def is_reply(self) -> bool:
        return bool(self.reply)

    def no_response_reason(self) -> str:
        """Why an auto-response must not be sent, or "" if one may be."""
        for reason in (
            self.loop,
            self.bounce,
            self.report,
            self.vacation,
            self.auto_submitted,
            self.bulk,
            self.suppress,
            self.no_reply_sender,
        ):
            if reason:
                return reason
        return ""


LOOP_HEADER = "X-Emaild-Loop"


def classify(parsed: ParsedMessage, mail_from: str | None) -> Classification:
    """Classify ``parsed``; ``mail_from`` is the envelope sender (None when unknown)."""
    h = parsed.header
    flags: dict[str, str] = {}
    # A null Return-Path recorded by the delivering MTA is the same as MAIL FROM:<>.
    if parsed.null_return_path and not mail_from:
        mail_from = ""

    auto = (h("auto-submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        flags["auto_submitted"] = f"Auto-Submitted: {auto}"
    for name in (
        "x-autoreply",
        "x-autorespond",
        "x-auto-reply",
        "x-autogenerated",
        "x-mail-autoreply",
    ):
        if h(name) is not None and "auto_submitted" not in flags:
            flags["auto_submitted"] = f"{name} header present"
    if "auto_submitted" not in flags:
        _exchange_rule(parsed, mail_from, flags)
    if "auto_submitted" not in flags and _MODERATION_SUBJECT.search(parsed.subject):
        if h("x-list-administrivia") is not None or _machine_sender(parsed, mail_from):
            flags["auto_submitted"] = f"list moderation notice: {parsed.subject[:60]!r}"
    elif (h("x-list-administrivia") or "").strip().lower() == "yes":
        flags.setdefault("auto_submitted", "X-List-Administrivia: yes")

    precedence = (h("precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        flags["bulk"] = f"Precedence: {precedence}"
    elif any(h(name) is not None for name in _LIST_HEADERS):
        found = next(name for name in _LIST_HEADERS if h(name) is not None)
        flags["bulk"] = f"mailing-list header {found} present"
    elif h("feedback-id") is not None and h("x-campaign") is not None:
        flags["bulk"] = "campaign mail"

    ctype = parsed.content_type.lower()
    report_type = _param(h("content-type") or "", "report-type").lower()
    types = {a.content_type for a in parsed.attachments} | set(parsed.part_types)
    if (
        (ctype == "multipart/report" and report_type == "delivery-status")
        or "message/delivery-status" in types
        or "message/global-delivery-status" in types
    ):
        flags["bounce"] = "delivery status notification (RFC 3464)"
    elif (
        ctype == "multipart/report" and report_type == "disposition-notification"
    ) or "message/disposition-notification" in types:
        flags["report"] = "message disposition notification (RFC 8098)"
    elif (
        ctype == "multipart/report" and report_type == "feedback-report"
    ) or "message/feedback-report" in types:
        flags["report"] = "abuse feedback report (ARF, RFC 5965)"
    elif ctype == "multipart/report":
        flags["bounce"] = f"multipart/report ({report_type or 'no report-type'})"
    elif "text/rfc822-headers" in types:
        flags["bounce"] = "returned headers (text/rfc822-headers) attached"
    elif _COMPLAINT_SUBJECT.match(parsed.subject) and ctype.startswith("multipart/"):
        flags["report"] = "abuse complaint with the reported message attached"

    sender_local = parsed.from_addr.partition("@")[0]
    subject = parsed.subject
    if "bounce" not in flags and "report" not in flags:
        if _BOUNCE_SUBJECT.search(subject) and (
            mail_from == "" or _NO_REPLY_LOCAL.match(sender_local) or not parsed.from_addr
        ):
            flags["bounce"] = f"bounce subject from {parsed.from_addr or 'null sender'}"
        elif sender_local.lower() in ("mailer-daemon", "postmaster") or (
            h("x-failed-recipients") is not None
        ):
            flags["bounce"] = "mailer-daemon sender or X-Failed-Recipients"
        elif "message/rfc822" in types and _machine_sender(parsed, mail_from):
            # Non-standard bounces (KDDI, X6, ...) return the original as an attachment.
            flags["bounce"] = "machine sender returned an original message"
        elif (
            _BOUNCE_SUBJECT.search(subject)
            and not _FORWARD_SUBJECT.match(subject)
            and ("message/rfc822" in types or _ORIGINAL_INLINE.search(parsed.text[:_SCAN_TEXT]))
        ):
            # Vendor notices ("Delivery failure notification") carry the original but no DSN.
            flags["bounce"] = "bounce subject with the original message returned"

    if _AUTOREPLY_SUBJECT.search(subject) or h("x-vacation") is not None:
        flags["vacation"] = f"auto-reply subject: {subject[:60]!r}"

    suppress = (h("x-auto-response-suppress") or "").lower()
    if any(v.strip() in ("all", "autoreply", "oof") for v in suppress.split(",")):
        flags["suppress"] = f"X-Auto-Response-Suppress: {suppress}"

    if h(LOOP_HEADER) is not None:
        flags["loop"] = f"{LOOP_HEADER} present: mail emaild sent came back"
    elif h("x-loop") is not None:
        flags["loop"] = f"X-Loop: {h('x-loop')}"

    if mail_from is None:
        # Not over SMTP: the delivering MTA recorded the envelope sender here.
        return_path = (h("return-path") or "").strip()
        if return_path in ("<>", ""):
            mail_from = "" if return_path == "<>" else None
        else:
            mail_from = return_path.strip("<>").strip()
    if mail_from == "":
        flags["no_reply_sender"] = "null return path (<>)"
    elif not parsed.from_addr:
        flags["no_reply_sender"] = "no From address"
    elif _NO_REPLY_LOCAL.match(sender_local):
        flags["no_reply_sender"] = f"no-reply sender {parsed.from_addr}"
    elif mail_from and _NO_REPLY_LOCAL.match(mail_from.partition("@")[0]):
        flags["no_reply_sender"] = f"no-reply envelope sender {mail_from}"

    if parsed.in_reply_to or parsed.references:
        flags["reply"] = "In-Reply-To/References present"
    elif _REPLY_SUBJECT.match(subject):
        flags["reply"] = "reply prefix in subject"

    return Classification(**flags, reasons=tuple(f"{k}: {v}" for k, v in flags.items()))


def _exchange_rule(parsed: ParsedMessage, mail_from: str | None, flags: dict[str, str]) -> None:
    """The inbox-rules loop header counts only together with another machine signal."""
    h = parsed.header
    if h(_EXCHANGE_RULE) is None:
        return
    others = [
        ("null return path", mail_from == ""),
        ("no-reply sender", bool(parsed.from_addr) and is_no_reply_address(parsed.from_addr)),
        ("auto-reply subject", bool(_AUTOREPLY_SUBJECT.search(parsed.subject))),
        ("generated by Exchange", h("x-ms-exchange-generated-message-source") is not None),
    ]
    found = [name for name, present in others if present]
    if found:
        flags["auto_submitted"] = f"{_EXCHANGE_RULE} with {', '.join(found)}"


def _machine_sender(parsed: ParsedMessage, mail_from: str | None) -> bool:
    """Null return path, or a From naming a daemon or no-reply mailbox (even without a domain)."""
    if mail_from == "" or parsed.null_return_path:
        return True
    raw_from = (parsed.header("from") or "").strip().lower()
    if "@" not in raw_from and _NO_REPLY_LOCAL.match(raw_from):
        return True
    return bool(parsed.from_addr) and is_no_reply_address(parsed.from_addr)


def is_no_reply_address(address: str) -> bool:
    """Whether ``address`` belongs to a machine (MTA, bounce handler, list, no-reply)."""
    return bool(_NO_REPLY_LOCAL.match(address.strip().lower().rpartition("@")[0]))


def _param(header: str, name: str) -> str:
    match = re.search(name + r'\s*=\s*"?([^";\s]+)', header, re.I)
    return match.group(1) if match else ""
