"""Console users (SPEC 7.4): scrypt hashes, sign-in with lock-out, sessions that end,
and `patrol user`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from api.console import users
from api.errors import Conflict, Invalid, NotFound
from api.store import ConsoleSession, Database, User

NOW = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
PASSWORD = "plant-room-7"


def test_only_a_salted_scrypt_hash_is_stored(db: Database) -> None:
    with db.write() as session:
        users.add_user(session, name="li.wei", password=PASSWORD, role="engineer")
        users.add_user(session, name="wang.fang", password=PASSWORD, role="quality")
        session.commit()
    with db.session() as session:
        hashes = session.scalars(select(User.password_hash)).all()
    assert all(h.startswith("scrypt$32768$8$1$") and PASSWORD not in h for h in hashes)
    assert hashes[0] != hashes[1]  # a salt each
    assert users.check_password(PASSWORD, hashes[0])
    assert not users.check_password(PASSWORD + "x", hashes[0])
    assert not users.check_password(PASSWORD, "md5$whatever")


@pytest.mark.parametrize(("fields", "reason"), [
    ({"password": "short"}, "at least 10"),
    ({"role": "agent"}, "a user's role"),
    ({"name": " padded"}, "user name"),
    ({"sites": ["Tower A"]}, "not a site id"),
    ({"language": "fr"}, "a language"),
])
def test_a_bad_user_is_refused_with_the_reason(db: Database, fields: dict[str, object],
                                               reason: str) -> None:
    values = {"name": "li.wei", "password": PASSWORD, "role": "engineer", **fields}
    with db.write() as session, pytest.raises(Invalid, match=reason):
        users.add_user(session, **values)  # type: ignore[arg-type]


def test_names_are_unique(db: Database) -> None:
    with db.write() as session:
        users.add_user(session, name="li.wei", password=PASSWORD, role="engineer")
        with pytest.raises(Conflict):
            users.add_user(session, name="li.wei", password=PASSWORD, role="admin")


def test_five_wrong_passwords_lock_the_user_out_even_with_the_right_one(db: Database) -> None:
    with db.write() as session:
        users.add_user(session, name="li.wei", password=PASSWORD, role="engineer")
        session.commit()
    for attempt in range(users.LOCK_AFTER):
        with db.write() as session:
            with pytest.raises(users.SignInRefused, match="wrong name or password"):
                users.sign_in(session, "li.wei", f"guess-{attempt}-xxxx", NOW)
            session.commit()
    with db.write() as session, pytest.raises(users.SignInRefused, match="try again later"):
        users.sign_in(session, "li.wei", PASSWORD, NOW + timedelta(minutes=1))
    with db.write() as session:
        later = NOW + users.LOCK_FOR + timedelta(seconds=1)
        assert users.sign_in(session, "li.wei", PASSWORD, later).name == "li.wei"


def test_an_unknown_name_reads_like_a_wrong_password(db: Database) -> None:
    with db.write() as session, pytest.raises(users.SignInRefused) as refused:
        users.sign_in(session, "nobody", PASSWORD, NOW)
    assert str(refused.value) == "wrong name or password"


def test_a_session_ends_when_idle_too_old_disabled_or_the_password_changes(
        db: Database) -> None:
    with db.write() as session:
        user = users.add_user(session, name="li.wei", password=PASSWORD, role="engineer",
                              sites=["tower-a"])
        cookies = [users.open_session(session, user, NOW) for _ in range(4)]
        session.commit()
    with db.write() as session:
        signed = users.resume(session, cookies[0], NOW + timedelta(minutes=30))
        assert signed is not None
        assert (signed.principal.name, signed.principal.role) == ("li.wei", "engineer")
        assert signed.principal.sites == frozenset({"tower-a"})
        assert signed.principal.token_id < 0  # never a token's id
        assert users.csrf_ok(signed, signed.csrf) and not users.csrf_ok(signed, "forged")
        assert users.resume(session, cookies[1], NOW + users.IDLE + timedelta(seconds=1)) \
            is None
        assert users.resume(session, "not-a-session", NOW) is None
        session.commit()
    with db.write() as session:
        assert users.resume(session, cookies[2], NOW + users.LONGEST + timedelta(minutes=1)) \
            is None
        users.set_password(session, "li.wei", "a-new-password", NOW)
        session.commit()
    with db.write() as session:
        assert users.resume(session, cookies[3], NOW + timedelta(minutes=5)) is None
        assert session.scalar(select(func.count()).select_from(ConsoleSession)) == 0
        fresh = users.open_session(session, users.find_user(session, "li.wei"), NOW)
        users.set_disabled(session, "li.wei", True)
        session.commit()
    with db.write() as session:
        assert users.resume(session, fresh, NOW) is None
        with pytest.raises(users.SignInRefused, match="disabled"):
            users.sign_in(session, "li.wei", "a-new-password", NOW)
        with pytest.raises(NotFound):
            users.set_disabled(session, "nobody", True)


def _patrol(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=tmp_path,
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_patrol_user_reads_the_password_from_stdin_and_manages_users(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(textwrap.dedent("""\
        site:
          id: tower-a
        server:
          database: sqlite:///data/patrol.sqlite
    """), encoding="utf-8")
    added = _patrol(tmp_path, "user", "add", "-c", "site.yaml", "li.wei", "--role",
                    "engineer", "--site", "tower-a", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    short = _patrol(tmp_path, "user", "add", "-c", "site.yaml", "wang.fang", "--role",
                    "quality", stdin="short\n")
    assert short.returncode == 2 and "at least 10" in short.stderr
    assert _patrol(tmp_path, "user", "disable", "-c", "site.yaml", "li.wei").returncode == 0
    listing = _patrol(tmp_path, "user", "list", "-c", "site.yaml")
    assert listing.stdout.split("\t")[:2] == ["li.wei", "engineer"]
    assert "disabled" in listing.stdout and "wang.fang" not in listing.stdout
    missing = _patrol(tmp_path, "user", "enable", "-c", "site.yaml", "nobody")
    assert missing.returncode == 2 and "no user 'nobody'" in missing.stderr
    assert _patrol(tmp_path, "user", "enable", "-c", "site.yaml", "li.wei").returncode == 0
    changed = _patrol(tmp_path, "user", "passwd", "-c", "site.yaml", "li.wei",
                      stdin="another-password\n")
    assert changed.returncode == 0, changed.stderr
    db = Database(f"sqlite:///{tmp_path / 'data' / 'patrol.sqlite'}")
    try:
        with db.write() as session:
            assert users.sign_in(session, "li.wei", "another-password", NOW).sites == \
                ["tower-a"]
    finally:
        db.close()
