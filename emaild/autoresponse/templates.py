"""Auto-response templates: Jinja2 in a sandbox, checked against a sample at load.

A template is ``NAME.txt`` (required) plus ``NAME.html`` (optional) in the
templates directory. The text file starts with header lines, then a blank
line, then the body::

    Subject: We received your message: {{ case.subject }}
    Hide-Record-Information: no

    Hello {{ customer.name }}, ...

``Subject`` is required. ``Hide-Record-Information: yes`` sends a generic
acknowledgement: the template gets no ``case`` fields at all and no case token
is added to the subject (the signed Message-ID still threads replies).

Every template is rendered against a sample context when it is loaded, so a
misspelt or unknown field is a ``file:line: problem`` at ``emaild check`` and
on reload, never a blank in a customer's inbox (``StrictUndefined``). The
sandbox keeps template authors away from Python internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FunctionLoader, StrictUndefined, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from emaild.errors import ConfigError

HEADER_NAMES = ("subject", "hide-record-information")
MAX_TEMPLATE_BYTES = 256 * 1024


class FieldGroup(dict[str, Any]):
    """A named group of merge fields (``case``, ``customer``...), for error messages."""

    def __init__(self, label: str, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.label = label


class _StrictFields(StrictUndefined):
    """StrictUndefined that names the missing field as the template wrote it."""

    @property
    def _undefined_message(self) -> str:
        obj = self._undefined_obj
        name = self._undefined_name
        if self._undefined_hint:
            return self._undefined_hint
        if isinstance(obj, FieldGroup):
            known = ", ".join(sorted(obj))
            return f"unknown field {obj.label}.{name} (known: {known})"
        if obj is missing:
            return f"unknown field {name!r}"
        return f"{type(obj).__name__} value has no field {name!r}"


@dataclass(frozen=True)
class Rendered:
    """One rendered auto-response: subject, text body, optional HTML body."""

    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class _Part:
    """One compiled piece of a template, with where its source starts in its file."""

    file: Path
    first_line: int
    key: str


@dataclass(frozen=True)
class Template:
    """A loaded template: its parts and options."""

    name: str
    hide_record_information: bool
    subject: _Part
    text: _Part
    html: _Part | None


def sample_fields(hide_record_information: bool = False) -> dict[str, FieldGroup]:
    """Merge fields filled with plausible values: every template is rendered with these."""
    return merge_fields(
        case={
            "number": "00000042",
            "id": 42,
            "subject": "Printer on fire",
            "priority": "High",
            "status": "new",
            "origin": "Email",
            "category": "",
            "token": "[Case #00000042]",
        },
        customer={"name": "Alice Example", "address": "alice@example.net"},
        message={
            "subject": "Printer on fire",
            "text": "It is on fire.\n",
            "date": "Mon, 23 Nov 2026 09:00:00 +0000",
            "sender_name": "Alice Example",
            "sender_address": "alice@example.net",
        },
        routing={"name": "Example Support", "address": "support@example.com"},
        agent={"name": "helpdesk", "text": "The new firmware fixes it.\n"},
        hide_record_information=hide_record_information,
    )


def merge_fields(
    *,
    case: Mapping[str, Any],
    customer: Mapping[str, Any],
    message: Mapping[str, Any],
    routing: Mapping[str, Any],
    hide_record_information: bool,
    agent: Mapping[str, Any] | None = None,
) -> dict[str, FieldGroup]:
    """The variables a template sees. Hidden record information means no ``case``.

    ``agent`` is what an agent's reply adds (``name``: who sent it, ``text``:
    what they wrote); in an auto-response both are empty.
    """
    fields = {
        "customer": FieldGroup("customer", customer),
        "message": FieldGroup("message", message),
        "routing": FieldGroup("routing", routing),
        "agent": FieldGroup("agent", agent or {"name": "", "text": ""}),
    }
    if not hide_record_information:
        # The routing address display name is also a case field, as in the reference product.
        values = dict(case)
        values.setdefault("routing_name", routing.get("name", ""))
        values.setdefault("routing_address", routing.get("address", ""))
        fields["case"] = FieldGroup("case", values)
    return fields


class TemplateSet:
    """Every template in one directory, compiled and checked once."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._sources: dict[str, tuple[str, str]] = {}
        self.env = SandboxedEnvironment(
            undefined=_StrictFields,
            loader=FunctionLoader(self._source),
            # HTML parts escape customer text; text parts are sent as written.
            autoescape=lambda name: bool(name and name.endswith(".html")),
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self.templates: dict[str, Template] = {}

    def _source(self, key: str) -> tuple[str, str, Any]:
        source, filename = self._sources[key]
        return source, filename, lambda: True

    # --- loading ----------------------------------------------------------------
    @classmethod
    def load(cls, directory: Path | None) -> TemplateSet:
        """Load and check every ``*.txt`` template; raises ``ConfigError`` on the first problem."""
        templates = cls(directory)
        if directory is None:
            return templates
        if not directory.is_dir():
            raise ConfigError(
                f"templates directory {directory} does not exist", key="templates_dir"
            )
        for path in sorted(directory.glob("*.txt")):
            templates._load_one(path)
        for path in sorted(directory.glob("*.html")):
            if path.stem not in templates.templates:
                raise ConfigError(
                    f"HTML part without a text part ({path.stem}.txt is missing)", file=str(path)
                )
        return templates

    def _load_one(self, path: Path) -> None:
        name = path.stem
        text = _read(path)
        lines = text.splitlines(keepends=True)
        headers: dict[str, tuple[str, int]] = {}
        body_start = None
        for index, line in enumerate(lines):
            number = index + 1
            if not line.strip():
                body_start = number + 1
                break
            key, sep, value = line.partition(":")
            key = key.strip().lower()
            if not sep or key not in HEADER_NAMES:
                raise ConfigError(
                    f"expected a header line ({', '.join(HEADER_NAMES)}), a blank line, "
                    f"then the body; got {line.strip()[:60]!r}",
                    file=str(path),
                    line=number,
                )
            if key in headers:
                raise ConfigError(f"{key} given twice", file=str(path), line=number)
            headers[key] = (value.strip(), number)
        if body_start is None:
            raise ConfigError(
                "no blank line between the header lines and the body", file=str(path), line=1
            )
        if "subject" not in headers:
            raise ConfigError("missing Subject: line", file=str(path), line=1)
        hide_value, hide_line = headers.get("hide-record-information", ("no", 0))
        if hide_value.lower() not in ("yes", "no", "true", "false"):
            raise ConfigError(
                f"Hide-Record-Information must be yes or no, got {hide_value!r}",
                file=str(path),
                line=hide_line,
            )
        subject_value, subject_line = headers["subject"]
        subject = self._compile(path, subject_line, f"{name}.txt#subject", subject_value)
        body = self._compile(path, body_start, f"{name}.txt", "".join(lines[body_start - 1 :]))
        html_path = path.with_suffix(".html")
        html = None
        if html_path.is_file():
            html = self._compile(html_path, 1, f"{name}.html", _read(html_path))
        template = Template(
            name=name,
            hide_record_information=hide_value.lower() in ("yes", "true"),
            subject=subject,
            text=body,
            html=html,
        )
        # Render once with every field filled: unknown fields fail here, at load.
        self.render_template(template, sample_fields(template.hide_record_information))
        self.templates[name] = template

    def _compile(self, file: Path, first_line: int, key: str, source: str) -> _Part:
        self._sources[key] = (source, f"{file}::{key}")
        part = _Part(file=file, first_line=first_line, key=key)
        try:
            self.env.get_template(key)
        except TemplateSyntaxError as exc:
            raise ConfigError(
                exc.message or "syntax error", file=str(file), line=first_line + (exc.lineno - 1)
            ) from None
        return part

    # --- rendering ----------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self.templates

    def names(self) -> list[str]:
        return sorted(self.templates)

    def get(self, name: str) -> Template | None:
        return self.templates.get(name)

    def render(self, name: str, fields: Mapping[str, Any]) -> Rendered:
        """Render template ``name``; raises ``KeyError`` if there is no such template."""
        return self.render_template(self.templates[name], fields)

    def render_template(self, template: Template, fields: Mapping[str, Any]) -> Rendered:
        """Render all parts of ``template``; a field error raises ``ConfigError`` file:line."""
        subject = self._render(template.subject, fields)
        text = self._render(template.text, fields)
        html = self._render(template.html, fields) if template.html is not None else ""
        return Rendered(subject=" ".join(subject.split()), text=text, html=html)

    def _render(self, part: _Part, fields: Mapping[str, Any]) -> str:
        try:
            return self.env.get_template(part.key).render(**fields)
        except Exception as exc:  # any failure inside a template is the template's fault
            line = _template_line(exc, self._sources[part.key][1])
            problem = _problem(exc)
            if "'case'" in problem and "case" not in fields:
                problem += " (Hide-Record-Information: yes templates get no case fields)"
            raise ConfigError(
                problem,
                file=str(part.file),
                line=part.first_line + line - 1 if line else part.first_line,
            ) from None


def _problem(exc: BaseException) -> str:
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {exc}"
    return str(exc) or type(exc).__name__


def _template_line(exc: BaseException, filename: str) -> int:
    """The template line an error was raised on (Jinja rewrites tracebacks to template lines)."""
    line = 0
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from None
    if len(data) > MAX_TEMPLATE_BYTES:
        raise ConfigError(f"template over {MAX_TEMPLATE_BYTES} bytes", file=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 (byte {exc.start})", file=str(path), line=data[: exc.start].count(b"\n") + 1
        ) from None
