"""Stored results (History): one file per result under ``$LAYERSCOPE_HOME/results/``, found through an SQLite index.

Layout::

    results/index.sqlite        one row per result (WAL: readers never wait for a writer)
    results/files/<id>.lsr      the result (``core.results.codec``: a zip of JSON, .npy and Parquet)
    results/files/.tmp-<pid>-<id>   a file being written

A result is written to a temporary file, then renamed into place and its row inserted in one transaction,
so a crash leaves at worst a file without a row (an orphan) or a temporary file of a dead process: both are
removed the next time a store is opened in a process. A row never points at a missing file. The store is
bounded (``LAYERSCOPE_RESULTS_MB``, default 2048): after each ``put`` the least recently opened unpinned
results go until it fits. ``LAYERSCOPE_HISTORY=off`` stores nothing and finds nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from core.errors import UserError
from core.results import codec
from core.results.codec import VERSION as FORMAT  # of the files this version writes; rows of others are ignored
from core.results.keys import analysis_version, page_of, settings_json, settings_key

SUFFIX = ".lsr"
SCHEMA_VERSION = 1
_TEMP_MAX_AGE_S = 6 * 3600  # a temporary file this old is abandoned whatever its process
# Columns of the index, with their SQL type and the default an older index gets when the column is added.
COLUMNS = {
    "id": "TEXT PRIMARY KEY", "format": "INTEGER DEFAULT 0", "analysis": "TEXT DEFAULT ''", "page": "TEXT DEFAULT ''",
    "model": "TEXT DEFAULT ''", "fingerprint": "TEXT DEFAULT ''", "settings": "TEXT DEFAULT '{}'",
    "settings_key": "TEXT DEFAULT ''", "version": "TEXT DEFAULT ''", "created": "REAL DEFAULT 0",
    "last_opened": "REAL DEFAULT 0", "seconds": "REAL DEFAULT 0", "size_bytes": "INTEGER DEFAULT 0",
    "pinned": "INTEGER DEFAULT 0", "title": "TEXT DEFAULT ''", "note": "TEXT DEFAULT ''", "link": "TEXT DEFAULT ''",
    "cli": "TEXT DEFAULT ''", "file": "TEXT DEFAULT ''",
}
_cleaned: set[str] = set()  # stores already cleaned up by this process
_cleaned_lock = threading.Lock()


class CorruptResult(UserError):
    """A stored result that cannot be read (truncated, damaged, or written by an older version): compute it
    again. ``removed`` says whether its entry was dropped (a damaged file is; an older format is left alone)."""

    def __init__(self, id: str, reason: str, removed: bool):
        super().__init__(f"the stored result {id} cannot be read ({reason}): run the analysis again")
        self.id, self.reason, self.removed = id, reason, removed


class UnknownResult(UserError):
    def __init__(self, id: str):
        super().__init__(f"no stored result '{id}': see `python -m core results list`")
        self.id = id


@dataclasses.dataclass(frozen=True)
class Entry:
    """One stored result as the index describes it (times in seconds since the epoch)."""

    id: str
    analysis: str
    page: str
    model: str
    fingerprint: str
    settings: dict
    settings_key: str
    version: str
    created: float
    last_opened: float
    seconds: float
    size_bytes: int
    pinned: bool
    title: str
    note: str
    link: str
    cli: str
    format: int

    def to_json(self) -> dict:
        """What ``python -m core results list --json`` prints per result."""
        created = datetime.datetime.fromtimestamp(self.created, datetime.timezone.utc)
        return {"id": self.id, "analysis": self.analysis, "model": self.model, "settings": self.settings,
                "created": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "seconds": round(self.seconds, 3), "pinned": self.pinned, "title": self.title, "link": self.link}


def history_on() -> bool:
    return os.environ.get("LAYERSCOPE_HISTORY", "on").strip().lower() not in ("off", "0", "false", "no")


def max_bytes() -> int:
    """The store's bound: ``LAYERSCOPE_RESULTS_MB`` (default 2048) megabytes."""
    try:
        return int(float(os.environ.get("LAYERSCOPE_RESULTS_MB", "2048")) * 2**20)
    except ValueError:
        raise UserError(f"LAYERSCOPE_RESULTS_MB must be a number of megabytes, got "
                        f"{os.environ['LAYERSCOPE_RESULTS_MB']!r}") from None


class ResultStore:
    """The results of one ``$LAYERSCOPE_HOME`` (or ``home``); safe to use from many threads and processes."""

    def __init__(self, home: str | Path | None = None):
        from core.models.gguf_cache import cache_home

        self.root = Path(home) if home is not None else cache_home()
        self.root = self.root / "results"
        self.files = self.root / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self.index = self.root / "index.sqlite"
        self._local = threading.local()
        self._open_index()
        with _cleaned_lock:
            first = str(self.root.resolve()) not in _cleaned
            _cleaned.add(str(self.root.resolve()))
        if first:
            self.cleanup()

    # -- the index ---------------------------------------------------------------------------------------

    def _open_index(self) -> None:
        """Create or upgrade the index (missing columns added with their defaults); an index that is not an
        SQLite database is moved aside and a new one started (its files then go as orphans)."""
        for attempt in range(2):
            try:
                db = self._db()
                db.execute("PRAGMA journal_mode=WAL")
                with self._write() as db:
                    db.execute(f"CREATE TABLE IF NOT EXISTS results (id {COLUMNS['id']})")
                    have = {row[1] for row in db.execute("PRAGMA table_info(results)")}
                    for name, kind in COLUMNS.items():
                        if name not in have:
                            db.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
                    db.execute("CREATE INDEX IF NOT EXISTS by_key ON results (settings_key, fingerprint)")
                    if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                return
            except sqlite3.DatabaseError:
                if attempt:
                    raise
                self._close()
                aside = self.index.with_name(f"index.sqlite.unreadable-{int(time.time())}")
                os.replace(self.index, aside)
                for extra in ("-wal", "-shm"):
                    Path(f"{self.index}{extra}").unlink(missing_ok=True)

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (one per thread and process: sqlite3 connections are not shared)."""
        db = getattr(self._local, "db", None)
        if db is None or self._local.pid != os.getpid():
            db = sqlite3.connect(self.index, timeout=60, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def _close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from its start."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _entries(self, where: str = "1", args: tuple = (), tail: str = "") -> list[Entry]:
        db = self._db()
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute(f"SELECT * FROM results WHERE {where} {tail}", args).fetchall()
        finally:
            db.row_factory = None
        return [_entry(row) for row in rows]

    def entry(self, id: str) -> Entry:
        found = self._entries("id = ?", (id,))
        if not found:
            raise UnknownResult(id)
        return found[0]

    # -- results -----------------------------------------------------------------------------------------

    def put(self, analysis: str, settings: Any, model_fingerprint: str, result: Any, seconds: float, *,
            model: str | None = None, page: str | None = None, link: str = "", cli: str | None = None,
            version: str | None = None, title: str = "", note: str = "") -> str | None:
        """Store ``result`` (any value ``core.results.codec`` writes); its id, or None with history off.
        ``model`` defaults to ``result.model``; ``page`` to the analysis's page; ``cli`` to the equivalent command
        line; ``version`` to the analysis's ``VERSION``. A value the codec cannot write raises ``CodecError`` naming it."""
        if not history_on():
            return None
        version = str(version) if version is not None else analysis_version(analysis)
        model = model if model is not None else str(getattr(result, "model", "") or "")
        page = page if page is not None else page_of(analysis)
        if cli is None:
            cli = _command_line(analysis, settings, model)
        id, now = secrets.token_hex(6), time.time()
        temp, final = self.files / f".tmp-{os.getpid()}-{id}", self.files / f"{id}{SUFFIX}"
        meta = {"id": id, "analysis": analysis, "model": model, "version": version, "created": now}
        try:
            with open(temp, "wb") as f:
                codec.dump(result, f, meta)
                f.flush()
                os.fsync(f.fileno())
            size = temp.stat().st_size
            row = {"id": id, "format": FORMAT, "analysis": analysis, "page": page, "model": model,
                   "fingerprint": str(model_fingerprint), "settings": json.dumps(settings_json(settings), ensure_ascii=False),
                   "settings_key": settings_key(analysis, settings, version), "version": version, "created": now,
                   "last_opened": now, "seconds": float(seconds), "size_bytes": size, "pinned": 0, "title": title,
                   "note": note, "link": link, "cli": cli, "file": final.name}
            with self._write() as db:  # the file is in place before its row, in the transaction that adds the row
                os.replace(temp, final)
                db.execute(f"INSERT INTO results ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                           tuple(row.values()))
        except BaseException:
            temp.unlink(missing_ok=True)
            if not self._entries("id = ?", (id,)):
                final.unlink(missing_ok=True)
            raise
        self._evict(keep=id)
        return id

    def find(self, analysis: str, settings_key: str, model_fingerprint: str, version: str) -> str | None:
        """The newest readable result of these settings on this model and analysis version (None with history off)."""
        if not history_on():
            return None
        for entry in self._entries("analysis = ? AND settings_key = ? AND fingerprint = ? AND version = ? AND format = ?",
                                   (analysis, settings_key, str(model_fingerprint), str(version), FORMAT),
                                   "ORDER BY created DESC"):
            if (self.files / f"{entry.id}{SUFFIX}").is_file():
                return entry.id
            self.delete(entry.id)  # its file went (by hand): the row goes too
        return None

    def get(self, id: str, touch: bool = True) -> Any:
        """The stored result. ``CorruptResult`` when it cannot be read (a damaged file's entry is removed),
        ``UnknownResult`` for an id the store does not hold."""
        entry = self.entry(id)
        if entry.format != FORMAT:
            raise CorruptResult(id, f"written by another version of layerscope, format {entry.format}", removed=False)
        try:
            result = codec.load(self.files / f"{id}{SUFFIX}")
        except codec.UnsupportedVersion as err:  # another version's file: left for it
            raise CorruptResult(id, str(err), removed=False) from err
        except Exception as err:  # noqa: BLE001 - missing, truncated, damaged or tampered: all the same to callers
            self.delete(id)
            raise CorruptResult(id, f"{type(err).__name__}: {err}", removed=True) from err
        if touch:
            self.touch(id)
        return result

    def list(self, page: str | None = None, model: str | None = None, analysis: str | None = None,
             pinned: bool | None = None, limit: int | None = None) -> list[Entry]:
        """Readable results, newest first, of one page / model / analysis when given."""
        where, args = ["format = ?"], [FORMAT]
        for column, value in (("page", page), ("model", model), ("analysis", analysis)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if pinned is not None:
            where.append(f"pinned = {int(bool(pinned))}")
        tail = "ORDER BY created DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
        return self._entries(" AND ".join(where), tuple(args), tail)

    def pin(self, id: str, title: str | None = None, note: str | None = None) -> None:
        """Keep a result whatever the bound, with a title and a note for the team."""
        self._update(id, "pinned = 1, title = COALESCE(?, title), note = COALESCE(?, note)", (title, note))

    def unpin(self, id: str) -> None:
        self._update(id, "pinned = 0", ())

    def touch(self, id: str) -> None:
        """Mark a result as just opened (the bound drops the least recently opened first)."""
        self._update(id, "last_opened = ?", (time.time(),))

    def _update(self, id: str, assignments: str, args: tuple) -> None:
        with self._write() as db:
            changed = db.execute(f"UPDATE results SET {assignments} WHERE id = ?", (*args, id)).rowcount
        if not changed:
            raise UnknownResult(id)

    def delete(self, id: str) -> bool:
        """Remove a result (row first, then file: a crash between leaves an orphan file); False if none."""
        with self._write() as db:
            row = db.execute("SELECT file FROM results WHERE id = ?", (id,)).fetchone()
            db.execute("DELETE FROM results WHERE id = ?", (id,))
        if row is None:
            return False
        if row[0]:
            (self.files / row[0]).unlink(missing_ok=True)
        return True

    def size_bytes(self) -> int:
        return int(self._db().execute("SELECT COALESCE(SUM(size_bytes), 0) FROM results").fetchone()[0])

    def _evict(self, keep: str) -> list[str]:
        """Drop the least recently opened unpinned results (never ``keep``) until the store fits its bound."""
        bound, gone = max_bytes(), []
        with self._write() as db:
            total = int(db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM results").fetchone()[0])
            if total > bound:
                for id, file, size in db.execute("SELECT id, file, size_bytes FROM results WHERE pinned = 0 AND id != ? "
                                                 "ORDER BY last_opened ASC", (keep,)).fetchall():
                    if total <= bound:
                        break
                    db.execute("DELETE FROM results WHERE id = ?", (id,))
                    total -= size
                    gone.append(file)
        for file in gone:
            if file:
                (self.files / file).unlink(missing_ok=True)
        return gone

    def cleanup(self) -> dict:
        """Remove what a crash can leave: files without a row, temporary files of dead processes, rows of this
        format whose file is missing. Runs when a process first opens the store; returns what it removed."""
        removed = {"orphans": 0, "temporary": 0, "rows": 0}
        now = time.time()
        with self._write() as db:  # holding the write lock: no put can be between its rename and its row
            rows = db.execute("SELECT id, file, format FROM results").fetchall()
            known = {file for _, file, _ in rows if file}
            for path in self.files.iterdir():
                name = path.name
                if name.startswith(".tmp-"):
                    if _abandoned(name, path, now):
                        path.unlink(missing_ok=True)
                        removed["temporary"] += 1
                elif name not in known:
                    path.unlink(missing_ok=True)
                    removed["orphans"] += 1
            for id, file, format in rows:
                if format == FORMAT and not (self.files / (file or f"{id}{SUFFIX}")).is_file():
                    db.execute("DELETE FROM results WHERE id = ?", (id,))
                    removed["rows"] += 1
        return removed


def _entry(row: sqlite3.Row) -> Entry:
    """An index row as an Entry; a row of an older index may lack values (they take their defaults)."""
    values = dict(row)
    try:
        settings = json.loads(values.get("settings") or "{}")
    except ValueError:
        settings = {}
    text = {name: str(values.get(name) or "") for name in
            ("id", "analysis", "page", "model", "fingerprint", "settings_key", "version", "title", "note", "link", "cli")}
    return Entry(**text, settings=settings if isinstance(settings, dict) else {"value": settings},
                 created=float(values.get("created") or 0), last_opened=float(values.get("last_opened") or 0),
                 seconds=float(values.get("seconds") or 0), size_bytes=int(values.get("size_bytes") or 0),
                 pinned=bool(values.get("pinned")), format=int(values.get("format") or 0))


def _abandoned(name: str, path: Path, now: float) -> bool:
    """Whether a temporary file's writer is gone: its process has ended, or it is older than any write takes."""
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > _TEMP_MAX_AGE_S:
        return True
    try:
        pid = int(name.split("-")[1])
    except (IndexError, ValueError):
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _command_line(analysis: str, settings: Any, model: str) -> str:
    """The equivalent ``python -m core`` line, or "" where the command cannot say these settings."""
    try:
        from core.results.commandline import cli_command

        return cli_command(analysis, settings, model)
    except Exception:  # noqa: BLE001 - a missing command line is no reason to lose a result
        return ""
