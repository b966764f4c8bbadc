"""A plain install runs: the wheel carries the rules and templates it needs.

Builds the wheel (``pip wheel --no-deps``), installs it non-editable into a fresh
venv whose dependencies come from this venv's site-packages (no network), and
runs ``emaild check`` and ``emaild ingest`` there with no config at all, then
with the README's ``/etc/emaild/`` layout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailbuilder import build_mail

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=240, check=False, **kw)  # type: ignore[call-overload,no-any-return]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin/ directory of a fresh venv holding the wheel, installed non-editable."""
    base = tmp_path_factory.mktemp("wheel")
    # The wheel is built from a copy: the build must not depend on (or litter) the checkout.
    src = base / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "__pycache__"),
    )
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base), str(src)]
    )
    assert built.returncode == 0, built.stderr.decode()
    (wheel,) = base.glob("emaild-*.whl")
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr.decode()
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # Dependencies: this venv's site-packages, appended after the new venv's own
    # (a plain path line: the editable install's .pth finder here is not run).
    (purelib / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # The new venv's own interpreter runs pip (found through deps.pth), so the
    # installed script's shebang is the new venv's python; --ignore-installed keeps
    # it from uninstalling this venv's editable emaild, which it can see.
    installed = _run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--ignore-installed",
            str(wheel),
        ]
    )
    assert installed.returncode == 0, installed.stderr.decode()
    yield venv / "bin"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAILD_", "PYTHON"))}
    env.update({"HOME": str(home), "EMAILD_SMTP_RELAY": "127.0.0.1:9"})
    env.pop("XDG_STATE_HOME", None)
    env.pop("STATE_DIRECTORY", None)
    return env


def test_installed_wheel_checks_and_ingests_with_no_config(installed: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    python = installed / "python"
    where = _run(
        [str(python), "-c", "import emaild, sys; print(emaild.__file__)"], env=env, cwd=tmp_path
    )
    assert where.returncode == 0, where.stderr.decode()
    # The package imported is the installed copy, not the checkout.
    assert not where.stdout.decode().startswith(str(ROOT / "emaild")), where.stdout
    assert str(installed.parent) in where.stdout.decode()

    check = _run([str(installed / "emaild"), "check"], env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert b"template" in check.stdout and b"rule" in check.stdout

    raw = build_mail(message_id="<packaged@customer.test>")
    ingest = _run([str(installed / "emaild"), "ingest"], input=raw, env=env, cwd=tmp_path)
    assert ingest.returncode == 0, ingest.stderr.decode()
    assert ingest.stdout.strip() == b"1"
    # The default state directory is the XDG one under HOME, created private.
    state = tmp_path / ".local" / "state" / "emaild"
    assert (state / "emaild.db").is_file()


def test_installed_wheel_runs_with_the_documented_etc_layout(
    installed: Path, tmp_path: Path
) -> None:
    """README "Operations": config/emaild.toml copied as /etc/emaild/emaild.toml, as is."""
    etc = tmp_path / "etc" / "emaild"
    etc.mkdir(parents=True)
    shutil.copy(ROOT / "config" / "emaild.toml", etc / "emaild.toml")
    env = _env(tmp_path)
    env["EMAILD_STATE_DIR"] = str(tmp_path / "state")
    emaild = str(installed / "emaild")
    check = _run([emaild, "check", "--config", str(etc / "emaild.toml")], env=env, cwd="/")
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    # Edited rules and templates: the shipped ones copied next to the config.
    shutil.copytree(ROOT / "emaild" / "defaults" / "rules", etc / "rules")
    shutil.copytree(ROOT / "emaild" / "defaults" / "templates", etc / "templates")
    text = (etc / "emaild.toml").read_text()
    text = text.replace('rules_dir = ""', 'rules_dir = "rules"')
    text = text.replace('templates_dir = ""', 'templates_dir = "templates"')
    (etc / "emaild.toml").write_text(text)
    (etc / "templates" / "default.txt").write_text("{{ nonsense.field }}\n")
    bad = _run([emaild, "--config", str(etc / "emaild.toml"), "check"], env=env, cwd="/")
    # The copied directory is the one in use: breaking it is noticed.
    assert bad.returncode == 78, bad.stdout.decode() + bad.stderr.decode()
    assert str(etc / "templates" / "default.txt") in bad.stderr.decode() + bad.stdout.decode()


def test_the_wheel_carries_defaults_and_license_and_nothing_missing(installed: Path) -> None:
    (wheel,) = installed.parent.parent.glob("emaild-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in (ROOT / "emaild" / "defaults").rglob("*"):
        if shipped.is_file():
            assert str(shipped.relative_to(ROOT)) in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "emaild-0.1.0.data/data/share/man/man1/emaild.1" in names
    assert (installed.parent / "share" / "man" / "man1" / "emaild.1").is_file()
    metadata = zipfile.ZipFile(wheel).read("emaild-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata
