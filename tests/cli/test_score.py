"""`toolchain score` / `toolchain serve` through the CLI, and crash safety with a real SIGKILLed process.

FSDD: Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import (
    assert_user_error,
    copy_clips,
    held_env,
    kill_group,
    published_csvs,
    read_rows,
    wait_until,
)
from typer.testing import CliRunner

from toolchain.cli import app
from toolchain.scoring.ledger import Ledger

runner = CliRunner()
TOOLCHAIN = [str(Path(sys.executable).with_name("toolchain"))]  # The console script of this venv.


def test_score_prints_the_csv_and_a_summary(onnx_model, fsdd_dir, tmp_path):
    names = copy_clips(fsdd_dir, tmp_path / "in" / "day1", 0, 6)
    result = runner.invoke(app, ["score", "--model", str(onnx_model), "--input", str(tmp_path / "in" / "day1"),
                                 "--out", str(tmp_path / "out"), "--workers", "0", "--threads", "1"])
    assert result.exit_code == 0, result.output
    csv_path = Path(result.stdout.strip().splitlines()[-1])
    assert csv_path.parent == tmp_path / "out" / "day1" and csv_path.is_file()
    assert [r["file"] for r in read_rows(csv_path)] == names
    assert "6 files (6 ok, 0 error)" in result.stderr and "CPUExecutionProvider" in result.stderr
    assert "6 windows" in result.stderr and f"detections: {csv_path.parent}/detections_" in result.stderr
    assert "warning:" not in result.stderr
    chance = runner.invoke(app, ["score", "--model", str(onnx_model), "--input", str(tmp_path / "in" / "day1"),
                                 "--out", str(tmp_path / "out"), "--workers", "0", "--min-confidence", "0.1"])
    assert chance.exit_code == 0 and "warning: --min-confidence 0.1 keeps every window" in chance.stderr


def test_a_long_recording_gets_a_window_on_each_call_or_the_grid_on_request(onnx_model, fsdd_dir, tmp_path):
    """Three digits at 2, 8 and 14 s of a 20-s recording with a quiet noise floor: by default one window from each
    digit's onset, and the rule names the placement; `--placement grid` scores the whole recording."""
    import numpy as np
    import soundfile

    from toolchain.audio.config import FeatureConfig
    from toolchain.audio.decode import load_audio

    config = FeatureConfig()
    sr = config.sample_rate
    recording = np.random.default_rng(0).normal(0, 1e-3, 20 * sr).astype(np.float32)
    for offset, digit in zip((2, 8, 14), (3, 5, 7)):
        clip = load_audio(fsdd_dir / "recordings" / f"{digit}_theo_7.wav", config)
        recording[offset * sr:offset * sr + clip.size] += clip
    (tmp_path / "in" / "day1").mkdir(parents=True)
    soundfile.write(tmp_path / "in" / "day1" / "field.wav", recording, sr, subtype="PCM_16")

    def score(*extra: str) -> tuple[dict, list[dict]]:
        result = runner.invoke(app, ["score", "--model", str(onnx_model), "--input", str(tmp_path / "in" / "day1"),
                                     "--out", str(tmp_path / "out"), "--workers", "0", *extra])
        assert result.exit_code == 0, result.output
        csv_path = Path(result.stdout.strip().splitlines()[-1])
        [row] = read_rows(csv_path)
        return row, read_rows(next(csv_path.parent.glob(f"detections_{csv_path.stem.split('_', 1)[1]}.csv")))

    row, windows = score()
    assert row["window_rule"] == "windows-v2 1s/0.5s sound+6dB, mean" and row["windows"] == "3"
    assert [round(float(w["start_s"])) for w in windows] == [2, 8, 14]
    row, windows = score("--placement", "grid")
    assert row["window_rule"] == "windows-v2 1s/0.5s end-aligned, mean" and int(row["windows"]) > 20
    assert float(windows[0]["start_s"]) < 2.1 and float(windows[-1]["end_s"]) > 14.2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "{tmp}/missing"], "input folder {tmp}/missing does not exist"),
        (["--input", "{tmp}", "--model", "{tmp}/garbage.onnx"], "cannot load ONNX model"),
        (["--input", "{tmp}", "--model", "{tmp}/absent.onnx"], "absent.onnx does not exist"),
        (["--input", "{tmp}", "--hop-seconds", "2"], "hop_seconds=2 is longer than the model's 1-s window"),
        (["--input", "{tmp}", "--placement", "grid", "--sound-db", "10"], "--sound-db 10 applies to --placement sounds"),
    ],
)
def test_user_errors_are_one_line_without_traceback(onnx_model, tmp_path, args, message):
    (tmp_path / "garbage.onnx").write_bytes(b"not an onnx model")
    args = [a.format(tmp=tmp_path) for a in args]
    if "--model" not in args:
        args += ["--model", str(onnx_model)]
    result = runner.invoke(app, ["score", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert message.format(tmp=tmp_path) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_rejects_conflicting_schedules(onnx_model, tmp_path):
    result = runner.invoke(app, ["serve", "--model", str(onnx_model), "--output-dir", str(tmp_path),
                                 "--inbox", str(tmp_path), "--interval", "5", "--cron", "* * * * *"])
    assert result.exit_code == 2 and "either --interval or --cron" in result.stderr


@pytest.mark.parametrize("case, message", [
    ("output-is-a-file", "--output-dir {tmp}/a-file is a file"),
    ("hop-too-long", "hop_seconds=3 is longer than the model's 1-s window"),
    ("missing-inbox", "--inbox {tmp}/nowhere does not exist"),
    ("not-onnx", "is not a readable ONNX model"),
])
def test_serve_user_errors_are_one_line_before_serving(tiny_onnx, tmp_path, case, message):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    model = tmp_path / "junk.onnx" if case == "not-onnx" else tiny_onnx
    out = tmp_path / "a-file" if case == "output-is-a-file" else tmp_path / "out"
    inbox = tmp_path / "nowhere" if case == "missing-inbox" else tmp_path
    extra = ["--hop-seconds", "3"] if case == "hop-too-long" else []
    result = runner.invoke(app, ["serve", "--model", str(model), "--output-dir", str(out), "--inbox", str(inbox),
                                 *extra])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(result.stderr.strip().splitlines()) == 1 and message.format(tmp=tmp_path) in result.stderr


def test_help_for_every_scoring_command():
    for command in ("score", "serve", "watch", "flow", "backfill"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "--model" in result.stdout and "--ledger-url" in result.stdout
    for command in ("score", "serve", "flow", "backfill"):  # The scoring options, declared once, reach each one.
        result = runner.invoke(app, [command, "--help"], terminal_width=200)
        for option in ("--batch-size", "--precision", "--hop-seconds", "--placement", "--sound-db", "--health-thresholds",
                       "--fail-on-drift"):
            assert option in result.stdout, (command, option)


def _held_score(command: list[str], hold: Path, rows: int, log: Path) -> subprocess.Popen:
    """`toolchain score` started in its own session, parked (by the tests' own hook) once `rows` rows of its
    first part file are on disk."""
    with log.open("w") as sink:
        proc = subprocess.Popen(command, env=held_env(rows, hold), stdout=subprocess.PIPE, stderr=sink, text=True,
                                start_new_session=True)
    wait_until(hold.exists, 240, f"the run to hold after {rows} rows", proc, log)
    return proc


def test_killed_mid_folder_then_rerun_leaves_one_complete_csv(onnx_model, fsdd_dir, tmp_path):
    folder, out = tmp_path / "in" / "day1", tmp_path / "out"
    names = copy_clips(fsdd_dir, folder, 0, 40)
    command = [*TOOLCHAIN, "score", "--model", str(onnx_model), "--input", str(folder), "--out", str(out),
               "--batch-size", "4", "--workers", "1", "--threads", "1"]
    proc = _held_score(command, tmp_path / "held", 10, tmp_path / "score.log")
    try:
        # Mid-folder: 10 scored rows are in the part file on disk (after its header line), no CSV yet.
        parts = list((out / "day1").glob(".parts_*/.part_?????.csv.*.tmp"))  # The predictions part being written.
        rows_on_disk = len(parts[0].read_text().splitlines()) - 1 if parts else 0
    finally:
        kill_group(proc)
    assert rows_on_disk == 10
    assert published_csvs(out / "day1") == []  # Killed: no predictions_*.csv, partial or otherwise.
    assert list((out / "day1").glob(".parts_*"))  # ...only dot-file leftovers.

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    csvs = published_csvs(out / "day1")
    assert len(csvs) == 1 and str(csvs[0]) == rerun.stdout.strip().splitlines()[-1]
    files = [r["file"] for r in read_rows(csvs[0])]
    assert files == names  # Every file exactly once, sorted.
    detections = csvs[0].with_name(csvs[0].name.replace("predictions_", "detections_"))
    events = csvs[0].with_name(csvs[0].name.replace("predictions_", "events_"))
    health = csvs[0].with_name(csvs[0].name.replace("predictions_", "health_").replace(".csv", ".json"))
    assert sorted(p.name for p in (out / "day1").iterdir()) == sorted(
        [".lock", csvs[0].name, detections.name, events.name, health.name])  # Leftovers cleaned.
    # The rerun's content is what an uninterrupted run writes (run ids aside).
    clean = subprocess.run([*command[:-8], "--out", str(tmp_path / "clean"), *command[-6:]], capture_output=True,
                           text=True, timeout=400)
    assert clean.returncode == 0, clean.stderr[-2000:]
    clean_csv = Path(clean.stdout.strip().splitlines()[-1])

    def content(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "run_id"} for r in read_rows(path)]

    assert content(csvs[0]) == content(clean_csv)
    assert content(detections) == content(clean_csv.with_name(clean_csv.name.replace("predictions_", "detections_")))
    assert content(events) == content(clean_csv.with_name(clean_csv.name.replace("predictions_", "events_")))

    ledger = Ledger.in_dir(out)
    states = sorted(r.state for r in ledger.folder_runs())
    assert states == ["completed", "crashed"]
    assert sorted(r.state for r in ledger.runs()) == ["completed", "crashed"]
    assert ledger.scored_csv(str(folder.resolve()), read_rows(csvs[0])[0]["model_sha256"]) == str(csvs[0])


def test_score_help_offers_the_gpu_settings_a_user_changes():
    result = CliRunner().invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--precision", "--device-id", "--provider", "--batch-size"):
        assert option in result.output
    assert "--io-binding" not in result.output and "--conv-algo-search" not in result.output


def test_a_folder_without_audio_is_a_warning_and_a_recorded_run(tiny_onnx, tmp_path):
    folder = tmp_path / "quiet-day"
    folder.mkdir()
    (folder / "notes.txt").write_text("no audio here")
    result = runner.invoke(app, ["score", "--model", str(tiny_onnx), "--input", str(folder), "--out",
                                 str(tmp_path / "out"), "--workers", "0", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "holds no audio files" in result.stderr
    [run] = Ledger.in_dir(tmp_path / "out").folder_runs()
    assert (run.state, run.files_ok, run.files_error) == ("completed", 0, 0)


def test_ctrl_c_mid_folder_says_so_in_one_line_and_the_ledger_says_interrupted(onnx_model, fsdd_dir, tmp_path):
    folder, out = tmp_path / "in" / "day1", tmp_path / "out"
    copy_clips(fsdd_dir, folder, 0, 12)
    command = [*TOOLCHAIN, "score", "--model", str(onnx_model), "--input", str(folder), "--out", str(out),
               "--batch-size", "4", "--workers", "1", "--threads", "1"]
    proc = _held_score(command, tmp_path / "held", 3, tmp_path / "score.log")
    os.killpg(proc.pid, signal.SIGINT)  # What Ctrl-C sends: the whole foreground group, decode workers included.
    proc.wait(60)
    stderr = (tmp_path / "score.log").read_text()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    said = [line for line in stderr.splitlines() if line.startswith("interrupted: ")]
    assert len(said) == 1 and said[0].startswith(f"interrupted: no CSV was published for {folder}"), stderr
    [run] = Ledger.in_dir(out).runs()
    [folder_run] = Ledger.in_dir(out).folder_runs()
    assert (run.state, run.error) == ("failed", "interrupted (Ctrl-C or SIGINT)")
    assert (folder_run.state, folder_run.error) == ("failed", "interrupted (Ctrl-C or SIGINT)")
    assert sorted(p.name for p in (out / "day1").iterdir()) == [".lock"]  # The run's own files are removed.


def test_a_read_only_ledger_is_one_line_naming_it(tiny_onnx, fsdd_dir, tmp_path, unwritable):
    folder, out = tmp_path / "day1", tmp_path / "out"
    copy_clips(fsdd_dir, folder, 0, 2)
    args = ["score", "--model", str(tiny_onnx), "--input", str(folder), "--out", str(out), "--workers", "0"]
    assert runner.invoke(app, args).exit_code == 0
    for path in out.glob("ledger.sqlite*"):
        unwritable(path)
    assert_user_error(runner.invoke(app, args), f"ledger {out / 'ledger.sqlite'}", "writable")


def test_an_output_folder_that_cannot_take_its_lock_is_one_line(tiny_onnx, fsdd_dir, tmp_path, unwritable):
    folder, out = tmp_path / "day1", tmp_path / "out"
    copy_clips(fsdd_dir, folder, 0, 2)
    (out / "day1").mkdir(parents=True)
    unwritable(out / "day1")
    result = runner.invoke(app, ["score", "--model", str(tiny_onnx), "--input", str(folder), "--out", str(out)])
    assert_user_error(result, f"cannot create the lock file {out / 'day1' / '.lock'}", "writable")
    [run] = Ledger.in_dir(out).runs()
    assert run.state == "failed" and "lock file" in run.error
