"""Shared fixtures: a real database per test (SQLite and PostgreSQL), the corpus, the CLI.

Every test that takes ``database_url`` (directly or through ``config``/``app``)
runs twice: on SQLite and on the local PostgreSQL. When CI=true a missing
PostgreSQL, Dovecot or corpus is a failure, never a skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cli_zygote as cli_zygote_module
import pytest
from cli_zygote import Zygote
from pg_databases import Postgres

from emaild.app import App
from emaild.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("EMAILD_CORPUS", ROOT.parent / "shared" / "corpus"))
PG_ADMIN_URL = os.environ.get(
    "EMAILD_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long runs (``slow``) first: spread over the workers from the start instead
    of one of them finishing the suite alone. The order is otherwise kept."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def require(condition: bool, why: str) -> None:
    """Skip locally, fail in CI: a test needing a missing server must not pass silently."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def corpus() -> Path:
    require(
        (CORPUS / "README.md").is_file(),
        f"this test needs the shared real-mail corpus, not found at {CORPUS} "
        "(expected ../shared/corpus beside the checkout, with its README.md; "
        "or set EMAILD_CORPUS=DIR)",
    )
    return CORPUS


# --- Dovecot: one throwaway IMAP server per run, a fresh user per test ----------------
@pytest.fixture(scope="session")
def dovecot() -> Iterator[Any]:
    """A running ``tests.dovecot.Dovecot`` on 127.0.0.1; ``dovecot.new_user()`` per test.

    Skips locally, fails in CI, when Dovecot is not installed or does not start.
    """
    import shutil
    import tempfile

    from dovecot import Dovecot, available

    require(available(), "dovecot is not installed (Debian: dovecot-imapd)")
    # Not under pytest's tmp dir: that is private (0700) and, as root, Dovecot's
    # unprivileged processes must traverse the server's directory.
    root = Path(tempfile.mkdtemp(prefix="emaild-dovecot-"))
    try:
        server = Dovecot.start(root)
    except RuntimeError as exc:
        shutil.rmtree(root, ignore_errors=True)
        require(False, str(exc))
        raise
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


# --- PostgreSQL: one migrated template per worker, one fresh copy per test -------------
@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = Postgres(PG_ADMIN_URL, os.getpid())
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        # The embedded default's location: the state directory.
        yield f"sqlite:///{tmp_path / 'state' / 'emaild.db'}"
        return
    pg: Postgres = request.getfixturevalue("postgres")
    require(not pg.error, pg.error)
    name = pg.create()
    yield pg.url(name)
    pg.drop(name)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def make_config(tmp_path: Path, state_dir: Path, database_url: str) -> Any:
    """Build a Config from TOML text, on this test's state dir and database."""

    def build(toml: str = "", **env: str) -> Config:
        path = tmp_path / "emaild.toml"
        path.write_text(toml, encoding="utf-8")
        environ = {
            "EMAILD_STATE_DIR": str(state_dir),
            "EMAILD_DATABASE_URL": database_url,
            "HOME": str(tmp_path),
        }
        environ.update(env)
        return load_config(path, environ)

    return build


@pytest.fixture
def config(make_config: Any) -> Config:
    return make_config()  # type: ignore[no-any-return]


@pytest.fixture
def app(config: Config) -> Iterator[App]:
    application = App.open(config)
    yield application
    application.close()


@pytest.fixture
def make_app(make_config: Any) -> Iterator[Any]:
    """Open an ``App`` from TOML text and environment overrides; all are closed at teardown."""
    opened: list[App] = []

    def make(toml: str = "", **env: str) -> App:
        application = App.open(make_config(toml, **env))
        opened.append(application)
        return application

    yield make
    for application in opened:
        application.close()


@pytest.fixture
def stages_app(make_app: Any) -> Any:
    """An app with a second routing address that only accepts one domain."""
    return make_app(
        '[[address]]\naddress = "support@example.com"\npriority = "High"\n'
        '[[address]]\naddress = "vip@example.com"\norigin = "VIP"\n'
        'accept_from = ["@partner.test"]\nreject_action = "quarantine"\n'
    )


@pytest.fixture
def cli_env(state_dir: Path, database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running ``emaild`` as a subprocess on this test's storage."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILD_")}
    env.update({"EMAILD_STATE_DIR": str(state_dir), "HOME": str(tmp_path)})
    # No test may reach a real MTA on port 25: outgoing mail goes to a closed port
    # unless the test points EMAILD_SMTP_RELAY at its own sink.
    env["EMAILD_SMTP_RELAY"] = "127.0.0.1:9"
    if not database_url.startswith("sqlite"):  # SQLite: the default in the state dir
        env["EMAILD_DATABASE_URL"] = database_url
    return env


@pytest.fixture(scope="session")
def cli_zygote() -> Zygote:
    """One process per test worker with emaild imported, forked for each CLI call."""
    return cli_zygote_module.shared()


@pytest.fixture
def run_cli(cli_env: dict[str, str], cli_zygote: Zygote) -> Any:
    """Run ``emaild ARGS`` in a new process; returns the CompletedProcess.

    The process is forked from ``cli_zygote`` (tests/cli_zygote.py): a fresh
    ``python -m emaild`` without paying the imports on every call.
    """

    def run(
        *args: str,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        full_env = dict(cli_env)
        full_env.update(env or {})
        return cli_zygote.run(list(args), input=input, env=full_env, timeout=timeout)

    return run


# --- a real SMTP relay on loopback (tests/relay_sink.py) -----------------------------
@pytest.fixture(scope="session")
def relay_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed (cert, key) for 127.0.0.1, made once per run with openssl."""
    from relay_sink import make_certificate

    return make_certificate(tmp_path_factory.mktemp("relay-tls"))


@pytest.fixture
def make_relay_sink() -> Iterator[Any]:
    """Factory for extra sinks (STARTTLS, AUTH): ``make_relay_sink(auth=("u", "p"))``."""
    from relay_sink import RelaySink

    sinks: list[RelaySink] = []

    def make(**kwargs: Any) -> RelaySink:
        sink = RelaySink(**kwargs).start()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.stop()


@pytest.fixture
def relay_sink(make_relay_sink: Any) -> Any:
    """A running plain-SMTP ``RelaySink``; ``relay_sink.relay_env`` points emaild at it."""
    return make_relay_sink()


# --- the daemon with its HTTP API on loopback (tests/apiserver.py) -------------------
@pytest.fixture
def make_api(make_app: Any, relay_sink: Any) -> Iterator[Any]:
    """``make_api(toml)``: a running daemon with the API, outbox delivering to ``relay_sink``."""
    from apiserver import API_TOML, LOOPBACK, ApiServer

    servers: list[ApiServer] = []

    def make(toml: str = "", **env: str) -> ApiServer:
        application = make_app(API_TOML + toml, **{**LOOPBACK, **relay_sink.relay_env, **env})
        server = ApiServer(application).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def api(make_api: Any) -> Any:
    """A running ``ApiServer`` with default config."""
    return make_api()


# --- blob stores: file, PostgreSQL, and S3 on a loopback moto server (tests/s3server.py) ---
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running ``S3Server`` (moto) on 127.0.0.1; ``s3_server.new_bucket()`` per test."""
    from s3server import S3Server, available

    require(available(), "moto[server] and boto3 are not installed (pip install -e '.[test]')")
    server = S3Server(tmp_path_factory.mktemp("s3"))
    try:
        server.start()
    except RuntimeError as exc:
        require(False, str(exc))
        raise
    yield server
    server.stop()


@pytest.fixture
def pg_database(postgres: Postgres) -> Iterator[Any]:
    """A migrated ``Database`` on a fresh PostgreSQL database (fails in CI if none)."""
    from emaild.store.database import Database

    require(not postgres.error, postgres.error)
    name = postgres.create()
    db = Database(postgres.url(name))
    yield db
    db.dispose()
    postgres.drop(name)


@pytest.fixture(params=["file", "postgresql", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An empty ``BlobStore`` of each backend; local temporary files under tmp_path/blobs."""
    from emaild.config import S3Config
    from emaild.store.blobs import FileBlobStore

    temp = tmp_path / "blobs" / "tmp"
    if request.param == "file":
        yield FileBlobStore(tmp_path / "blobs")
        return
    if request.param == "postgresql":
        from emaild.store.blobs.postgresql import PostgresBlobStore

        yield PostgresBlobStore(request.getfixturevalue("pg_database"), temp)
        return
    from emaild.store.blobs.s3 import S3BlobStore

    server = request.getfixturevalue("s3_server")
    store = S3BlobStore(S3Config(**server.settings(server.new_bucket())), temp)
    yield store
    store.close()
