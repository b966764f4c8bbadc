"""Templates: a mistake is ``file:line: problem`` at load and at ``emaild check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emaild.autoresponse import load_templates
from emaild.autoresponse.templates import TemplateSet, sample_fields
from emaild.config import DEFAULTS_DIR, load_config
from emaild.errors import EX_CONFIG, ConfigError

SHIPPED = DEFAULTS_DIR / "templates"


def test_shipped_templates_render_every_field() -> None:
    templates = TemplateSet.load(SHIPPED)
    assert {"default", "acknowledgement"} <= set(templates.names())
    default = templates.render("default", sample_fields())
    assert default.subject == "[Case #00000042] We received your message: Printer on fire"
    assert "Hello Alice Example," in default.text and "00000042" in default.text
    assert "<strong>00000042</strong>" in default.html
    ack = templates.get("acknowledgement")
    assert ack is not None and ack.hide_record_information
    rendered = templates.render("acknowledgement", sample_fields(hide_record_information=True))
    assert "42" not in rendered.subject + rendered.text and rendered.html == ""


def test_html_escapes_customer_text_and_text_does_not(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("Subject: {{ customer.name }}\n\n{{ customer.name }}\n")
    (tmp_path / "t.html").write_text("<p>{{ customer.name }}</p>\n")
    fields = sample_fields()
    fields["customer"]["name"] = "<script>x</script> & co"
    out = TemplateSet.load(tmp_path).render("t", fields)
    assert out.text == "<script>x</script> & co\n"
    assert out.html == "<p>&lt;script&gt;x&lt;/script&gt; &amp; co</p>\n"


BAD = [
    (
        "unknown-field",
        "Subject: Hi\n\nline 3\n{{ customer.nmae }}\n",
        4,
        "unknown field customer.nmae (known: address, name)",
    ),
    ("unknown-in-subject", "Subject: {{ case.nubmer }}\n\nx\n", 1, "unknown field case.nubmer"),
    ("unknown-group", "Subject: x\n\n\n{{ ticket.id }}\n", 4, "unknown field 'ticket'"),
    ("syntax", "Subject: x\n\nok\n{% if case.status %}\n", 4, "Unexpected end of template"),
    ("no-subject", "Hide-Record-Information: no\n\nx\n", 1, "missing Subject: line"),
    ("bad-header", "Subjet: x\n\nx\n", 1, "expected a header line"),
    ("no-blank-line", "Subject: x\n", 1, "no blank line"),
    (
        "hidden-case",
        "Subject: x\nHide-Record-Information: yes\n\n{{ case.number }}\n",
        4,
        "Hide-Record-Information: yes templates get no case fields",
    ),
    ("unsafe", "Subject: x\n\n{{ customer.__class__ }}\n", 3, "not allowed in a template"),
    ("bad-filter", "Subject: x\n\n{{ customer.name | shout }}\n", 3, "No filter named 'shout'"),
]


@pytest.mark.parametrize(
    ("source", "line", "problem"), [pytest.param(*b[1:], id=b[0]) for b in BAD]
)
def test_template_mistakes_are_file_line_problem(
    tmp_path: Path, source: str, line: int, problem: str
) -> None:
    path = tmp_path / "broken.txt"
    path.write_text(source)
    with pytest.raises(ConfigError) as caught:
        TemplateSet.load(tmp_path)
    assert caught.value.file == str(path)
    assert caught.value.line == line
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_html_part_without_text_part(tmp_path: Path) -> None:
    (tmp_path / "lonely.html").write_text("<p>hi</p>")
    with pytest.raises(ConfigError, match=r"lonely\.txt is missing"):
        TemplateSet.load(tmp_path)


def test_routing_address_naming_a_missing_template(tmp_path: Path) -> None:
    config_file = tmp_path / "emaild.toml"
    config_file.write_text(
        '[[address]]\naddress = "support@example.com"\nauto_response = "defualt"\n'
    )
    config = load_config(config_file, {"EMAILD_STATE_DIR": str(tmp_path)})
    with pytest.raises(ConfigError) as caught:
        load_templates(config)
    assert str(caught.value).startswith(f"{config_file}:3: address[0].auto_response: ")
    assert "no template 'defualt'" in caught.value.problem


def test_emaild_check_reports_template_errors(run_cli: Any, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "default.txt").write_text("Subject: Hi {{ customer.nmae }}\n\nx\n")
    done = run_cli("check", env={"EMAILD_TEMPLATES_DIR": str(templates)})
    assert done.returncode == EX_CONFIG
    assert done.stderr.decode().strip() == (
        f"emaild: {templates / 'default.txt'}:1: unknown field customer.nmae (known: address, name)"
    )
    ok = run_cli("check")
    assert ok.returncode == 0, ok.stderr
    assert b"templates" in ok.stdout


def test_reload_keeps_the_old_templates_when_the_new_ones_are_broken(
    make_config: Any, make_app: Any, tmp_path: Path
) -> None:

    app = make_app()
    try:
        before = app.services.templates
        broken = tmp_path / "broken-templates"
        broken.mkdir()
        (broken / "default.txt").write_text("Subject: x\n\n{{ nope }}\n")
        with pytest.raises(ConfigError):
            app.reload(make_config(EMAILD_TEMPLATES_DIR=str(broken)))
        assert app.services.templates is before
    finally:
        app.close()
