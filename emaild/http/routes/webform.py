"""Web-to-Case: ``/web-to-case/NAME`` serves a form, and a submission opens a case.

Outside ``/api/v1`` and without a token: anyone on the web may post. The
defences run cheapest first (rate limit and Origin before the body is read,
then honeypot, challenge, fill time, the fields), then the submission becomes
an RFC 5322 message (``emaild.webform.message``) and takes the pipeline like
mail, with channel ``web``. Over the form's daily cap it is held instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from emaild.app import App
from emaild.config import WebformConfig
from emaild.errors import InputError, TransientError
from emaild.http.context import ApiContext, api
from emaild.http.problems import problem_response
from emaild.http.webform_body import read_body
from emaild.http.webform_gate import SECURITY_HEADERS, WebState
from emaild.intake import Envelope, IngestResult, Outcome
from emaild.webform import cap, challenge, confirm, page
from emaild.webform.guard import client_address, origin_verdict
from emaild.webform.message import build, message_id
from emaild.webform.submission import Refused, Submission, case_fields, read

log = structlog.get_logger("emaild.webform")
router = APIRouter(prefix="/web-to-case", tags=["web-to-case"], include_in_schema=False)


def _state(request: Request) -> WebState:
    state = request.app.state.webform
    assert isinstance(state, WebState)
    return state


def _form(app: App, name: str) -> WebformConfig:
    for form in app.config.webform:
        if form.name == name and form.enabled:
            return form
    raise Refused(404, f"no web form named {name!r}")


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}".lower()


def _html(body: str, status: int = 200, form: WebformConfig | None = None) -> HTMLResponse:
    actions = [*form.return_urls, form.thank_you_url] if form is not None else []
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": page.csp([a for a in actions if a])}
    return HTMLResponse(body, status_code=status, headers=headers)


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


def _refusal(exc: Refused, as_json: bool, form: WebformConfig | None) -> Response:
    if as_json:
        return problem_response(exc.status, exc.detail, exc.headers)
    response = _html(page.error_page(exc.status, exc.detail, form), exc.status, form)
    response.headers.update(exc.headers)
    return response


@router.get("/static/{filename}")
async def static(filename: str) -> Response:
    """The form's own script and style sheet."""
    data = page.static_file(filename)
    if data is None:
        return problem_response(404, "no such file")
    headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"}
    return Response(data, media_type=page.STATIC[filename], headers=headers)


@router.get("/{name}")
async def form_page(name: str, request: Request) -> Response:
    """A ready page with the form."""
    ctx = api(request)
    try:
        form = _form(ctx.app, name)
    except Refused as exc:
        return _refusal(exc, False, None)
    return _html(page.form_page(form), form=form)


@router.get("/{name}/challenge")
async def new_challenge(name: str, request: Request) -> Response:
    """A fresh ALTCHA challenge (JSON, as ``altcha.create_challenge`` makes it)."""
    ctx = api(request)
    try:
        form = _form(ctx.app, name)
    except Refused as exc:
        return _refusal(exc, True, None)
    headers = {"Cache-Control": "no-store", **SECURITY_HEADERS}
    origin = request.headers.get("origin", "").lower()
    if origin and origin in form.allowed_origins:  # the form embedded on another site
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    secret = ctx.app.services.signer.secret
    return JSONResponse(challenge.issue(form, secret, time.time()), headers=headers)


@router.get("/{name}/thanks")
async def thanks(name: str, request: Request, ref: str = "", confirm: str = "") -> Response:
    """Where a browser lands after a submission (unless a return URL is allowed)."""
    ctx = api(request)
    try:
        form = _form(ctx.app, name)
    except Refused as exc:
        return _refusal(exc, False, None)
    number = ctx.app.services.signer.verify(ref) if ref and len(ref) < 200 else None
    if form.hide_record_information:
        number = None
    return _html(page.thanks_page(form, number, confirming=bool(confirm)), form=form)


@router.get("/{name}/confirm")
async def confirm_link(
    name: str, request: Request, entry: int = 0, expires: int = 0, token: str = ""
) -> Response:
    """The signed link of the confirmation mail: a page whose button confirms."""
    ctx = api(request)
    try:
        form = _form(ctx.app, name)
        if not confirm.valid(
            ctx.app.services.signer.secret, entry, expires, token[:100], ctx.now()
        ):
            raise Refused(400, "this link is not valid or has expired", "confirm")
    except Refused as exc:
        return _refusal(exc, False, None)
    query = urlencode({"entry": entry, "expires": expires, "token": token[:100]})
    return _html(page.confirm_page(form, query), form=form)


@router.post("/{name}/confirm")
async def confirm_submission(
    name: str, request: Request, entry: int = 0, expires: int = 0, token: str = ""
) -> Response:
    """The confirmation page's button: the case opens now."""
    ctx = api(request)
    try:
        form = _form(ctx.app, name)
        secret = ctx.app.services.signer.secret
        if not confirm.valid(secret, entry, expires, token[:100], ctx.now()):
            raise Refused(400, "this link is not valid or has expired", "confirm")
        try:
            done = await ctx.run_sync(confirm.confirm, ctx.app.pipeline, form, entry)
        except InputError as exc:
            raise Refused(404, str(exc), "confirm") from None
        except TransientError as exc:
            raise Refused(503, f"temporarily unavailable: {exc}", "storage") from None
    except Refused as exc:
        return _refusal(exc, False, None)
    number = None if form.hide_record_information else done.case_number
    return _html(page.thanks_page(form, number, queued=done.case_number is None), form=form)


@router.post("/{name}")
async def submit(name: str, request: Request) -> Response:
    """A submission: 303 to the thank-you page, or JSON with ``Accept: application/json``."""
    ctx = api(request)
    as_json = _wants_json(request)
    form: WebformConfig | None = None
    try:
        form = _form(ctx.app, name)
        return await _submit(form, request, ctx, _state(request), as_json)
    except Refused as exc:
        log.info(
            "webform.refused",
            form=name,
            status=exc.status,
            defence=exc.defence,
            detail=exc.detail,
            peer=request.client.host if request.client else "",
        )
        return _refusal(exc, as_json, form)


async def _submit(
    form: WebformConfig, request: Request, ctx: ApiContext, state: WebState, as_json: bool
) -> Response:
    config = ctx.app.config
    # The rate limit was applied by ``RateGate`` before the request got here.
    peer = request.client.host if request.client else ""
    client = client_address(
        peer, request.headers.get("x-forwarded-for"), config.web.trusted_proxies
    )
    allowed, seen = origin_verdict(
        request.headers.get("origin"),
        request.headers.get("referer"),
        _own_origin(request),
        form.allowed_origins,
        form.require_origin,
    )
    if not allowed:
        raise Refused(403, f"this form may not be posted from {seen}", "origin")
    body = await read_body(
        request,
        form,
        global_attachment=config.limits.max_attachment_bytes,
        message_limit=config.limits.max_message_bytes,
    )
    if form.honeypot and body.values.get(form.honeypot, "").strip():
        raise Refused(400, "a field that must stay empty was filled in", "honeypot")
    secret = ctx.app.services.signer.secret
    verdict = challenge.verify(body.values.get("altcha", ""), form, secret)
    if verdict.status:
        raise Refused(verdict.status, verdict.reason, "challenge")
    now = time.time()
    elapsed = now - verdict.issued
    if elapsed < form.min_fill_seconds:
        raise Refused(
            400, f"the form was sent {elapsed:.1f} s after it was opened: too fast", "fill_time"
        )
    submission = read(form, body.values, body.uploads, nonce_fallback=verdict.key[:64])
    msgid = message_id(form, submission, ctx.app.services.signer.domain_for(form.address))
    expires = verdict.issued + form.challenge_ttl_seconds
    if not state.replays.claim(verdict.key, msgid, expires, now):
        raise Refused(409, "this form was sent already: reload the page to send another", "replay")
    defences = {
        "challenge": "pass" if form.captcha else "free",
        "honeypot": "empty" if form.honeypot else "off",
        "fill_seconds": round(elapsed, 1),
        "origin": seen,
        "client": client,
        "rate": "ok",
    }
    try:
        admitted = await ctx.run_sync(
            _admit, ctx.app, form, submission, msgid, defences, str(request.base_url)
        )
    except TransientError as exc:
        raise Refused(
            503, f"temporarily unavailable: {exc}", "storage", {"Retry-After": "5"}
        ) from None
    except InputError as exc:
        raise Refused(413 if "limit" in str(exc) else 422, str(exc), "input") from None
    return _answer(form, submission, admitted, ctx, as_json)


@dataclass(frozen=True)
class Admitted:
    result: IngestResult | None  # None: held
    held: int | None = None  # the quarantine entry keeping it
    confirming: bool = False  # held until the submitter confirms the address


def _admit(
    app: App,
    form: WebformConfig,
    submission: Submission,
    msgid: str,
    defences: dict[str, Any],
    base_url: str,
) -> Admitted:
    """Count, build and ingest (or hold) the submission: the blocking part."""
    services = app.services
    routing = services.addresses.lookup(form.address)  # may read the database
    if routing is None:
        log.error("webform.no_routing_address", form=form.name, address=form.address)
        raise Refused(503, "this form is not set up: try again later", "config")
    now = services.clock()
    if form.confirm_email:  # counted against the cap once confirmed
        admitted = False
        defences = {**defences, "daily_cap": "counted when confirmed"}
    else:
        admitted = cap.reserve(app.db, form.name, now, form.daily_cap)
        defences = {**defences, "daily_cap": "ok" if admitted else f"over {form.daily_cap}, held"}
    template = form.template
    if (
        not template
        and form.hide_record_information
        and "acknowledgement" in (services.templates.names())
    ):
        template = "acknowledgement"
    try:
        raw = build(
            form,
            submission,
            msgid=msgid,
            now=now,
            secret=services.signer.secret,
            fields=case_fields(form, submission, template),
            defences=defences,
        )
    except BaseException:
        if admitted:
            cap.unreserve(app.db, form.name, now)
        raise
    limit = services.config.limits.max_message_bytes
    if len(raw) > limit:
        # Checked before anything is held: a held message over the limit could
        # never be released (the pipeline would refuse it every time).
        if admitted:
            cap.unreserve(app.db, form.name, now)
        raise Refused(
            413, f"the submission is {len(raw)} bytes as a message, over the {limit} limit", "size"
        )
    if form.confirm_email:
        sha, _ = services.blobs.put(raw)
        entry = confirm.hold_and_ask(
            app.db,
            form,
            routing,
            raw=raw,
            raw_sha256=sha,
            sender=submission.email,
            now=now,
            # Never the request's Host header: a forged one would send the
            # organisation's mail with a link to somebody else's site.
            base_url=app.config.web.public_url,
            secret=services.signer.secret,
            ttl_hours=app.config.verification.token_ttl_hours,
        )
        log.info("webform.confirming", form=form.name, quarantine_id=entry)
        return Admitted(None, entry, confirming=True)
    if not admitted:
        sha, _ = services.blobs.put(raw)
        entry = cap.hold(
            app.db,
            form.name,
            form.daily_cap,
            raw_sha256=sha,
            raw=raw,
            sender=submission.email,
            to=form.address,
            now=now,
        )
        log.info("webform.held", form=form.name, quarantine_id=entry)
        return Admitted(None, entry)
    envelope = Envelope(
        channel="web",
        mail_from=submission.email,
        rcpt_to=(form.address,),
        peer=str(defences.get("client", "")),
        routing_hint=form.address,
    )
    try:
        result = app.pipeline.ingest(raw, envelope)
    except BaseException:
        cap.unreserve(app.db, form.name, now)
        raise
    if result.outcome is Outcome.DUPLICATE:
        cap.unreserve(app.db, form.name, now)
    return Admitted(result)


def _answer(
    form: WebformConfig, submission: Submission, admitted: Admitted, ctx: ApiContext, as_json: bool
) -> Response:
    result, held = admitted.result, admitted.held
    if result is not None and result.outcome is Outcome.REJECTED:
        raise Refused(422, result.detail or "refused", "pipeline")
    case = result.case_number if result is not None else None
    shown = None if form.hide_record_information else case
    log.info(
        "webform.received",
        form=form.name,
        outcome=result.outcome.value if result else "held",
        case=case,
        held=held,
    )
    if as_json:
        data: dict[str, Any] = {"status": "received"}
        if shown is not None:
            data["case"] = shown
        if admitted.confirming:
            data["confirm"] = True
        elif held is not None:
            data["held"] = True
        code = 202
        if result is not None and result.outcome is Outcome.NEW_CASE:
            code = 201
        elif result is not None and result.outcome in (Outcome.APPENDED, Outcome.DUPLICATE):
            code = 200
        return JSONResponse(data, status_code=code, headers=SECURITY_HEADERS)
    if submission.ret_url and submission.ret_url in form.return_urls:
        target = submission.ret_url
    elif form.thank_you_url:
        target = form.thank_you_url
    else:
        ref = ctx.app.services.signer.reference(shown) if shown is not None else ""
        query = "?confirm=1" if admitted.confirming else (f"?ref={ref}" if ref else "")
        target = f"/web-to-case/{form.name}/thanks{query}"
    return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
