"""A real Postfix (Debian's package) in front of emaild, configured as the README says.

Each test starts a private Postfix instance (tests/postfix_server.py) whose
emaild lines are the README's own, with only paths and ports substituted, and
talks to its smtpd with smtplib as an outside MTA would:

- LMTP: ``emaild run`` listens for LMTP on a high loopback port; the transport
  map written by ``emaild postfix maps`` (compiled by the real postmap) points
  Postfix there.
- pipe: the README's master.cf entry runs this checkout's ``emaild ingest`` as
  the unprivileged ``emaild`` user, on a state directory that user owns.

Both show: mail from an outside sender becomes a case; an unknown recipient is
refused at RCPT by Postfix (nothing accepted, so nothing to bounce); the pipe
with an unwritable state directory defers (4.x.x, the mail stays queued) and
delivers after the fix and ``postqueue -f``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from mailbuilder import build_mail
from postfix_server import Postfix, available, readme_command, readme_snippet, substitute
from smtp_helpers import daemon_process, free_port

import emaild as emaild_package

OUTSIDE = "alice@customer.test"
SUPPORT = "support@example.com"
UNKNOWN = "nobody@example.com"
# The pipe runs this checkout's emaild (the venv's script), as the README's user.
EMAILD = str(Path(sys.executable).parent / "emaild")
PIPE_USER = "emaild"


@pytest.fixture
def root() -> Iterator[Path]:
    """A private directory Postfix's and emaild's unprivileged users can traverse.

    Not pytest's tmp_path: that is private to root (0700).
    """
    require(not available(), available())
    path = Path(tempfile.mkdtemp(prefix="emaild-postfix-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def postfix(root: Path) -> Iterator[Any]:
    """``postfix(main_cf, master_cf)`` configures an instance; stopped at teardown if started."""
    made: list[Postfix] = []

    def configure(main_cf: list[str], master_cf: list[str]) -> Postfix:
        server = Postfix.configure(root, main_cf=main_cf, master_cf=master_cf)
        made.append(server)
        return server

    yield configure
    for server in made:
        server.stop()


def readme_paths(root: Path, **more: str) -> dict[str, str]:
    """The README's paths, as this test's."""
    return {
        "/etc/postfix/emaild": str(root / "maps"),
        "/etc/emaild/emaild.toml": str(root / "emaild.toml"),
        "/var/lib/emaild": str(root / "state"),
        "/opt/emaild/bin/emaild": EMAILD,
        **more,
    }


def write_config(root: Path, paths: dict[str, str], transport: str = "") -> Path:
    """emaild.toml: one routing address, the state dir and the README's [postfix] lines."""
    postfix_lines = substitute(readme_snippet("/etc/emaild/emaild.toml", 0), paths)
    if transport:
        postfix_lines = [
            f"transport = {json.dumps(transport)}" if line.startswith("transport =") else line
            for line in postfix_lines
        ]
    text = "\n".join(
        [
            f'[storage]\nstate_dir = "{root / "state"}"\n',
            f'[[address]]\naddress = "{SUPPORT}"\n',
            *postfix_lines,
        ]
    )
    path = root / "emaild.toml"
    path.write_text(text + "\n")
    path.chmod(0o644)
    return path


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EMAILD_")}
    base["EMAILD_SMTP_RELAY"] = "127.0.0.1:9"  # never a real MTA
    return subprocess.run(
        args, env={**base, **(env or {})}, capture_output=True, text=True, timeout=60, check=False
    )


def readme_run(
    prefix: tuple[str, ...], paths: dict[str, str], env: dict[str, str], run_as: str = ""
) -> None:
    """Run the README's command line starting with ``prefix``, with the test's paths."""
    words = substitute(readme_command(*prefix, run_as=run_as), paths)
    done = run(words, env)
    assert done.returncode == 0, f"{words}: {done.stdout}{done.stderr}"


def cases(config: Path, as_user: str = "", emaild: str = EMAILD) -> list[dict[str, Any]]:
    """``emaild cases list --json``, as ``as_user`` when given (it owns the state)."""
    command = [emaild, "cases", "list", "--json", "--config", str(config)]
    if as_user:
        command = ["runuser", "-u", as_user, "--", *command]
    listed = run(command, {"HOME": str(config.parent)})
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def assert_outside_mail_is_a_case(
    server: Postfix, config: Path, as_user: str = "", emaild: str = EMAILD
) -> None:
    """An outside sender's mail to a support address and an unknown one, in one session."""
    raw = build_mail(to=f"{SUPPORT}, {UNKNOWN}", subject="Printer on fire")
    queue_id, refused = server.send(OUTSIDE, [SUPPORT, UNKNOWN], raw)
    # Refused at RCPT by Postfix itself: never accepted, so never bounced later.
    assert list(refused) == [UNKNOWN], refused
    assert refused[UNKNOWN].startswith("550 5.1.1"), refused
    assert "User unknown in relay recipient table" in refused[UNKNOWN]
    [delivery] = server.wait_delivery(queue_id)
    assert (delivery.recipient, delivery.status) == (SUPPORT, "sent"), delivery.line
    [case] = cases(config, as_user, emaild)
    assert case["subject"] == "Printer on fire"
    assert server.queue() == []
    assert "status=bounced" not in server.log()


def test_lmtp_postfix_delivers_to_the_daemon_and_refuses_unknown_recipients(
    root: Path, postfix: Any
) -> None:
    lmtp_port = free_port()
    paths = readme_paths(root, **{"127.0.0.1:2526": f"127.0.0.1:{lmtp_port}"})
    config = write_config(root, paths)
    (root / "state").mkdir(mode=0o700)
    server = postfix(substitute(readme_snippet("/etc/postfix/main.cf"), paths), [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILD_")}
    env.update(HOME=str(root), EMAILD_SMTP_RELAY="127.0.0.1:9")
    env["EMAILD_LMTP_LISTEN"] = f"127.0.0.1:{lmtp_port}"
    # As the README orders it: the maps (compiled by the real postmap), then Postfix.
    readme_run(("/opt/emaild/bin/emaild", "postfix", "maps"), paths, server.env)
    assert (root / "maps" / "emaild_transport.db").is_file()
    transport = (root / "maps" / "emaild_transport").read_text()
    assert f"{SUPPORT}\tlmtp:inet:127.0.0.1:{lmtp_port}\n" in transport
    server.start()  # a README line Postfix rejects fails here
    with daemon_process(env, root, args=["--config", str(config)]):
        assert_outside_mail_is_a_case(server, config)
    # Not an open relay either: another domain is refused at RCPT.
    queue_id, refused = server.send(OUTSIDE, ["someone@elsewhere.test"], build_mail())
    assert queue_id == ""
    assert "Relay access denied" in refused["someone@elsewhere.test"]


def runs_as_pipe_user(script: str) -> str:
    """'' when the pipe user can run ``script --version``, else why not."""
    done = run(["runuser", "-u", PIPE_USER, "--", script, "--version"])
    return "" if done.returncode == 0 else f"{script}: {done.stderr.strip()}"


def pipe_emaild(root: Path) -> tuple[str, str]:
    """(this checkout's emaild as the pipe user can run it, or '', why not).

    The venv's script when that user can run it. The venv's interpreter may be
    out of its reach (a pyenv build under root's private home): then the same
    script runs under the system's python of the same version, over the
    venv's site-packages (so the code is still this checkout's).
    """
    try:
        pwd.getpwnam(PIPE_USER)
    except KeyError:
        return "", f"no user {PIPE_USER!r} (scripts/test creates it as the README says)"
    why = runs_as_pipe_user(EMAILD)
    if not why:
        return EMAILD, ""
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not os.access(system, os.X_OK):
        return "", f"{why}; and no {system} to run it with"
    bridge = root / "pipe-venv"
    made = run([system, "-m", "venv", "--without-pip", str(bridge)])
    assert made.returncode == 0, made.stderr
    purelib = sysconfig.get_path("purelib")
    bridged = sysconfig.get_path("purelib", vars={"base": str(bridge), "platbase": str(bridge)})
    # An import line in a .pth runs: addsitedir also runs the editable install's .pth.
    (Path(bridged) / "emaild-checkout.pth").write_text(
        f"import site; site.addsitedir({purelib!r})\n"
    )
    script = bridge / "bin" / "emaild"
    body = Path(EMAILD).read_text().split("\n", 1)[1]
    script.write_text(f"#!{bridge / 'bin' / 'python3'}\n{body}")
    script.chmod(0o755)
    why_not = runs_as_pipe_user(str(script))
    if why_not:
        # The checkout itself is out of that user's reach (cloned under a private
        # directory): the same code, copied where the user can read it.
        lib = root / "pipe-lib"
        shutil.copytree(purelib, lib, symlinks=True, ignore=shutil.ignore_patterns("__editable__*"))
        shutil.copytree(Path(emaild_package.__file__).parent, lib / "emaild")
        (Path(bridged) / "emaild-checkout.pth").write_text(
            f"import site; site.addsitedir({str(lib)!r})\n"
        )
        why_not = runs_as_pipe_user(str(script))
    return ("", f"{why}; {why_not}") if why_not else (str(script), "")


def test_pipe_defers_while_the_state_dir_is_unwritable_and_delivers_after_the_fix(
    root: Path, postfix: Any
) -> None:
    emaild, why = pipe_emaild(root)
    require(not why, why)
    paths = readme_paths(root, **{"/opt/emaild/bin/emaild": emaild})
    pipe_toml = tomllib.loads("\n".join(readme_snippet("/etc/emaild/emaild.toml", 1)))
    config = write_config(root, paths, transport=pipe_toml["postfix"]["transport"])
    # The state and maps directories, owned by the pipe's user.
    readme_run(("install", "-d", "-o", PIPE_USER, "-g", PIPE_USER, "-m", "0700"), paths, {})
    readme_run(("install", "-d", "-o", PIPE_USER, "-g", PIPE_USER, "-m", "0755"), paths, {})
    server = postfix(
        substitute(
            readme_snippet("/etc/postfix/main.cf")
            + readme_snippet("/etc/postfix/main.cf: as for LMTP above, plus"),
            paths,
        ),
        substitute(
            readme_snippet("/etc/postfix/master.cf (the argv line is one logical line, indented)"),
            paths,
        ),
    )
    readme_run(("/opt/emaild/bin/emaild", "postfix", "maps"), paths, server.env, PIPE_USER)
    assert f"{SUPPORT}\temaild:\n" in (root / "maps" / "emaild_transport").read_text()
    server.start()  # a README line Postfix rejects fails here
    assert_outside_mail_is_a_case(server, config, PIPE_USER, emaild)

    # The state directory stops being writable for the pipe's user.
    (root / "state").chmod(0o500)
    later = build_mail(subject="Still on fire", message_id="<later@customer.test>")
    queue_id, refused = server.send(OUTSIDE, [SUPPORT], later)
    assert refused == {}
    [deferred] = server.wait_delivery(queue_id)
    assert deferred.status == "deferred" and deferred.dsn.startswith("4."), deferred.line
    server.wait_queued(queue_id, "deferred")
    [queued] = server.queue()
    assert (queued["queue_id"], queued["queue_name"]) == (queue_id, "deferred")
    assert "status=bounced" not in server.log()

    # The fix is the README's own line; then Postfix retries at once.
    readme_run(("install", "-d", "-o", PIPE_USER, "-g", PIPE_USER, "-m", "0700"), paths, {})
    server.flush()
    delivered = server.wait_delivery(queue_id, count=2)[-1]
    assert delivered.status == "sent", delivered.line
    assert server.queue() == []
    subjects = [case["subject"] for case in cases(config, PIPE_USER, emaild)]
    assert sorted(subjects) == ["Printer on fire", "Still on fire"]
    assert "status=bounced" not in server.log()
