"""Configuration: every mistake is one precise line and exit 78; every key is documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from emaild.config import Config, load_config
from emaild.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

BAD = [
    pytest.param(
        "[storage]\nstate_dirr = '/tmp/x'\n", 2, "storage.state_dirr: unknown key", id="unknown-key"
    ),
    pytest.param("[limits]\nworkers = 'four'\n", 2, "limits.workers: wrong type", id="wrong-type"),
    pytest.param(
        "[[address]]\nname = 'No address'\n",
        1,
        "address[0].address: required key is missing",
        id="missing-required",
    ),
    pytest.param(
        "[[address]]\naddress = 'a@b.test'\n\n[[address]]\naddress = 'c@d.test'\n"
        "priority = 'Whenever'\n",
        6,
        "address[1].priority: Input should be",
        id="bad-value",
    ),
    pytest.param(
        "[[address]]\naddress = 'not-an-address'\n",
        2,
        "address[0].address: not an email",
        id="bad-address",
    ),
    pytest.param("[smtp\nlisten = 1\n", 1, "invalid TOML", id="syntax"),
    pytest.param(
        "[limits]\nmax_message_bytes = -5\n",
        2,
        "limits.max_message_bytes: Input should be",
        id="out-of-range",
    ),
]


@pytest.mark.parametrize(("toml", "line", "expected"), BAD)
def test_each_mistake_names_file_line_and_key(
    tmp_path: Path, toml: str, line: int, expected: str
) -> None:
    path = tmp_path / "emaild.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {"HOME": str(tmp_path)})
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(("toml", "line", "expected"), BAD)
def test_cli_exits_78_with_one_line(tmp_path: Path, toml: str, line: int, expected: str) -> None:
    path = tmp_path / "emaild.toml"
    path.write_text(toml)
    proc = subprocess.run(
        [sys.executable, "-m", "emaild", "--config", str(path), "check"],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"emaild: {path}:{line}: ")
    assert expected in lines[0]


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", {})


def test_duplicate_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "emaild.toml"
    path.write_text(
        "[[address]]\naddress = 'a@b.test'\naliases = ['help@b.test']\n"
        "[[address]]\naddress = 'help@b.test'\n"
    )
    with pytest.raises(ConfigError, match=r"help@b\.test is listed twice"):
        load_config(path, {"HOME": str(tmp_path)})


def test_no_config_is_the_embedded_default(tmp_path: Path) -> None:
    config = load_config(None, {"HOME": str(tmp_path)})
    assert [a.address for a in config.address] == ["support@example.com"]
    assert config.database_url == f"sqlite:///{tmp_path}/.local/state/emaild/emaild.db"


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "EMAILD_STATE_DIR": str(tmp_path / "s"),
        "EMAILD_DATABASE_URL": "postgresql+psycopg://u@h/db",
        "EMAILD_RULES_DIR": str(tmp_path / "r"),
        "EMAILD_SMTP_LISTEN": "127.0.0.2:2626",
        "EMAILD_LMTP_LISTEN": "127.0.0.2:2727",
        "EMAILD_SMTP_RELAY": "127.0.0.3:2828",
        "EMAILD_HTTP_LISTEN": "127.0.0.2:8026",
    }
    config = load_config(None, env)
    assert config.http.listen == "127.0.0.2:8026"
    assert config.state_dir == tmp_path / "s"
    assert config.database_url == "postgresql+psycopg://u@h/db"
    assert config.rules_dir == str(tmp_path / "r")
    assert config.smtp.listen == ["127.0.0.2:2626"]
    assert config.smtp.lmtp_listen == ["127.0.0.2:2727"]
    assert (config.relay.host, config.relay.port) == ("127.0.0.3", 2828)


def test_http_listen_is_off_by_default_and_tls_needs_both_files(tmp_path: Path) -> None:
    assert load_config(None, {"HOME": str(tmp_path)}).http.listen == ""
    path = tmp_path / "emaild.toml"
    path.write_text('[http]\nlisten = "127.0.0.1:8025"\ntls_cert = "cert.pem"\n')
    with pytest.raises(ConfigError, match="tls_key"):
        load_config(path, {"HOME": str(tmp_path)})
    path.write_text('[http]\nlisten = "127.0.0.1:8025"\n')
    off = load_config(path, {"HOME": str(tmp_path), "EMAILD_HTTP_LISTEN": ""})
    assert off.http.listen == ""  # the environment can switch the API off


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        out.append(prefix + name)
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        inner = args[0] if args else annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            out += _keys(inner, prefix + name + ".")
    return out


def test_shipped_config_documents_every_key_and_loads(tmp_path: Path) -> None:
    path = ROOT / "config" / "emaild.toml"
    text = path.read_text()
    load_config(path, {"HOME": str(tmp_path), "EMAILD_STATE_DIR": str(tmp_path)})
    lines = text.splitlines()
    for dotted in _keys(Config):
        key = dotted.rsplit(".", 1)[-1]
        pattern = re.compile(rf"^#?\s*(\[\[?{re.escape(key)}\]\]?|{re.escape(key)}\s*=)")
        hits = [i for i, line in enumerate(lines) if pattern.match(line.strip())]
        assert hits, f"{dotted} is not in config/emaild.toml"
        i = hits[0]
        # A comment explains it: on the line itself, or in the lines just above.
        context = [lines[i], *lines[max(0, i - 6) : i]]
        assert any("#" in line for line in context), f"{dotted} has no comment"


def test_file_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    path = conf_dir / "emaild.toml"
    path.write_text(
        "[smtp]\ntls_cert = 'tls/cert.pem'\ntls_key = '/abs/key.pem'\nauth_file = 'users'\n"
        "[relay]\npassword_file = 'relay.pw'\n[threading]\nsecret_file = 'secret'\n"
    )
    config = load_config(path, {"HOME": str(tmp_path)})
    assert config.smtp.tls_cert == str(conf_dir / "tls" / "cert.pem")
    assert config.smtp.tls_key == "/abs/key.pem"
    assert config.smtp.auth_file == str(conf_dir / "users")
    assert config.relay.password_file == str(conf_dir / "relay.pw")
    assert config.threading.secret_file == str(conf_dir / "secret")
