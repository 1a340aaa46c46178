"""The run ledger: which folder was scored by which model, when, by which run, with what outcome.

By default one SQLite file per output directory, `<out>/ledger.sqlite`, in WAL mode with a busy timeout, so
several scoring processes (two flow runs, a CLI run beside a served deployment) can record at once; with
`TOOLCHAIN_LEDGER_URL` (`--ledger-url`) a PostgreSQL database, for workers on several machines
(`toolchain.scoring.ledger_db`). Every call opens its own short connection: nothing is held between calls, and a
process killed with SIGKILL leaves at most an uncommitted transaction that the database rolls back.

A file counts as decided by a model only when a `folder_files` row names it (same size and mtime, or the same
bytes) under a `folder_runs` row for that model that is 'completed', which is written after its CSV is completely
on disk. Inbox runs are forward-only: a file decided by any model stays with it, so a new serving model scores
what arrives after it (`toolchain backfill` rescores history on request). A file that arrives later, or whose
bytes change, is not decided yet: the next inbox scan scores it into a follow-up CSV. A 'running' row left by a
killed process is settled by the next run that takes the folder's lock (`reconcile_folder`): 'completed' if its
CSV reached its final name (the rename happened, only the bookkeeping was lost), otherwise 'crashed'.

Every database failure a user can cause (a read-only ledger or folder, a lock held past BUSY_TIMEOUT_MS, a damaged
file, an unreachable server) is raised as one `LedgerError` line naming the ledger and the fix.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from toolchain.errors import LedgerError, ScoringError
from toolchain.io import file_sha256
from toolchain.scoring.ledger_db import (
    LEDGER_NAME,
    Connection,
    connect,
    describe,
    is_postgres,
    ledger_location,
)
from toolchain.scoring.ledger_schema import (
    ADDED_COLUMNS,
    SCHEMA,
    FileStamp,
    FolderRecord,
    Listing,
    RunRecord,
    postgres_schema,
    postgres_type,
    utc_now,
)

_SCHEMA_READY: set[str] = set()  # PostgreSQL ledgers whose schema this process has created or checked.
_CLAIMED: set[tuple[str, str]] = set()  # (PostgreSQL ledger, output folder) pairs this process has checked.


class Ledger:
    """The ledger at `location`: an SQLite file path or a PostgreSQL URL (created with its schema on first use)."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        self.postgres = is_postgres(self.location)
        if self.postgres:
            self._create_postgres_schema()
            return
        self.path = Path(location)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create {self.path.parent} for the ledger ({exc.strerror}): pass an output "
                              "folder you can write to") from None
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # Readers never block the writer, and vice versa.
            db.raw.executescript(SCHEMA)
            for table, column, kind in ADDED_COLUMNS:  # A ledger written by an older release.
                if column in {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}:
                    continue
                try:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:  # Another process added it first.
                    if "duplicate column" not in str(exc):
                        raise

    def _create_postgres_schema(self) -> None:
        if self.location in _SCHEMA_READY:
            return
        with self._write() as db:  # One process at a time: concurrent CREATE ... IF NOT EXISTS can collide.
            db.serialize("toolchain ledger schema")
            for statement in postgres_schema().split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, column, kind in ADDED_COLUMNS:  # A database written by an older release.
                db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {postgres_type(kind)}")
        _SCHEMA_READY.add(self.location)

    def _claim(self, out_dir: str | Path) -> None:
        """A PostgreSQL ledger serves one output folder (its keys are input folders): the first to record into it
        claims it; another is refused, and so is an output folder that already has a ledger of its own."""
        out = str(Path(out_dir).expanduser().resolve())
        if (self.location, out) in _CLAIMED:
            return
        with self._write() as db:
            db.execute("INSERT INTO ledger_meta (key, value) VALUES ('output_dir', ?) ON CONFLICT (key) DO NOTHING",
                       (out,))
            owner = db.execute("SELECT value FROM ledger_meta WHERE key='output_dir'").fetchone()["value"]
        if owner != out:
            raise LedgerError(f"ledger {self}: it records the runs of output folder {owner}, not {out}: give each "
                              "output folder its own database (its keys are input folders, so two output folders "
                              "would share what counts as scored)")
        local = Path(out) / LEDGER_NAME
        if local.exists():
            raise LedgerError(f"{local} holds this output folder's history, which a PostgreSQL ledger does not: "
                              f"copy it in first (`toolchain ledger-copy --output-dir {out} --ledger-url URL`), "
                              "or leave --ledger-url unset")
        _CLAIMED.add((self.location, out))

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> Ledger:
        """The ledger of an output directory (`ledger_location`)."""
        ledger = cls(ledger_location(out_dir))
        if ledger.postgres:
            ledger._claim(out_dir)
        return ledger

    def __str__(self) -> str:
        return describe(self.location)

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with connect(self.location) as db:
            yield db

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._connect() as db, db.write():
            yield db

    # Runs -----------------------------------------------------------------------------------------------------
    def start_run(self, run_id: str, *, mode: str, target: str, model_path: str, model_sha256: str,
                  checkpoint_sha256: str | None = None, flow_run_id: str | None = None,
                  parent_run_id: str | None = None, window_rule: str | None = None,
                  model_version: str | None = None) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO runs (run_id, flow_run_id, parent_run_id, mode, target, model_path, model_sha256,"
                " checkpoint_sha256, host, pid, started_at, state, window_rule, model_version)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?, 'running', ?, ?)",
                (run_id, flow_run_id, parent_run_id, mode, target, model_path, model_sha256, checkpoint_sha256,
                 socket.gethostname(), os.getpid(), utc_now(), window_rule, model_version or None),
            )

    def set_provider(self, run_id: str, provider: str) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET provider=? WHERE run_id=?", (provider, run_id))

    def finish_run(self, run_id: str, state: str, error: str | None = None) -> RunRecord:
        """Close a run; its totals are summed from its folder rows and those of its child runs."""
        mine = "f.run_id=runs.run_id OR f.run_id IN (SELECT c.run_id FROM runs c WHERE c.parent_run_id=runs.run_id)"
        with self._write() as db:
            db.execute(
                f"UPDATE runs SET state=?, error=?, finished_at=?,"
                f" folders=(SELECT COUNT(*) FROM folder_runs f WHERE {mine}),"
                f" files_ok=(SELECT COALESCE(SUM(files_ok),0) FROM folder_runs f WHERE {mine}),"
                f" files_error=(SELECT COALESCE(SUM(files_error),0) FROM folder_runs f WHERE {mine}),"
                f" task_retries=(SELECT COALESCE(SUM(task_retries),0) FROM folder_runs f WHERE {mine})"
                f" WHERE run_id=?",
                (state, error, utc_now(), run_id),
            )
        return self.run(run_id)

    def run(self, run_id: str) -> RunRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(run_id)
        return RunRecord(**dict(row))

    def runs(self) -> list[RunRecord]:
        with self._connect() as db:
            return [RunRecord(**dict(r)) for r in db.execute("SELECT * FROM runs ORDER BY started_at, run_id")]

    def reap_dead_runs(self) -> list[RunRecord]:
        """Mark 'running' runs of dead processes on this host as 'crashed'; returns them."""
        host = socket.gethostname()
        with self._connect() as db:
            rows = db.execute("SELECT run_id, pid FROM runs WHERE state='running' AND host=?", (host,)).fetchall()
        dead = [r["run_id"] for r in rows if not _pid_alive(r["pid"])]
        for run_id in dead:
            with self._write() as db:  # Its folder rows first: the run's totals are summed from them.
                _settle(db, db.execute("SELECT id, csv_path FROM folder_runs WHERE run_id=? AND state='running'",
                                       (run_id,)).fetchall())
        return [self.finish_run(run_id, "crashed", "process died before finishing (killed?)") for run_id in dead]

    # Folders --------------------------------------------------------------------------------------------------
    def start_folder(self, run_id: str, folder: str, out_folder: str, model_sha256: str,
                     flow_run_id: str | None = None) -> int:
        with self._write() as db:
            insert = ("INSERT INTO folder_runs (run_id, flow_run_id, folder, out_folder, model_sha256, started_at,"
                      " state) VALUES (?,?,?,?,?,?, 'running')")
            args = (run_id, flow_run_id, folder, out_folder, model_sha256, utc_now())
            if db.postgres:
                return int(db.execute(insert + " RETURNING id", args).fetchone()["id"])
            return int(db.execute(insert, args).lastrowid)  # RETURNING needs SQLite 3.35.

    def set_csv_path(self, folder_run_id: int, csv_path: str) -> None:
        """Called just before the rename that publishes the CSV, so a crash right after it is recoverable."""
        with self._write() as db:
            db.execute("UPDATE folder_runs SET csv_path=? WHERE id=?", (csv_path, folder_run_id))

    def finish_folder(self, folder_run_id: int, state: str, *, files_ok: int = 0, files_error: int = 0,
                      task_retries: int = 0, csv_path: str | None = None, error: str | None = None,
                      health: dict | None = None) -> FolderRecord:
        """Close a folder row; `health` (verdict, path, js_distance, expected_accuracy) when it has a report."""
        health = health or {}
        with self._write() as db:
            db.execute(
                "UPDATE folder_runs SET state=?, files_ok=?, files_error=?, task_retries=?,"
                " csv_path=COALESCE(?, csv_path), error=?, finished_at=?, health_verdict=?, health_path=?,"
                " js_distance=?, expected_accuracy=? WHERE id=?",
                (state, files_ok, files_error, task_retries, csv_path, error, utc_now(), health.get("verdict"),
                 health.get("path"), health.get("js_distance"), health.get("expected_accuracy"), folder_run_id),
            )
        return self.folder_run(folder_run_id)

    def folder_run(self, folder_run_id: int) -> FolderRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM folder_runs WHERE id=?", (folder_run_id,)).fetchone()
        if row is None:
            raise KeyError(folder_run_id)
        return FolderRecord(**dict(row))

    def folder_runs(self, folder: str | None = None) -> list[FolderRecord]:
        query, args = "SELECT * FROM folder_runs", ()
        if folder is not None:
            query, args = query + " WHERE folder=?", (folder,)
        with self._connect() as db:
            return [FolderRecord(**dict(r)) for r in db.execute(query + " ORDER BY id", args)]

    def health_rows(self, model_sha256: str | None = None, last: int = 20) -> list[dict]:
        """The latest `last` completed folder runs (of one model, if given), oldest first, with their health."""
        query = ("SELECT finished_at, folder, files_ok + files_error AS files, health_verdict AS verdict,"
                 " js_distance, expected_accuracy, health_path FROM folder_runs"
                 " WHERE state='completed' AND csv_path IS NOT NULL")  # Runs that found nothing to score: no CSV.
        args: tuple = ()
        if model_sha256 is not None:
            query, args = query + " AND model_sha256=?", (model_sha256,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, last)).fetchall()
        return [dict(r) for r in reversed(rows)]

    def scored_csv(self, folder: str, model_sha256: str) -> str | None:
        """The newest completed CSV of `folder` by this model, or None when it is not scored yet."""
        with self._connect() as db:
            row = db.execute(
                "SELECT csv_path FROM folder_runs WHERE folder=? AND model_sha256=? AND state='completed'"
                " ORDER BY id DESC LIMIT 1",
                (folder, model_sha256),
            ).fetchone()
        return None if row is None else str(row["csv_path"])

    def record_files(self, folder_run_id: int, files: Iterable[FileStamp], decision: str | None = None) -> None:
        """The files a folder run is about to score (`decision` None), or has decided to give no row (`decision`
        says why); either way they count as decided once the run is 'completed'."""
        with self._write() as db:
            db.executemany("INSERT INTO folder_files (folder_run_id, file, size, mtime_ns, sha256, decision)"
                           " VALUES (?,?,?,?,?,?)",
                           [(folder_run_id, f.file, f.size, f.mtime_ns, f.sha256 or None, decision) for f in files])

    def decided_files(self, folder: str, model_sha256: str | None = None,
                      since: str | None = None) -> dict[str, FileStamp]:
        """file -> how it was when it was last decided (scored, or skipped with a reason) by a completed run of
        `folder`: by any model (`model_sha256` None: the forward-only rule of inbox runs), or by this model
        (a backfill), in which case files whose content (as last decided) the ledger first recorded before
        `since` (a UTC ISO time) count as decided too: they are outside the backfill.

        Runs recorded before files were (older ledgers) contribute the files of their CSV, with an unknown stamp
        that matches the file however it is now.
        """
        with self._connect() as db:  # One indexed query per folder.
            rows = db.execute(
                "SELECT r.csv_path, r.model_sha256, r.started_at, f.file, f.size, f.mtime_ns, f.sha256"
                " FROM folder_runs r LEFT JOIN folder_files f ON f.folder_run_id = r.id"
                " WHERE r.folder=? AND r.state='completed' ORDER BY r.id",
                (folder,)).fetchall()
        mine: dict[str, FileStamp] = {}  # Later runs override earlier ones (a changed file scored again).
        latest: dict[str, FileStamp] = {}
        first_seen: dict[str, str] = {}  # When the file's latest content was first recorded.
        for row in rows:
            if row["file"] is not None:
                found = [FileStamp(row["file"], row["size"], row["mtime_ns"], row["sha256"] or "")]
            elif row["csv_path"] and Path(row["csv_path"]).is_file():
                found = [FileStamp(f, -1, -1) for f in _csv_files(Path(row["csv_path"]))]
            else:
                continue
            for stamp in found:
                before = latest.get(stamp.file)
                if before is None or not _same_content(before, stamp):
                    first_seen[stamp.file] = row["started_at"]
                latest[stamp.file] = stamp
                if row["model_sha256"] == model_sha256:
                    mine[stamp.file] = stamp
        if model_sha256 is None:
            return latest
        if since is not None:  # Content first seen before `since` is outside the backfill, whoever scored it.
            mine.update({f: latest[f] for f, when in first_seen.items() if when < since})
        return mine

    # Listings and history ------------------------------------------------------------------------------------
    def listings(self, folders: Iterable[str]) -> dict[str, Listing]:
        """folder -> its `Listing`, for those of `folders` that have one: a few indexed queries for a whole
        inbox (keys looked up exactly, so a subfolder that links elsewhere is found too)."""
        folders, found = list(folders), {}
        with self._connect() as db:
            for i in range(0, len(folders), 500):
                chunk = folders[i:i + 500]
                rows = db.execute("SELECT folder, listing, verified_ns, files FROM folder_listings WHERE folder IN"
                                  f" ({','.join('?' * len(chunk))})", chunk).fetchall()
                found.update({r["folder"]: Listing(json.loads(r["listing"]), int(r["verified_ns"]), int(r["files"]))
                              for r in rows})
        return found

    def record_listing(self, folder: str, listing: Listing) -> None:
        """`folder`'s every audio file is decided, as its directories stood in `listing`."""
        with self._write() as db:
            db.execute("INSERT INTO folder_listings (folder, listing, verified_ns, files) VALUES (?,?,?,?)"
                       " ON CONFLICT (folder) DO UPDATE SET listing=excluded.listing,"
                       " verified_ns=excluded.verified_ns, files=excluded.files",
                       (folder, json.dumps(listing.directories, sort_keys=True), listing.verified_ns,
                        listing.files))

    def forget_listings(self, folders: Iterable[str]) -> None:
        """These folders hold (or may hold) undecided files: the next scan looks at their files one by one."""
        with self._write() as db:
            db.executemany("DELETE FROM folder_listings WHERE folder=?", [(f,) for f in folders])

    def record_history(self, inbox: str, model_sha256: str, model_path: str, rule: str, *,
                       since: str | None = None, folders: str | None = None) -> None:
        with self._write() as db:
            db.execute("INSERT INTO inbox_history (inbox, model_sha256, model_path, at, rule, since, folders)"
                       " VALUES (?,?,?,?,?,?,?)", (inbox, model_sha256, model_path, utc_now(), rule, since, folders))

    def adopt_model(self, inbox: str, model_sha256: str, model_path: str) -> str | None:
        """Record that this model serves `inbox` (forward-only) unless it already did last; returns the model it
        replaced (None: no change, or the inbox's first model)."""
        with self._write() as db:
            db.serialize(f"inbox {inbox}")
            row = db.execute("SELECT model_sha256 FROM inbox_history WHERE inbox=? AND rule='forward'"
                             " ORDER BY id DESC LIMIT 1", (inbox,)).fetchone()
            if row is not None and row["model_sha256"] == model_sha256:
                return None
            db.execute("INSERT INTO inbox_history (inbox, model_sha256, model_path, at, rule) VALUES"
                       " (?,?,?,?, 'forward')", (inbox, model_sha256, model_path, utc_now()))
        return None if row is None else str(row["model_sha256"])

    def history(self, inbox: str) -> list[dict]:
        with self._connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM inbox_history WHERE inbox=? ORDER BY id", (inbox,))]

    def restamp(self, folder: str, stamp: FileStamp) -> None:
        """A decided file whose size or mtime changed but whose bytes (`stamp.sha256`) did not: its rows take the
        new stamp, so later scans need not hash it again."""
        with self._write() as db:
            db.execute(
                "UPDATE folder_files SET size=?, mtime_ns=? WHERE file=? AND sha256=? AND folder_run_id IN"
                " (SELECT id FROM folder_runs WHERE folder=? AND state='completed')",
                (stamp.size, stamp.mtime_ns, stamp.file, stamp.sha256, folder))

    def reconcile_folder(self, out_folder: str) -> list[FolderRecord]:
        """Settle 'running' rows of `out_folder` left by dead runs. Call only while holding the folder's lock."""
        with self._write() as db:
            rows = db.execute(
                "SELECT id, csv_path FROM folder_runs WHERE out_folder=? AND state='running'", (out_folder,)
            ).fetchall()
            _settle(db, rows)
        return [self.folder_run(int(r["id"])) for r in rows]


COPIED_TABLES = ("runs", "folder_runs", "folder_files", "folder_listings", "inbox_history")


def copy_history(out_dir: str | Path, url: str, log: Callable[[str], None] = lambda message: None) -> Path:
    """Move an output folder's SQLite ledger into an empty PostgreSQL ledger at `url`: every row of every table
    (ids kept), in one transaction; then the SQLite file is renamed aside (`ledger.sqlite.copied-<UTC>`, returned)
    so nothing records into it again. Refused (one line) when there is no SQLite ledger or the database already
    holds runs."""
    source = Path(out_dir).expanduser().resolve() / LEDGER_NAME
    if not source.is_file():
        raise LedgerError(f"{source} does not exist: pass the --output-dir whose ledger.sqlite holds the history")
    local, dest = Ledger(source), Ledger(url)  # Both with today's schema (an older SQLite ledger gains columns).
    with dest._connect() as db:
        if db.execute("SELECT COUNT(*) AS n FROM runs").fetchone()["n"]:
            raise LedgerError(f"ledger {dest} already holds runs: copy into a new, empty database")
    with local._connect() as src, dest._write() as db:
        src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for table in COPIED_TABLES:
            columns = [r["name"] for r in src.execute(f"PRAGMA table_info({table})")]
            rows = [tuple(r) for r in src.execute(f"SELECT {', '.join(columns)} FROM {table}")]
            db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                           rows)
            log(f"{table}: {len(rows)} rows")
        for table in ("folder_runs", "inbox_history"):  # The next ids continue after the copied ones.
            db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false)"
                       f" FROM {table}")
    aside = source.with_name(f"{LEDGER_NAME}.copied-{utc_now().replace(':', '')}")
    source.rename(aside)
    return aside


def health_history(out_dir: str | Path, model: str | Path | None = None, last: int = 20) -> list[dict]:
    """The latest `last` completed folder runs in `out_dir`'s ledger (of `model`, an .onnx path, if given), oldest
    first: finished_at, folder, files, verdict, js_distance, expected_accuracy, health_path."""
    location = ledger_location(out_dir)
    if not is_postgres(location) and not Path(location).is_file():
        raise ScoringError(f"{out_dir} holds no {Path(location).name}: pass the --out/--output-dir of a scoring run")
    if model is not None and not Path(model).is_file():
        raise ScoringError(f"model {model} does not exist: pass the .onnx file the runs used")
    return Ledger(location).health_rows(file_sha256(model) if model is not None else None, last)


def _settle(db: Connection, rows: Iterable[dict]) -> None:
    """Folder rows of dead runs: 'completed' when their CSV reached its final name (only the bookkeeping was lost),
    else 'crashed' (its partial files are removed by the next run that takes the folder's lock)."""
    for row in rows:
        published = row["csv_path"] is not None and Path(row["csv_path"]).is_file()
        ok, errors = _count_statuses(Path(row["csv_path"])) if published else (0, 0)
        state, note = (
            ("completed", "recovered: the CSV was published but the run died before recording it")
            if published
            else ("crashed", "the run died before its CSV was complete; partial files are removed by the next run")
        )
        db.execute("UPDATE folder_runs SET state=?, error=?, files_ok=?, files_error=?, finished_at=?"
                   " WHERE id=?", (state, note, ok, errors, utc_now(), row["id"]))


def _same_content(a: FileStamp, b: FileStamp) -> bool:
    """Two stamps of one file name that describe the same content: the same bytes when both were hashed, else
    the same size and mtime (an unknown stamp matches any)."""
    if a.sha256 and b.sha256:
        return a.sha256 == b.sha256
    return a.matches(b)


def _csv_files(csv_path: Path) -> list[str]:
    with csv_path.open(newline="") as f:
        return [row["file"] for row in csv.DictReader(f) if row.get("file")]


def _count_statuses(csv_path: Path) -> tuple[int, int]:
    """(ok, error) rows of a published predictions CSV."""
    counts = {"ok": 0, "error": 0}
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            counts[row.get("status") or "error"] = counts.get(row.get("status") or "error", 0) + 1
    return counts["ok"], counts["error"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, owned by someone else.
        return True
    return True
