"""Console accounts: a SQLite file in the state directory (``STATE_DIR/console/users.sqlite3``), passwords
hashed with Argon2id (argon2-cffi, its default parameters — RFC 9106's second recommended option), managed
with ``cems console user add|passwd|disable``.

The same file keeps the server-side sessions (a random id per login, stored as its SHA-256 with the expiry:
logout, a password change and disabling the account delete it, so a copied cookie dies with them) and the
failed logins of the throttle (so a restart of the console does not reset a lockout)."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cems.config import private_dir, private_file
from cems.errors import CemsError

DUTY: Final = "duty"
DISTRICT: Final = "district"
ENTERPRISE: Final = "enterprise"
VIEWER: Final = "viewer"
ROLES: Final = (DUTY, DISTRICT, ENTERPRISE, VIEWER)
ROLE_LABELS: Final = {DUTY: "值班员", DISTRICT: "区县", ENTERPRISE: "企业", VIEWER: "只读"}
USERS_FILE: Final = "users.sqlite3"
MIN_PASSWORD: Final = 10

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS users(
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    scope TEXT,
    display_name TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_ts REAL NOT NULL,
    changed_ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions(
    sid_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created_ts REAL NOT NULL,
    expires_ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(username);
CREATE TABLE IF NOT EXISTS login_failures(
    key TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures(key, ts);
"""
#: The most failed logins kept (a flood from many addresses cannot grow the file without bound).
MAX_FAILURE_ROWS: Final = 100_000

_HASHER: Final = PasswordHasher()
#: Verified against when the user does not exist, so that an unknown name takes as long as a wrong password.
_DUMMY_HASH: Final = _HASHER.hash("cems-console-no-such-user")


@dataclass(frozen=True, slots=True)
class User:
    """A console account. ``scope``: the district code (district officers) or enterprise id (enterprises)."""

    username: str
    role: str
    scope: str | None
    display_name: str
    disabled: bool = False
    #: When the password or the account last changed (epoch s): sessions that began before it are ended.
    changed_ts: float = field(default=0.0, compare=False)

    @property
    def label(self) -> str:
        return f"{self.display_name}（{ROLE_LABELS.get(self.role, self.role)}）"

    @property
    def signature(self) -> str:
        """Who acted, as recorded in an event's history: the name shown, the role and the login name."""
        return f"{self.display_name}（{ROLE_LABELS.get(self.role, self.role)} {self.username}）"


class UserStore:
    """The accounts file. Each call opens its own connection (the web app calls it from worker threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        private_dir(self.path.parent)
        private_file(self.path)
        conn = sqlite3.connect(self.path, timeout=10)
        conn.executescript(_SCHEMA)
        return conn

    def add(self, username: str, password: str, role: str, scope: str | None, display_name: str | None) -> User:
        username = username.strip()
        if not username or len(username) > 64 or any(c.isspace() for c in username):
            raise CemsError("a user name is 1-64 characters without spaces")
        if role not in ROLES:
            raise CemsError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if role in (DISTRICT, ENTERPRISE) and not scope:
            raise CemsError(f"a {role} account needs --scope (the {role} code or id it belongs to)")
        if role in (DUTY, VIEWER) and scope:
            raise CemsError(f"a {role} account sees the whole city: it takes no --scope")
        _check_password(password)
        now = time.time()
        user = User(username, role, scope, (display_name or username).strip())
        with self._connect() as conn:
            try:
                conn.execute(
                    "INSERT INTO users(username, password_hash, role, scope, display_name, disabled, created_ts, "
                    "changed_ts) VALUES (?,?,?,?,?,0,?,?)",
                    (username, _HASHER.hash(password), role, scope, user.display_name, now, now),
                )
            except sqlite3.IntegrityError as e:
                raise CemsError(f"user {username!r} exists (change the password with: cems console user passwd)") from e
        return user

    def passwd(self, username: str, password: str) -> None:
        _check_password(password)
        with self._connect() as conn:
            cur = conn.execute(
                "UPDATE users SET password_hash=?, changed_ts=?, disabled=0 WHERE username=?",
                (_HASHER.hash(password), time.time(), username),
            )
            if cur.rowcount != 1:
                raise CemsError(f"no user {username!r}")
            conn.execute("DELETE FROM sessions WHERE username=?", (username,))

    def disable(self, username: str) -> None:
        with self._connect() as conn:
            cur = conn.execute("UPDATE users SET disabled=1, changed_ts=? WHERE username=?", (time.time(), username))
            if cur.rowcount != 1:
                raise CemsError(f"no user {username!r}")
            conn.execute("DELETE FROM sessions WHERE username=?", (username,))

    def get(self, username: str) -> User | None:
        with self._connect() as conn:
            t = conn.execute(
                "SELECT username, role, scope, display_name, disabled, changed_ts FROM users WHERE username=?",
                (username,),
            ).fetchone()
        return None if t is None else User(t[0], t[1], t[2], t[3], bool(t[4]), float(t[5]))

    def list(self) -> list[User]:
        with self._connect() as conn:
            rows = conn.execute("SELECT username, role, scope, display_name, disabled FROM users ORDER BY username")
            return [User(t[0], t[1], t[2], t[3], bool(t[4])) for t in rows]

    def authenticate(self, username: str, password: str) -> User | None:
        """The user, when the password is right and the account enabled; else ``None`` (same time either way)."""
        with self._connect() as conn:
            t = conn.execute(
                "SELECT password_hash, role, scope, display_name, disabled FROM users WHERE username=?", (username,)
            ).fetchone()
        stored = _DUMMY_HASH if t is None else str(t[0])
        try:
            _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if t is None or t[4]:
            return None
        if _HASHER.check_needs_rehash(stored):
            with self._connect() as conn:
                conn.execute("UPDATE users SET password_hash=? WHERE username=?", (_HASHER.hash(password), username))
        return User(username, t[1], t[2], t[3], False)

    # -- server-side sessions ---------------------------------------------------------------------------
    def open_session(self, username: str, lifetime_s: float, now: float | None = None) -> str:
        """A new session of ``username``: its random id (goes into the signed cookie; only its hash is stored).
        Expired sessions are dropped on the way."""
        now = time.time() if now is None else now
        sid = secrets.token_urlsafe(32)
        with self._connect() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_ts <= ?", (now,))
            conn.execute(
                "INSERT INTO sessions(sid_hash, username, created_ts, expires_ts) VALUES (?,?,?,?)",
                (_sid_hash(sid), username, now, now + lifetime_s),
            )
        return sid

    def session_user(self, sid: str, now: float | None = None) -> str | None:
        """The user name of the live session ``sid``; ``None`` when it was ended, expired or never existed."""
        now = time.time() if now is None else now
        with self._connect() as conn:
            t = conn.execute(
                "SELECT username FROM sessions WHERE sid_hash=? AND expires_ts > ?", (_sid_hash(sid), now)
            ).fetchone()
        return None if t is None else str(t[0])

    def end_session(self, sid: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM sessions WHERE sid_hash=?", (_sid_hash(sid),))

    def end_sessions(self, username: str) -> int:
        """End every session of ``username``; how many there were."""
        with self._connect() as conn:
            return conn.execute("DELETE FROM sessions WHERE username=?", (username,)).rowcount

    # -- failed logins (the throttle) ---------------------------------------------------------------------
    def failures(self, key: str, since: float) -> int:
        with self._connect() as conn:
            (n,) = conn.execute("SELECT COUNT(*) FROM login_failures WHERE key=? AND ts > ?", (key, since)).fetchone()
        return int(n)

    def record_failure(self, keys: tuple[str, ...], now: float, forget_before: float) -> None:
        with self._connect() as conn:
            conn.executemany("INSERT INTO login_failures(key, ts) VALUES (?,?)", [(k, now) for k in keys])
            conn.execute("DELETE FROM login_failures WHERE ts <= ?", (forget_before,))
            conn.execute(
                "DELETE FROM login_failures WHERE rowid IN (SELECT rowid FROM login_failures ORDER BY ts DESC "
                "LIMIT -1 OFFSET ?)",
                (MAX_FAILURE_ROWS,),
            )

    def clear_failures(self, key: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM login_failures WHERE key=?", (key,))


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise CemsError(f"a password needs at least {MIN_PASSWORD} characters")
