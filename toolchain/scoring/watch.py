"""Arrival-driven scoring: notice when an inbox subfolder is ready to score, and say so once per change.

`InboxWatcher` reports a subfolder (through `on_ready`) when it holds audio files the model has not scored as they
are now that are done being written (`ready_files`: older than a `_READY` marker, or quiet for `settle_seconds`). It hears
about changes from filesystem events (watchdog), and it does not trust them: every subfolder is swept at start
(files that were there before the watcher started) and again every `reconcile_seconds` (an event the OS dropped
costs latency, never a file). A sweep looks into a subfolder only when its listing changed since all its files
were decided (`toolchain.scoring.listings`); an event drops the subfolder's recorded listing, so a file rewritten
in place is looked at by the next inbox scan too. A folder is reported again only when its unscored files change, or after
`resend_seconds` when they have not been scored meanwhile (a lost or failed run). Reporting more than needed is
harmless: a run with `skip_scored` scores only files the model has not scored, under the folder's lock.

Prefect-free: `flows/watch.py` turns each report into a Prefect event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.audio.decode import is_hidden
from toolchain.errors import ToolchainError
from toolchain.registry.refs import is_registry_ref
from toolchain.scoring.files import DEFAULT_SETTLE_SECONDS, check_folder, look_into, ready_files
from toolchain.scoring.ledger import FileStamp, Ledger, Listing
from toolchain.scoring.listings import listing_unchanged, take_listing
from toolchain.scoring.models import describe_model, resolve_model

RECONCILE_SECONDS = 60.0  # A full sweep this often, whatever the filesystem events said.
RESEND_SECONDS = 30.0  # Report a folder again when its files are still unscored this long after a report.
TICK_SECONDS = 0.5
READ_ONLY_EVENTS = frozenset({"opened", "closed_no_write"})  # watchdog reports reads too (inotify).


@dataclass
class InboxWatcher:
    """Watches `inbox` for subfolders ready to score by the model at `model_path` (ledger in `out_dir`); a
    registered model (models:/NAME@ALIAS) is resolved again at every sweep, so a promotion is followed."""

    inbox: Path
    out_dir: Path
    model_path: Path | str
    on_ready: Callable[[Path], None]
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    reconcile_seconds: float = RECONCILE_SECONDS
    resend_seconds: float = RESEND_SECONDS
    log: Callable[[str], None] = lambda message: None
    _dirty: set[Path] = field(default_factory=set, init=False)  # Looked into at the next check.
    _touched: set[Path] = field(default_factory=set, init=False)  # Events: listing dropped, then looked into.
    _swept: set[Path] = field(default_factory=set, init=False)  # Looked into when their listing changed.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _reported: dict[Path, tuple[tuple[FileStamp, ...], float]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.inbox = check_folder(self.inbox)
        self._sha = describe_model(resolve_model(self.model_path, say=self.log)).sha256
        self._ledger = Ledger.in_dir(self.out_dir)

    def touched(self, path: str | Path) -> None:
        """A filesystem event under the inbox: its top-level subfolder needs a look."""
        try:
            relative = Path(path).absolute().relative_to(self.inbox)
        except ValueError:
            return
        if relative.parts and not is_hidden(relative.parts[0]):
            with self._lock:
                self._touched.add(self.inbox / relative.parts[0])

    def sweep(self) -> None:
        """Mark every subfolder for a look (at start, and every `reconcile_seconds`)."""
        if is_registry_ref(self.model_path):
            try:
                self._sha = describe_model(resolve_model(self.model_path)).sha256
            except ToolchainError as exc:
                self.log(f"{self.model_path}: {exc}; still watching for {self._sha[:12]}")
        with self._lock:
            self._swept.update(p for p in self.inbox.iterdir() if p.is_dir() and not is_hidden(p.name))

    def check(self, now: float | None = None) -> list[Path]:
        """Look at the marked subfolders once; report (and return) the ready ones. Not ready: looked at again."""
        now = time.time() if now is None else now
        with self._lock:
            touched, dirty, swept = self._touched, self._dirty, self._swept
            self._touched, self._dirty, self._swept = set(), set(), set()
        if touched:
            self._ledger.forget_listings(str(f.resolve()) for f in touched)
        known = self._ledger.listings(str(f.resolve()) for f in swept - touched - dirty)
        unchanged = {f for f in swept if str(f.resolve()) in known
                     and listing_unchanged(f.resolve(), known[str(f.resolve())].directories)}
        todo = sorted(touched | dirty | (swept - unchanged))
        reported, waiting = [], set()
        for folder in todo:
            if not folder.is_dir():
                continue
            directories = take_listing(folder.resolve())  # Before the files, as an inbox scan does.
            found, files = look_into(folder.resolve(), self._ledger, self._sha)
            pending = tuple(found)
            if not pending:
                self._reported.pop(folder, None)
                if directories is not None:
                    self._ledger.record_listing(str(folder.resolve()), Listing(directories, time.time_ns(), files))
                continue
            ready = tuple(ready_files(folder.resolve(), pending, self.settle_seconds, now))
            if len(ready) < len(pending):
                waiting.add(folder)  # Files still being written: looked at again.
            if not ready:
                continue
            last = self._reported.get(folder)
            if last is None or last[0] != ready or now - last[1] >= self.resend_seconds:
                self._reported[folder] = (ready, now)
                self.log(f"{folder} is ready: {len(ready)} file(s) to score")
                self.on_ready(folder)
                reported.append(folder)
        with self._lock:
            self._dirty |= waiting
        return reported

    def run(self, stop: threading.Event, started: threading.Event | None = None) -> None:
        """Watch until `stop` is set: filesystem events, a sweep at start and every `reconcile_seconds`.
        `started` is set once filesystem events are being delivered and the first sweep is done."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type in READ_ONLY_EVENTS:  # Scoring reads the files: no change to look for.
                    return
                watcher.touched(event.src_path)
                if getattr(event, "dest_path", ""):
                    watcher.touched(event.dest_path)

        observer = Observer()
        observer.schedule(Handler(), str(self.inbox), recursive=True)
        observer.start()
        try:
            next_sweep = 0.0
            while not stop.is_set():
                if time.monotonic() >= next_sweep:
                    self.sweep()
                    next_sweep = time.monotonic() + self.reconcile_seconds
                self.check()
                if started is not None:
                    started.set()
                stop.wait(TICK_SECONDS)
        finally:
            observer.stop()
            observer.join(10)
