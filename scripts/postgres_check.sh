#!/usr/bin/env bash
# PostgreSQL end to end: Prefect's server and the run ledger on one real PostgreSQL. A separately invoked check
# (`make test` runs the ledger tests against a throwaway PostgreSQL of its own):
#
#   scripts/postgres_check.sh                    # exports a tiny untrained model itself
#   MODEL=artifacts/demo/run/model.onnx scripts/postgres_check.sh
#
# 1. installs PostgreSQL from Debian packages if initdb is missing (apt-get install -y postgresql; needs root);
# 2. initdb + pg_ctl start a throwaway cluster in a temp dir, as the postgres user, on 127.0.0.1 and a free port,
#    password-protected (scram-sha-256); creates database `prefect` with the pg_trgm extension, and database
#    `ledger` for the run ledger;
# 3. starts `prefect server start` on loopback with its own PREFECT_HOME and
#    PREFECT_SERVER_DATABASE_CONNECTION_URL=postgresql+asyncpg://prefect:...@127.0.0.1:PORT/prefect;
# 4. `toolchain serve` (TOOLCHAIN_LEDGER_URL=postgresql://...@127.0.0.1:PORT/ledger) serves the deployments;
#    `prefect deployment run 'score-folder/on-demand' --param 'folder="..."' --watch` scores 5 FSDD clips
#    (CC BY-SA 4.0); checks the CSV, that the flow run is a row in PostgreSQL's flow_run table and the folder run
#    a completed row in the ledger database (and no ledger.sqlite beside the outputs);
# 5. an inbox of 4 folders scored by the model, then two `toolchain backfill` processes at once by a retrained
#    copy (and a rerun for any folder one left to the other): every file has exactly one row from the copy;
# 6. tears everything down on any exit (trap): serve, server, PostgreSQL, the temp dir.
# Prints "postgres check: PASSED" and exits 0 on success. Takes ~2-4 minutes on 2 cores.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VENV_BIN:-$REPO/.venv/bin}
FSDD=${TOOLCHAIN_FSDD:-$REPO/../shared/data/fsdd}
STARTUP_TIMEOUT_S=${STARTUP_TIMEOUT_S:-300}
WORK=$(mktemp -d /tmp/postgres-check.XXXXXX)
chmod 755 "$WORK"
PIDS=()

log() { echo "[postgres-check] $*"; }
die() { echo "[postgres-check] FAILED: $*" >&2; exit 1; }

as_pg() {  # Run a PostgreSQL server binary as the postgres user (initdb/postgres refuse to run as root).
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do  # Each background process leads its own session: kill the whole group.
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 15); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [ -n "${PGBIN:-}" ] && [ -f "$WORK/pgdata/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$WORK/pgdata" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ $rc -ne 0 ]; then
        for f in "$WORK"/*.log "$WORK"/pglog/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -40 "$f"; }; done
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT INT TERM

free_port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() {  # wait_for WHAT TIMEOUT CMD...: poll CMD every second.
    local what=$1 timeout=$2; shift 2
    for _ in $(seq "$timeout"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    die "timed out after ${timeout}s waiting for $what"
}

# --- 1. PostgreSQL binaries -----------------------------------------------------------------------------------
find_pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
PGBIN=$(find_pgbin)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    log "installing PostgreSQL from Debian packages"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q postgresql postgresql-contrib
    PGBIN=$(find_pgbin)
fi
[ -x "$PGBIN/initdb" ] || die "no initdb under /usr/lib/postgresql/*/bin after installing: install postgresql"
log "PostgreSQL: $("$PGBIN/postgres" --version)"

# --- 2. a throwaway cluster on loopback -----------------------------------------------------------------------
PGPORT=$(free_port)
PGPASS=$("$BIN/python" -c 'import secrets; print(secrets.token_hex(16))')
mkdir -p "$WORK/pgdata" "$WORK/sock" "$WORK/pglog"
echo "$PGPASS" > "$WORK/pwfile"
[ "$(id -u)" = 0 ] && chown -R postgres: "$WORK/pgdata" "$WORK/sock" "$WORK/pglog" "$WORK/pwfile"
as_pg "$PGBIN/initdb" -D "$WORK/pgdata" -U postgres --pwfile="$WORK/pwfile" --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 > "$WORK/initdb.log" 2>&1 || die "initdb failed (see $WORK/initdb.log)"
rm -f "$WORK/pwfile"
as_pg "$PGBIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/pglog/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $WORK/sock" start > /dev/null
export PGPASSWORD=$PGPASS
psql_pg() { psql -h 127.0.0.1 -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
psql_pg -d postgres -c "CREATE ROLE prefect LOGIN PASSWORD '$PGPASS'" -c "CREATE DATABASE prefect OWNER prefect"
psql_pg -d prefect -c "CREATE EXTENSION IF NOT EXISTS pg_trgm"  # Prefect's migrations use trigram indexes.
psql_pg -d postgres -c "CREATE DATABASE ledger OWNER prefect"
export TOOLCHAIN_LEDGER_URL="postgresql://prefect:$PGPASS@127.0.0.1:$PGPORT/ledger"
log "PostgreSQL listening on 127.0.0.1:$PGPORT (database prefect with pg_trgm; database ledger)"

# --- 3. Prefect server on PostgreSQL --------------------------------------------------------------------------
API_PORT=$(free_port)
for name in $(env | grep -o '^PREFECT_[A-Z_]*' || true); do unset "$name"; done
export PREFECT_HOME="$WORK/prefect-home"
export PREFECT_API_URL="http://127.0.0.1:$API_PORT/api"
export PREFECT_SERVER_API_HOST=127.0.0.1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_RUNNER_POLL_FREQUENCY=1
export PREFECT_SERVER_DATABASE_CONNECTION_URL="postgresql+asyncpg://prefect:$PGPASS@127.0.0.1:$PGPORT/prefect"
setsid "$BIN/prefect" server start --host 127.0.0.1 --port "$API_PORT" > "$WORK/server.log" 2>&1 &
PIDS+=($!)
log "prefect server starting on $PREFECT_API_URL"
wait_for "prefect server" "$STARTUP_TIMEOUT_S" curl -fsS "$PREFECT_API_URL/health"

# --- 4. model, folder, serve, deployment run ------------------------------------------------------------------
if [ -n "${MODEL:-}" ]; then
    [ -f "$MODEL" ] || die "MODEL=$MODEL does not exist: pass an .onnx written by toolchain export-onnx"
    MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
else
    log "exporting a tiny untrained resnet18 (set MODEL=path.onnx to use yours)"
    MODEL="$WORK/model/model.onnx"
    FSDD="$FSDD" OUT="$MODEL" "$BIN/python" - > "$WORK/export.log" 2>&1 <<'PY' || die "model export failed"
import csv, os
from pathlib import Path
import torch
from toolchain.audio.config import FeatureConfig
from toolchain.export.certify import ExportOptions, export_and_certify
from toolchain.training.checkpoint import make_payload, save_checkpoint
from toolchain.training.config import best_checkpoint_name
from toolchain.training.model import build_model

torch.manual_seed(0)
fsdd, out = Path(os.environ["FSDD"]), Path(os.environ["OUT"])
rows = list(csv.DictReader((fsdd / "labels.csv").open()))
classes = sorted({r["label"] for r in rows})
val = [str(fsdd / r["filename"]) for r in rows if r["speaker"] == "jackson" and int(r["take"]) < 1]
payload = make_payload(build_model("resnet18", len(classes), weights="none"), "resnet18", classes,
                       FeatureConfig(clip_seconds=1.0), epoch=1, metrics={"val_acc": 0.1},
                       train_args={"arch": "resnet18"}, val_files=val)
out.parent.mkdir(parents=True)
checkpoint = save_checkpoint(payload, out.parent / best_checkpoint_name("resnet18"))
export_and_certify(checkpoint, ExportOptions(out=out, parity_samples=4))
PY
fi
FOLDER="$WORK/requests/pg-day"
mkdir -p "$FOLDER"
CLIPS=("$FSDD"/recordings/*.wav)  # Glob order is sorted; no `ls | head` (SIGPIPE under pipefail).
[ -f "${CLIPS[0]}" ] || die "no FSDD recordings under $FSDD/recordings: set TOOLCHAIN_FSDD"
cp "${CLIPS[@]:0:5}" "$FOLDER/"
OUT="$WORK/out"
setsid "$BIN/toolchain" serve --model "$MODEL" --output-dir "$OUT" --allow-root "$WORK/requests" --workers 1 \
    --threads 1 > "$WORK/serve.log" 2>&1 &
PIDS+=($!)
wait_for "the served deployment" "$STARTUP_TIMEOUT_S" "$BIN/prefect" deployment inspect score-folder/on-demand
log "running score-folder/on-demand on $FOLDER"
"$BIN/prefect" deployment run score-folder/on-demand --param "folder=\"$FOLDER\"" --watch --watch-timeout 600 \
    > "$WORK/run.log" 2>&1 || die "prefect deployment run failed: $(tail -5 "$WORK/run.log")"
grep -q Completed "$WORK/run.log" || die "the flow run did not end Completed: $(tail -5 "$WORK/run.log")"

# --- 5. checks ------------------------------------------------------------------------------------------------
CSV=$(ls "$OUT"/pg-day/predictions_*.csv 2>/dev/null | head -1)
[ -n "$CSV" ] || die "no predictions CSV under $OUT/pg-day"
ROWS=$("$BIN/python" -c 'import csv,sys; r=list(csv.DictReader(open(sys.argv[1]))); print(sum(x["status"]=="ok" for x in r), len(r))' "$CSV")
[ "$ROWS" = "5 5" ] || die "$CSV: expected 5 ok rows of 5, got (ok, total) = $ROWS"
RUNS=$(psql_pg -d prefect -c "SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'")
[ "$RUNS" -ge 1 ] || die "no COMPLETED flow_run row in PostgreSQL"
log "CSV $CSV has 5 ok rows; PostgreSQL holds $RUNS completed flow run(s)"
LEDGER_ROWS=$(psql_pg -d ledger -c "SELECT count(*) FROM folder_runs WHERE state = 'completed' AND csv_path = '$CSV'")
[ "$LEDGER_ROWS" = 1 ] || die "the ledger database has no completed folder run for $CSV"
[ ! -e "$OUT/ledger.sqlite" ] || die "$OUT/ledger.sqlite exists: the run recorded beside the outputs, not in PostgreSQL"
log "the folder run is recorded in the PostgreSQL ledger"

# --- 6. two backfills at once on the PostgreSQL ledger -------------------------------------------------------
INBOX="$WORK/inbox"
for i in 0 1 2 3; do
    mkdir -p "$INBOX/day$i"
    cp "${CLIPS[@]:$((5 + 3 * i)):3}" "$INBOX/day$i/"
    "$BIN/toolchain" score --model "$MODEL" --input "$INBOX/day$i" --out "$OUT" --workers 0 --threads 1 \
        > "$WORK/history.log" 2>&1 || die "scoring the history failed: $(tail -3 "$WORK/history.log")"
done
RETRAINED="$WORK/retrained/model.onnx"  # The same graph in another file: another model to the ledger.
mkdir -p "$(dirname "$RETRAINED")"
"$BIN/python" -c 'import onnx, sys; m = onnx.load(sys.argv[1]); m.doc_string += " retrained"; onnx.save(m, sys.argv[2])' \
    "$MODEL" "$RETRAINED"
BACKFILL=("$BIN/toolchain" backfill --model "$RETRAINED" --inbox "$INBOX" --output-dir "$OUT" --settle-seconds 0
          --workers 0 --threads 1)  # The ledger URL comes from TOOLCHAIN_LEDGER_URL (no password in `ps`).
"${BACKFILL[@]}" > "$WORK/backfill-1.log" 2>&1 & B1=$!
"${BACKFILL[@]}" > "$WORK/backfill-2.log" 2>&1 & B2=$!
for pid in $B1 $B2; do  # Exit 1: it left a folder the other one was scoring; run again, as its message says.
    wait $pid || [ $? = 1 ] || die "a backfill failed: $(tail -3 "$WORK"/backfill-*.log)"
done
"${BACKFILL[@]}" > "$WORK/backfill-3.log" 2>&1 || die "the backfill rerun failed: $(tail -3 "$WORK/backfill-3.log")"
COUNTS=$("$BIN/python" - "$OUT" "$RETRAINED" <<'PY'
import collections, csv, hashlib, pathlib, sys
sha = hashlib.sha256(pathlib.Path(sys.argv[2]).read_bytes()).hexdigest()
rows = collections.Counter()
for path in pathlib.Path(sys.argv[1]).glob("day*/predictions_*.csv"):
    rows.update((path.parent.name, r["file"]) for r in csv.DictReader(path.open()) if r["model_sha256"] == sha)
print(len(rows), sorted(set(rows.values())))
PY
)
[ "$COUNTS" = "12 [1]" ] || die "backfills at once: expected 12 files with one row each from the retrained model, got (files, rows each) = $COUNTS"
BACKFILLS=$(psql_pg -d ledger -c "SELECT count(*) FROM runs WHERE mode = 'backfill' AND state = 'completed'")
[ "$BACKFILLS" = 3 ] || die "expected 3 completed backfill runs in the ledger, got $BACKFILLS"
log "backfills at once: 12 files, one row each from the retrained model; every run completed in the PostgreSQL ledger"
log "postgres check: PASSED"
