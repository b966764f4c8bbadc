"""The form's HTML: the snippet an admin embeds, the served page, the answers.

Everything here is escaped with ``markupsafe``; there is no inline script
or style, so the pages work under the strict ``CSP`` they are served with.
"""

from __future__ import annotations

from importlib.resources import files

from markupsafe import Markup, escape

from emaild.config import WebformConfig
from emaild.webform.submission import MAX_NAME_CHARS, MAX_SUBJECT_CHARS

STATIC = {"webform.js": "text/javascript", "webform.css": "text/css"}


def static_file(name: str) -> bytes | None:
    if name not in STATIC:
        return None
    return files("emaild.webform").joinpath("static", name).read_bytes()


def csp(form_actions: list[str]) -> str:
    """The pages' Content-Security-Policy: our own script and style, nothing inline."""
    actions = " ".join(["'self'", *sorted(set(form_actions))])
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src 'self'; form-action {actions}; base-uri 'none'; frame-ancestors 'none'"
    )


def _input(name: str, label: str, kind: str, *, required: bool, extra: str = "") -> str:
    star = " *" if required else ""
    req = " required" if required else ""
    return (
        f'  <p><label for="ewf-{name}">{escape(label)}{star}</label>\n'
        f'    <input id="ewf-{name}" name="{name}" type="{kind}"{req}{extra}></p>\n'
    )


def snippet(form: WebformConfig, base_url: str = "") -> str:
    """The accessible form an admin hands to the web developer (``emaild webform html``)."""
    base = escape(base_url.rstrip("/"))
    action = f"{base}/web-to-case/{escape(form.name)}"
    out = [
        f'<form class="emaild-webform" method="post" action="{action}"'
        f' enctype="multipart/form-data" accept-charset="utf-8"'
        f' data-challenge="{action}/challenge" data-min-fill="{form.min_fill_seconds:g}">\n',
        _input(
            "name",
            "Your name",
            "text",
            required=True,
            extra=f' autocomplete="name" maxlength="{MAX_NAME_CHARS}"',
        ),
        _input("email", "Email", "email", required=True, extra=' autocomplete="email"'),
        _input(
            "subject",
            "Subject",
            "text",
            required=True,
            extra=f' autocomplete="off" maxlength="{MAX_SUBJECT_CHARS}"',
        ),
        '  <p><label for="ewf-description">How can we help? *</label>\n'
        f'    <textarea id="ewf-description" name="description" rows="8" required'
        f' maxlength="{form.max_description_chars}"></textarea></p>\n',
    ]
    for spec in form.fields:
        label = spec.label or spec.name
        if spec.options:
            star, req = (" *", " required") if spec.required else ("", "")
            options = "".join(
                f'<option value="{escape(o)}">{escape(o)}</option>' for o in spec.options
            )
            empty = "" if spec.required else '<option value=""></option>'
            out.append(
                f'  <p><label for="ewf-{spec.name}">{escape(label)}{star}</label>\n'
                f'    <select id="ewf-{spec.name}" name="{spec.name}"{req}>'
                f"{empty}{options}</select></p>\n"
            )
        else:
            out.append(
                _input(
                    spec.name,
                    label,
                    "text",
                    required=spec.required,
                    extra=f' maxlength="{spec.max_length}"',
                )
            )
    if form.attachments and form.max_attachments:
        multiple = " multiple" if form.max_attachments > 1 else ""
        out.append(
            '  <p><label for="ewf-attachment">Attachments'
            f" (at most {form.max_attachments})</label>\n"
            f'    <input id="ewf-attachment" name="attachment" type="file"{multiple}></p>\n'
        )
    if form.honeypot:
        out.append(
            f'  <p class="ewf-hp" hidden aria-hidden="true"><label for="ewf-{form.honeypot}">'
            f"Leave this empty</label>\n"
            f'    <input id="ewf-{form.honeypot}" name="{form.honeypot}" type="text"'
            ' tabindex="-1" autocomplete="off"></p>\n'
        )
    out += [
        '  <input type="hidden" name="altcha" value="">\n',
        '  <input type="hidden" name="nonce" value="">\n',
        '  <p class="ewf-status" role="status" aria-live="polite"></p>\n',
        '  <p><button type="submit">Send</button></p>\n',
        "</form>\n",
        f'<script src="{base}/web-to-case/static/webform.js" defer></script>\n',
    ]
    return "".join(out)


def document(title: str, body: str, *, stylesheet: bool = True) -> str:
    style = '<link rel="stylesheet" href="/web-to-case/static/webform.css">\n' if stylesheet else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n{style}</head>\n<body>\n<main>\n"
        f"<h1>{escape(title)}</h1>\n{body}</main>\n</body>\n</html>\n"
    )


def form_page(form: WebformConfig) -> str:
    return document(form.title, snippet(form))


def thanks_page(
    form: WebformConfig, case_number: int | None, *, confirming: bool = False, queued: bool = False
) -> str:
    number = "" if case_number is None else f" Your case number is {case_number}."
    text = f"We received your request and will answer by email.{number}"
    if confirming:
        text = "We sent you an email: follow its link to confirm your request."
    elif queued:
        text = "Thank you: your request is confirmed and will be opened shortly."
    return document("Thank you", f'<p id="ewf-thanks">{escape(text)}</p>\n')


def confirm_page(form: WebformConfig, query: str) -> str:
    """The mailed link's page: a button that confirms (a POST). A mail scanner that
    follows every link in a message fetches this page and confirms nothing."""
    action = escape(f"/web-to-case/{form.name}/confirm?{query}")
    return document(
        "Confirm your request",
        '<p id="ewf-confirm">Press the button to confirm your request; '
        "a case is opened for it.</p>\n"
        f'<form method="post" action="{action}">\n'
        '  <p><button type="submit">Confirm my request</button></p>\n</form>\n',
    )


def error_page(status: int, detail: str, form: WebformConfig | None) -> str:
    back = (
        f'<p><a href="/web-to-case/{escape(form.name)}">Back to the form</a></p>\n'
        if form is not None
        else ""
    )
    body = Markup('<p id="ewf-error">{}</p>\n').format(detail) + Markup(back)
    return document(f"Your request was not sent ({status})", str(body))
