"""The ledger's tables and rows: the schema (SQLite's, and PostgreSQL's derived from it), the columns added since
the first release, and the rows as Python sees them (`RunRecord`, `FolderRecord`, `FileStamp`).

Schema (times are UTC ISO-8601 strings, sha256 values are hex):

  runs                      one row per scoring run (a CLI call or one Prefect flow run)
    run_id        TEXT PK   our id, also written into every CSV row
    flow_run_id   TEXT      Prefect flow-run id; NULL outside Prefect
    parent_run_id TEXT      the inbox run that started this per-folder run; NULL otherwise
    mode          TEXT      'folder' | 'inbox' | 'backfill'
    target        TEXT      absolute folder (mode folder) or inbox path
    model_path    TEXT      the .onnx path as given
    model_sha256  TEXT      sha256 of the .onnx file: the model's identity
    model_version TEXT      NAME/VERSION when the model is a registered version (models:/...); NULL for a file
    checkpoint_sha256 TEXT  sha256 of the checkpoint it was exported from (from the model metadata)
    provider      TEXT      ONNX Runtime execution provider that ran (NULL until known)
    host, pid               who ran it (a 'running' run whose pid is gone on this host is marked 'crashed')
    started_at, finished_at
    state         TEXT      'running' | 'completed' | 'failed' | 'crashed'
    folders, files_ok, files_error, task_retries INTEGER   totals over the run's folders (and its child runs')
    error         TEXT      one-line failure reason

  folder_runs               one row per (run, folder) attempt
    id            INTEGER PK
    run_id        TEXT      -> runs.run_id
    flow_run_id   TEXT
    folder        TEXT      absolute, resolved input folder (the key for "already scored")
    out_folder    TEXT      <out>/<folder name>, where its CSVs go
    model_sha256  TEXT
    started_at, finished_at
    state         TEXT      'running' | 'completed' | 'failed' | 'crashed'
    files_ok, files_error, task_retries INTEGER
    csv_path      TEXT      set just before the CSV is renamed into place
    error         TEXT
    health_verdict TEXT     ok | warn | drift | insufficient | no_reference (`toolchain.health.assess`)
    health_path   TEXT      the health_<UTC>.json beside the CSV
    js_distance, expected_accuracy REAL   its key figures (NULL without a reference)

  folder_files              one row per file a folder run decided about, written before scoring starts
    folder_run_id INTEGER   -> folder_runs.id
    file          TEXT      posix path relative to the folder, as in the CSV
    size, mtime_ns INTEGER  the file's size and modification time when it was discovered
    sha256        TEXT      its content hash then (NULL in older ledgers, or when it could not be read)
    decision      TEXT      NULL: scored (a CSV row, ok or error); else why it got no row (e.g. it links outside
                            the folders the server may read)

  folder_listings           inbox subfolders whose every audio file was decided when last looked at
    folder        TEXT PK   absolute, resolved input folder
    listing       TEXT      JSON {directory relative to the folder ("" for itself): its mtime in ns}: a file
                            created, removed or renamed anywhere in the folder changes one of them
    verified_ns   INTEGER   when its files were last looked at one by one (the deep reconcile takes the oldest)
    files         INTEGER   how many audio files it held then (what looking at them again costs)

  inbox_history             the choices about what an inbox's history is scored by, in order
    id            INTEGER PK
    inbox         TEXT      absolute inbox path
    model_sha256, model_path TEXT
    at            TEXT      when it was chosen
    rule          TEXT      'forward': this model scores what no model decided yet (it became the serving model);
                            'backfill': this model rescored the history (`since`, `folders`: which part of it)
    since         TEXT      backfill: files first recorded at or after this UTC time (NULL: all)
    folders       TEXT      backfill: subfolder name pattern (NULL: all)

  ledger_meta               key/value facts about the ledger itself; in PostgreSQL, 'output_dir': the output folder
                            whose runs it records (one database per output folder)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, flow_run_id TEXT, parent_run_id TEXT, mode TEXT NOT NULL, target TEXT NOT NULL,
    model_path TEXT NOT NULL, model_sha256 TEXT NOT NULL, checkpoint_sha256 TEXT, provider TEXT,
    host TEXT NOT NULL, pid INTEGER NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    state TEXT NOT NULL, folders INTEGER NOT NULL DEFAULT 0, files_ok INTEGER NOT NULL DEFAULT 0,
    files_error INTEGER NOT NULL DEFAULT 0, task_retries INTEGER NOT NULL DEFAULT 0, error TEXT,
    window_rule TEXT, model_version TEXT
);
CREATE TABLE IF NOT EXISTS folder_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(run_id), flow_run_id TEXT,
    folder TEXT NOT NULL, out_folder TEXT NOT NULL, model_sha256 TEXT NOT NULL, started_at TEXT NOT NULL,
    finished_at TEXT, state TEXT NOT NULL, files_ok INTEGER NOT NULL DEFAULT 0,
    files_error INTEGER NOT NULL DEFAULT 0, task_retries INTEGER NOT NULL DEFAULT 0, csv_path TEXT, error TEXT,
    health_verdict TEXT, health_path TEXT, js_distance REAL, expected_accuracy REAL
);
CREATE TABLE IF NOT EXISTS folder_files (
    folder_run_id INTEGER NOT NULL REFERENCES folder_runs(id), file TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT, decision TEXT
);
CREATE INDEX IF NOT EXISTS folder_files_run ON folder_files (folder_run_id);
CREATE INDEX IF NOT EXISTS folder_runs_scored ON folder_runs (folder, model_sha256, state);
CREATE INDEX IF NOT EXISTS folder_runs_out ON folder_runs (out_folder, state);
CREATE INDEX IF NOT EXISTS folder_runs_folder ON folder_runs (folder, state);
CREATE INDEX IF NOT EXISTS folder_runs_run ON folder_runs (run_id);
CREATE INDEX IF NOT EXISTS runs_parent ON runs (parent_run_id);
CREATE INDEX IF NOT EXISTS runs_state ON runs (state, host);
CREATE TABLE IF NOT EXISTS folder_listings (
    folder TEXT PRIMARY KEY, listing TEXT NOT NULL, verified_ns INTEGER NOT NULL, files INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, inbox TEXT NOT NULL, model_sha256 TEXT NOT NULL, model_path TEXT NOT NULL,
    at TEXT NOT NULL, rule TEXT NOT NULL, since TEXT, folders TEXT
);
CREATE INDEX IF NOT EXISTS inbox_history_inbox ON inbox_history (inbox, id);
CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def postgres_schema() -> str:
    """`SCHEMA` for PostgreSQL: 64-bit integers (sizes, ns times), double-precision reals, identity keys."""
    return postgres_type(SCHEMA.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"))


def postgres_type(sql: str) -> str:
    """SQLite column types in `sql` as PostgreSQL needs them (INTEGER holds ns times: 64 bits)."""
    return sql.replace("INTEGER", "BIGINT").replace("REAL", "DOUBLE PRECISION")


# Columns added after the first release: (table, column, type). Older ledgers gain them on open.
ADDED_COLUMNS = (("runs", "window_rule", "TEXT"), ("runs", "model_version", "TEXT"), ("folder_runs", "health_verdict", "TEXT"),
                  ("folder_runs", "health_path", "TEXT"), ("folder_runs", "js_distance", "REAL"),
                  ("folder_runs", "expected_accuracy", "REAL"), ("folder_files", "sha256", "TEXT"),
                  ("folder_files", "decision", "TEXT"))


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class FolderRecord:
    id: int
    run_id: str
    flow_run_id: str | None
    folder: str
    out_folder: str
    model_sha256: str
    started_at: str
    finished_at: str | None
    state: str
    files_ok: int
    files_error: int
    task_retries: int
    csv_path: str | None
    error: str | None
    health_verdict: str | None = None
    health_path: str | None = None
    js_distance: float | None = None
    expected_accuracy: float | None = None


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    flow_run_id: str | None
    parent_run_id: str | None
    mode: str
    target: str
    model_path: str
    model_sha256: str
    checkpoint_sha256: str | None
    provider: str | None
    host: str
    pid: int
    started_at: str
    finished_at: str | None
    state: str
    folders: int
    files_ok: int
    files_error: int
    task_retries: int
    error: str | None
    window_rule: str | None = None  # How files were cut into windows and aggregated (ledgers before it: NULL).
    model_version: str | None = None  # NAME/VERSION of a registered model; None for a model file.


@dataclass(frozen=True)
class Listing:
    """A folder whose every audio file was decided: its directories' mtimes then ({relative dir: ns}), when its
    files were looked at (ns since the epoch), and how many there were."""

    directories: dict[str, int]
    verified_ns: int
    files: int


@dataclass(frozen=True)
class FileStamp:
    """A file of a folder as scoring saw it: relative posix path, size in bytes, mtime in ns (-1: unknown), and
    its content's sha256 when it was hashed ("" otherwise). `ctime_ns`: its change time when it was looked at
    (for the readiness rule; not stored in the ledger, not part of equality)."""

    file: str
    size: int
    mtime_ns: int
    sha256: str = ""
    ctime_ns: int = field(default=0, compare=False)

    def matches(self, other: FileStamp) -> bool:
        """Same file, unchanged (an unknown stamp matches any)."""
        return self.file == other.file and (self.size < 0 or other.size < 0 or
                                            (self.size, self.mtime_ns) == (other.size, other.mtime_ns))
