"""Where a ledger lives, and one small connection interface over both kinds of database.

  SQLite (the default)   `<output dir>/ledger.sqlite`, in WAL mode with a busy timeout: every process on one
                         machine (or on machines sharing a file system with working locks) records into it.
  PostgreSQL             `--ledger-url postgresql://user:pw@host/db` or `TOOLCHAIN_LEDGER_URL`: for workers on
                         several machines. One database (or schema) per output folder: the ledger's keys are input
                         folders, so two output folders sharing a database would share what counts as scored.

The ledger writes its SQL once, with `?` placeholders; `connect` yields a `Connection` that runs it on either
database and turns every driver failure into one `LedgerError` line naming the ledger and the fix. Each call
opens its own short connection: nothing is held between calls.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from toolchain.errors import LedgerError

LEDGER_NAME = "ledger.sqlite"
LEDGER_URL_ENV = "TOOLCHAIN_LEDGER_URL"
BUSY_TIMEOUT_MS = 30_000  # Writers queue for up to 30 s: transactions here take milliseconds.
_POSTGRES = re.compile(r"^postgres(ql)?(\+psycopg)?://", re.IGNORECASE)


def ledger_location(out_dir: str | Path) -> str:
    """The ledger an output folder records into: `TOOLCHAIN_LEDGER_URL` when set (it must be a PostgreSQL URL),
    else `<out_dir>/ledger.sqlite`."""
    url = os.environ.get(LEDGER_URL_ENV, "").strip()
    return check_ledger_url(url, LEDGER_URL_ENV) if url else str(Path(out_dir) / LEDGER_NAME)


def is_postgres(location: str | Path) -> bool:
    return bool(_POSTGRES.match(str(location)))


def describe(location: str | Path) -> str:
    """`location` fit for a log line or an error: a URL or connection string without its password."""
    return scrub(str(location), str(location))


def scrub(text: str, url: str) -> str:
    """`text` (an error message, or `url` itself) with every password `url` holds masked: the URL's user-info
    password (up to its last '@'), `password=` values, and their percent-decoded forms."""
    secrets = [m.group(2) for m in re.finditer(r"(password\s*=\s*)('[^']*'|[^\s&]+)", url, re.IGNORECASE)]
    scheme, sep, rest = url.partition("://")
    if sep:
        authority = rest.split("?", 1)[0]
        userinfo = authority.rpartition("@")[0]
        if ":" in userinfo:
            secrets.append(userinfo.split(":", 1)[1])
    for secret in sorted({s for s in secrets for s in (s, unquote(s), s.strip("'")) if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def check_ledger_url(url: str, what: str = "--ledger-url") -> str:
    """`url` if it names a PostgreSQL ledger this process can use, else a one-line `LedgerError` naming `what`."""
    if not is_postgres(url):
        raise LedgerError(f"{what} {describe(url)} is not a PostgreSQL URL: pass postgresql://user@host/db (leave "
                          f"it unset for the SQLite ledger in the output folder)")
    _psycopg()
    return url


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise LedgerError("a PostgreSQL ledger needs psycopg: pip install 'psycopg[binary]>=3.2'") from None
    return psycopg


class Connection:
    """One open connection: `execute` and `executemany` take `?` placeholders on either database and return a
    cursor whose rows index by column name; `write()` is a transaction that serializes writers."""

    def __init__(self, raw: Any, postgres: bool):
        self.raw, self.postgres = raw, postgres

    def _sql(self, sql: str) -> str:
        # Every `?` is a placeholder: the ledger's SQL has no `?` or `%` inside string literals (values are
        # always passed as arguments).
        return sql.replace("%", "%%").replace("?", "%s") if self.postgres else sql

    def serialize(self, key: str) -> None:
        """Inside `write()`: writers with the same `key` take turns until the transaction ends (SQLite's
        BEGIN IMMEDIATE already serializes every writer)."""
        if self.postgres:
            self.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (key,))

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.raw.execute(self._sql(sql), tuple(args))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.postgres:
            with self.raw.cursor() as cursor:
                cursor.executemany(self._sql(sql), [tuple(r) for r in rows])
        else:
            self.raw.executemany(sql, rows)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        # SQLite: BEGIN IMMEDIATE takes the write lock up front, so a read-then-write cannot deadlock with another
        # writer. PostgreSQL: row locks and READ COMMITTED do that per statement.
        self.raw.execute("BEGIN" if self.postgres else "BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")


@contextmanager
def connect(location: str | Path) -> Iterator[Connection]:
    """A `Connection` to the ledger at `location` (a path or a PostgreSQL URL), closed on exit."""
    if is_postgres(location):
        with _connect_postgres(str(location)) as db:
            yield db
        return
    path = Path(location)
    try:
        raw = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.Error as exc:
        raise sqlite_error(path, exc) from None
    try:
        raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        raw.row_factory = sqlite3.Row
        yield Connection(raw, postgres=False)
    except sqlite3.Error as exc:
        raise sqlite_error(path, exc) from None
    finally:
        raw.close()


@contextmanager
def _connect_postgres(url: str) -> Iterator[Connection]:
    psycopg = _psycopg()
    from psycopg.rows import dict_row

    dsn = re.sub(r"^postgres(ql)?\+psycopg://", "postgresql://", url, flags=re.IGNORECASE)
    try:
        raw = psycopg.connect(dsn, autocommit=True, row_factory=dict_row, connect_timeout=15)
    except psycopg.Error as exc:
        raise LedgerError(f"ledger {describe(url)}: cannot connect ({scrub(_first_line(exc), url)}): check "
                          f"--ledger-url / {LEDGER_URL_ENV} and that the PostgreSQL server is up and reachable"
                          ) from None
    try:
        yield Connection(raw, postgres=True)
    except psycopg.Error as exc:
        raise LedgerError(f"ledger {describe(url)}: {scrub(_first_line(exc), url)}: check the database's "
                          "permissions and health (the ledger needs CREATE, SELECT, INSERT and UPDATE)") from None
    finally:
        raw.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def sqlite_error(path: Path, exc: sqlite3.Error) -> LedgerError:
    """One line for a sqlite failure: what happened to which ledger, and the way out."""
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        fix = f"make it and {path.parent} writable (chmod u+w), or pass another output folder"
    elif "locked" in text or "busy" in text:
        fix = (f"another process held it for more than {BUSY_TIMEOUT_MS // 1000} s; retry when it is done (see "
               "`fuser`), and keep ledgers off file systems without working locks (or use --ledger-url)")
    elif "unable to open" in text:
        fix = f"make {path.parent} readable and writable, or pass another output folder"
    else:
        fix = "move it aside to keep it, then rerun (a new ledger starts empty: every folder is scored again)"
    return LedgerError(f"ledger {path}: {text}: {fix}")
