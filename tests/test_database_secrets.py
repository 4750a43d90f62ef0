"""The NC database at rest and its password: the SQLite file and its directory private to
the service's user, the PostgreSQL password from `server.database_password_env` /
`_file` (SPEC 7.1) and never from site.yaml."""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.site import load_site
from agent.yamldoc import ConfigError
from api.auth import create_token
from api.store import Database, DatabaseUnavailable, open_database
from tests.conftest import POSTGRES


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which files are created world-readable by default."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_sqlite_database_its_directory_and_its_wal_are_private(
        tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "data" / "patrol.sqlite"
    db = Database(f"sqlite:///{path}")
    try:
        with db.write() as session:  # a write: the -wal and -shm files exist now
            create_token(session, name="t", role="admin")
            session.commit()
        files = [path, path.with_name("patrol.sqlite-wal"), path.with_name("patrol.sqlite-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert mode(path.parent) == 0o700
    finally:
        db.close()


def test_a_database_left_readable_by_others_is_made_private(tmp_path: Path,
                                                            umask_022: None) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "patrol.sqlite"
    Database(f"sqlite:///{path}").close()
    path.chmod(0o644)
    Database(f"sqlite:///{path}").close()
    assert mode(path) == 0o600
    assert mode(tmp_path) == 0o755  # a directory we did not create is left as it is


def site_yaml(tmp_path: Path, server: str) -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(f"site: {{id: central}}\nserver:\n{server}")
    return site


def test_a_password_in_the_database_url_is_refused_with_file_and_line(tmp_path: Path) -> None:
    site = site_yaml(tmp_path, "  listen: 127.0.0.1:8080\n"
                               "  database: postgresql://patrol:hunter2@db.example/patrol\n")
    with pytest.raises(ConfigError) as caught:
        load_site(site)
    [problem] = caught.value.problems
    assert (problem.line, problem.key) == (4, "server.database")
    assert "database_password_env" in problem.message and "hunter2" not in str(problem)


def test_a_password_for_sqlite_is_refused(tmp_path: Path) -> None:
    site = site_yaml(tmp_path, "  database_password_env: PATROL_DB_PASSWORD\n")
    with pytest.raises(ConfigError, match="postgresql"):
        load_site(site)


def test_an_unreadable_password_is_a_problem_of_patrol_check(tmp_path: Path) -> None:
    site = site_yaml(tmp_path, f"  database: '{POSTGRES}'\n"
                               "  database_password_file: secrets/db-password\n")
    with pytest.raises(ConfigError) as caught:
        load_site(site)
    [problem] = caught.value.problems
    assert problem.key == "server.database_password_file" and problem.line == 4
    assert "secrets/db-password" in problem.message
    # commands that skip the secrets check (patrol token) fail with one clear line
    config = load_site(site, secrets=False).config.server
    with pytest.raises(DatabaseUnavailable, match="database_password"):
        open_database(config)


@pytest.fixture
def role_with_password() -> Iterator[tuple[str, str, str]]:
    """A login role with a password on the local PostgreSQL, owning a fresh schema:
    (role, password, database URL without the password)."""
    role, password = f"patrol_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    schema = f"s_{role}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION {role}')
    try:
        yield role, password, (f"postgresql://{role}@127.0.0.1:5432/test"
                               f"?options=-csearch_path%3D{schema}")
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("source", ["env", "file"])
def test_the_postgresql_password_comes_from_env_or_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        role_with_password: tuple[str, str, str], source: str) -> None:
    """The local server trusts loopback, so logging in proves little: libpq's own record
    of the password it was given (`info.password`) proves the secret reached it; the
    test below proves it goes on the wire when a server asks."""
    role, password, url = role_with_password
    if source == "env":
        monkeypatch.setenv("PATROL_DB_PASSWORD", password)
        line = "  database_password_env: PATROL_DB_PASSWORD\n"
    else:
        (tmp_path / "db-password").write_text(password + "\n")
        line = "  database_password_file: db-password\n"
    site = load_site(site_yaml(tmp_path, f"  database: '{url}'\n{line}"))
    assert password not in site.config.server.database
    db = open_database(site.config.server)
    try:
        with db.engine.connect() as connection:
            raw = connection.connection.driver_connection
            assert raw is not None and raw.info.password == password
            assert connection.exec_driver_sql("SELECT current_user").scalar() == role
        with db.write() as session:  # the schema was migrated as that role
            create_token(session, name="t", role="admin")
            session.commit()
        assert password not in db.url and password not in repr(db.engine.url)
    finally:
        db.close()


class PasswordCatcher:
    """A server that speaks just enough of PostgreSQL's protocol to ask for a cleartext
    password and keep what the client sends: proof of the wire, whatever pg_hba says."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.passwords: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        length, code = struct.unpack("!ii", conn.recv(8))
        if code == 80877103:  # SSLRequest: no
            conn.sendall(b"N")
            length, code = struct.unpack("!ii", conn.recv(8))
        conn.recv(length - 8)  # the startup parameters
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind, length = conn.recv(1), struct.unpack("!i", conn.recv(4))[0]
        if kind == b"p":
            self.passwords.append(conn.recv(length - 4).rstrip(b"\0").decode())
        body = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"
        conn.sendall(b"E" + struct.pack("!i", len(body) + 4) + body)

    def close(self) -> None:
        self.sock.close()


def test_the_password_goes_on_the_wire_and_never_into_the_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catcher = PasswordCatcher()
    try:
        monkeypatch.setenv("PATROL_DB_PASSWORD", "s3cret-on-the-wire")
        site = load_site(site_yaml(
            tmp_path, f"  database: 'postgresql://patrol@127.0.0.1:{catcher.port}/patrol"
                      "?sslmode=disable&connect_timeout=5'\n"
                      "  database_password_env: PATROL_DB_PASSWORD\n"))
        with pytest.raises(DatabaseUnavailable) as caught:
            open_database(site.config.server)
        assert "s3cret-on-the-wire" in catcher.passwords
        assert "s3cret" not in str(caught.value)
        assert "password authentication failed" in str(caught.value)
    finally:
        catcher.close()
